"""A private PostgreSQL cluster that the CA runs for itself when no database URL is configured.

Why: ``acme-ca serve`` must work on a fresh machine with nothing set up by hand, so the CA
creates, starts and reuses its own cluster under a directory (``$ACME_CA_HOME/pg``).

Layout of ``data_root``:

- ``password``   the random superuser password (mode 0600, owned by whoever runs the CA);
- ``server.log`` the server's stdout/stderr (appended to on every start);
- ``lock``       an ``fcntl.flock`` lock that serialises initdb/start/stop across processes;
- ``cluster``    the PostgreSQL data directory (or a symlink to it, see below).

Binaries: the machine's PostgreSQL is preferred (``initdb``/``pg_ctl`` on ``PATH``, else the
newest ``/usr/lib/postgresql/*/bin``), otherwise the binaries bundled in the ``pgserver`` wheel.
An existing cluster is always served by binaries of its own major version (``PG_VERSION``),
so a cluster made with pgserver's binaries keeps working after Debian's package is installed.

The server listens on 127.0.0.1 only, on a port chosen once and kept in ``postgresql.conf``
(moved only if the port has since been taken), with no Unix socket at all, so long paths do
not matter. Authentication is scram-sha-256 for every connection.

Several processes may share one cluster: ``start()`` returns the DSN of an already running
server without taking ownership of it, and ``stop()`` stops only a server that this instance
itself started. Nothing is registered globally (no atexit, no signal handlers): the caller
decides when to stop.

Running as root: PostgreSQL refuses to run as root, so when the effective uid is 0, initdb and
pg_ctl run as an unprivileged system user: the owner of an existing cluster, else ``postgres``
if that user exists, else a system user ``acme-ca-pg`` that is created with ``useradd``. The
cluster directory is owned by that user. If the user cannot traverse to ``data_root`` (the CA
home under ``/root`` or under pytest's ``/tmp/pytest-of-root``, both mode 0700), the real
cluster lives in ``/var/lib/acme-ca/pg-<sha256(resolved data_root)[:16]>`` and
``data_root/cluster`` is a symlink to it. Server logs still reach ``data_root/server.log``
because the file is opened by the calling process and handed to pg_ctl as its output.
With pgserver's binaries the server user must also be able to reach the virtualenv; if it
cannot (a venv under /root), ``start()`` says so rather than failing obscurely.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol
from urllib.parse import quote

import structlog

__all__ = [
    "DB_NAME",
    "SUPERUSER",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PgBinaries",
    "find_postgres_binaries",
    "pgserver_bin_dir",
]

DB_NAME = "acme_ca"
SUPERUSER = "acme_ca"

SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
"""Where Debian installs each major version's binaries (``<root>/<major>/bin``)."""

SHARED_CLUSTER_ROOT = Path("/var/lib/acme-ca")
"""Home of clusters whose data_root the unprivileged user cannot reach (root only)."""

FALLBACK_SYSTEM_USER = "acme-ca-pg"
START_TIMEOUT = 60.0
"""Seconds to wait for the server to accept connections (a crash recovery can take a while)."""

_REQUIRED_EXES = ("initdb", "pg_ctl", "postgres", "pg_isready", "createdb")
_CONF_BEGIN = "# BEGIN acme_ca embedded settings (managed by acme_ca; rewritten on port change)"
_CONF_END = "# END acme_ca embedded settings"
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_LOG_TAIL_LINES = 30


class EmbeddedPostgresError(RuntimeError):
    """The private cluster could not be set up, started or stopped."""


class _Logger(Protocol):
    """The part of a structlog logger this module uses, so any bound logger fits."""

    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class PgBinaries:
    """A directory of PostgreSQL server binaries and the version they are."""

    bin_dir: Path
    source: str
    """``path``, ``system`` (``/usr/lib/postgresql``), ``pgserver`` or ``explicit``."""
    version: str
    major: int

    def exe(self, name: str) -> str:
        """Full path of one program, so no PATH lookup can pick a different version."""
        return str(self.bin_dir / name)


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged account that server commands run as when we are root."""

    name: str
    uid: int
    gid: int


def pgserver_bin_dir() -> Path | None:
    """The ``pginstall/bin`` of the pgserver wheel, found without importing it (its import is slow
    and noisy)."""
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "initdb").is_file():
            return candidate
    return None


def _major_sort_key(path: Path) -> tuple[int, ...]:
    """Sort ``/usr/lib/postgresql/<major>`` numerically, so 16 beats 9.6."""
    try:
        return tuple(int(part) for part in path.name.split("."))
    except ValueError:
        return (-1,)


def _candidate_bin_dirs(search_path: str | None, system_root: Path) -> list[tuple[str, Path]]:
    """Binary directories in order of preference, deduplicated by real path."""
    found: list[tuple[str, Path]] = []
    initdb = shutil.which("initdb", path=search_path)
    if initdb is not None:
        found.append(("path", Path(initdb).resolve().parent))
    if system_root.is_dir():
        for version_dir in sorted(system_root.iterdir(), key=_major_sort_key, reverse=True):
            if (version_dir / "bin").is_dir():
                found.append(("system", version_dir / "bin"))
    bundled = pgserver_bin_dir()
    if bundled is not None:
        found.append(("pgserver", bundled))
    unique: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for source, bin_dir in found:
        real = bin_dir.resolve()
        if real not in seen:
            seen.add(real)
            unique.append((source, real))
    return unique


def _probe(source: str, bin_dir: Path) -> PgBinaries | None:
    """Return the binaries in ``bin_dir`` if the set is complete and runs, else None."""
    if not all(os.access(bin_dir / exe, os.X_OK) for exe in _REQUIRED_EXES):
        return None
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [str(bin_dir / "pg_ctl"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env=_clean_env(),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    if match is None:
        return None
    return PgBinaries(bin_dir=bin_dir, source=source, version=out.strip(), major=int(match[1]))


def find_postgres_binaries(
    required_major: int | None = None,
    *,
    search_path: str | None = None,
    system_root: Path | None = None,
) -> PgBinaries:
    """Pick the PostgreSQL binaries to run: the machine's first, then pgserver's bundled ones.

    ``required_major`` restricts the choice to one major version, because a data directory can
    only be served by the major version that created it. ``search_path`` replaces ``$PATH`` and
    ``system_root`` replaces ``/usr/lib/postgresql`` (tests use both to hide the machine's).
    """
    root = system_root if system_root is not None else SYSTEM_PG_ROOT
    considered: list[str] = []
    for source, bin_dir in _candidate_bin_dirs(search_path, root):
        binaries = _probe(source, bin_dir)
        if binaries is None:
            considered.append(f"{bin_dir} ({source}): incomplete or not runnable")
            continue
        if required_major is not None and binaries.major != required_major:
            considered.append(f"{bin_dir} ({source}): PostgreSQL {binaries.major}")
            continue
        return binaries
    wanted = f"PostgreSQL {required_major}" if required_major is not None else "PostgreSQL"
    detail = "; ".join(considered) if considered else "none found"
    raise EmbeddedPostgresError(
        f"no usable {wanted} server binaries (considered: {detail}); install Debian's "
        "'postgresql' package or the 'pgserver' Python package"
    )


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus libpq/server variables (PGPORT, PGDATA, ...) that would
    silently redirect our commands, with C messages so failures read the same everywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("LANGUAGE", None)
    env["LC_ALL"] = "C"
    env.update(extra)
    return env


def _port_is_free(port: int) -> bool:
    """Whether PostgreSQL could bind ``port`` (it sets SO_REUSEADDR too, so we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_free_port() -> int:
    """A port the kernel says is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _tail(path: Path, lines: int = _LOG_TAIL_LINES, start: int = 0) -> str:
    """The last lines of a log, read from ``start`` on, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    text = data.decode("utf-8", errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) if text else "(empty)"


class EmbeddedPostgres:
    """One private PostgreSQL cluster under ``data_root``, started on demand and shared safely.

    ``start()`` is blocking; call it before the event loop runs or through
    ``asyncio.to_thread``.
    """

    def __init__(
        self,
        data_root: Path,
        *,
        log: _Logger | None = None,
        bin_dir: Path | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        """``bin_dir`` pins the binaries (skipping the search); the default finds them."""
        self._root = Path(data_root)
        self._log: _Logger = log if log is not None else structlog.get_logger(__name__)
        self._bin_dir = bin_dir
        self._timeout = start_timeout
        self._binaries: PgBinaries | None = None
        self._run_as: _RunAs | None = None
        self._cluster: Path | None = None
        self._port: int | None = None
        self._password: str | None = None
        self._owned = False
        self._owned_pid: int | None = None

    # -- public surface ------------------------------------------------------------------

    @property
    def data_root(self) -> Path:
        """The directory given at construction."""
        return self._root

    @property
    def dsn(self) -> str:
        """DSN of the ``acme_ca`` database; only meaningful after ``start()``."""
        return self._dsn_for(DB_NAME)

    @property
    def owns_server(self) -> bool:
        """Whether this instance started the running server (and so ``stop()`` stops it)."""
        return self._owned

    @property
    def binaries(self) -> PgBinaries | None:
        """The binaries chosen by the last ``start()``."""
        return self._binaries

    @property
    def cluster_dir(self) -> Path | None:
        """The real data directory (after symlinks), once ``start()`` has found or made it."""
        return self._cluster

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self._root / "server.log"

    def start(self) -> str:
        """Make sure the cluster exists and runs, and return the DSN of the ``acme_ca`` database.

        Returns at once if another process (or instance) already runs the server; in that case
        this instance does not own it.
        """
        self._root.mkdir(parents=True, exist_ok=True)
        self._root = self._root.resolve()
        with self._locked():
            cluster, fresh = self._prepare_cluster()
            self._cluster = cluster
            self._binaries = self._choose_binaries(cluster)
            self._password = self._read_password()

            running = self._running_postmaster(cluster)
            if running is not None:
                pid, running_port = running
                # Still ours only if it is the very postmaster we started.
                self._owned = self._owned and pid == self._owned_pid
                self._port = running_port
                self._wait_ready(running_port)
                self._log.info(
                    "embedded_postgres.reusing",
                    port=running_port,
                    cluster=str(cluster),
                    owned=self._owned,
                )
                return self.dsn

            self._start_server(cluster)
            self._ensure_database(DB_NAME, template=None, fresh=fresh)
        self._log.info("embedded_postgres.started", port=self._port, cluster=str(cluster))
        return self.dsn

    def stop(self) -> None:
        """Stop the server if, and only if, this instance started it."""
        if not self._owned:
            self._log.info("embedded_postgres.stop_skipped", reason="not started by this instance")
            return
        assert self._cluster is not None
        with self._locked():
            proc = self._run(
                [
                    self._exe("pg_ctl"),
                    "stop",
                    "-D",
                    str(self._cluster),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(self._timeout)),
                ],
                as_server_user=True,
            )
            if proc.returncode != 0:
                raise EmbeddedPostgresError(
                    f"pg_ctl stop failed (exit {proc.returncode}): {proc.stdout}{proc.stderr}\n"
                    f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}"
                )
            self._owned = False
            self._owned_pid = None
        self._log.info("embedded_postgres.stopped", cluster=str(self._cluster))

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (optionally copied from ``template``) and return its DSN."""
        if self._port is None:
            raise EmbeddedPostgresError("create_database() needs a started cluster")
        self._createdb(name, template)
        return self._dsn_for(name)

    def __enter__(self) -> EmbeddedPostgres:
        """Start on entry, for scripts and tests."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on exit (a no-op when another process owns the server)."""
        self.stop()

    # -- locking and identities ----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``data_root/lock`` so only one process at a time inits, starts or stops."""
        fd = os.open(self._root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _server_user_for_new_cluster(self) -> _RunAs:
        """``postgres`` if it exists, else our own system user, created when first needed."""
        for name in ("postgres", FALLBACK_SYSTEM_USER):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
        useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
        if useradd is None:
            raise EmbeddedPostgresError("running as root but useradd is missing; cannot drop root")
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                useradd,
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                FALLBACK_SYSTEM_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        try:
            entry = pwd.getpwnam(FALLBACK_SYSTEM_USER)
        except KeyError:
            raise EmbeddedPostgresError(
                f"could not create system user {FALLBACK_SYSTEM_USER}: {proc.stderr.strip()}"
            ) from None
        self._log.info("embedded_postgres.user_created", user=FALLBACK_SYSTEM_USER)
        return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def _user_can_reach(self, run_as: _RunAs, path: Path) -> bool:
        """Ask the kernel, as ``run_as``, whether ``path`` can be traversed (ACLs included)."""
        test = shutil.which("test", path="/usr/bin:/bin")
        if test is None:
            return False
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [test, "-x", str(path)],
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[],
            cwd="/",
            check=False,
            timeout=30,
        )
        return proc.returncode == 0

    # -- cluster directory ---------------------------------------------------------------

    def _prepare_cluster(self) -> tuple[Path, bool]:
        """Find or make the data directory; returns its real path and whether initdb just ran."""
        link = self._root / "cluster"
        is_root = os.geteuid() == 0
        if link.is_symlink() or link.is_dir():
            cluster = link.resolve()
            if is_root:
                self._run_as = self._run_as_for_existing(cluster)
            if (cluster / "PG_VERSION").is_file():
                return cluster, False
        else:
            cluster = link
            if is_root:
                self._run_as = self._server_user_for_new_cluster()
                if not self._user_can_reach(self._run_as, self._root):
                    digest = hashlib.sha256(str(self._root).encode()).hexdigest()[:16]
                    cluster = SHARED_CLUSTER_ROOT / f"pg-{digest}"
                    SHARED_CLUSTER_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._log.info(
                "embedded_postgres.cluster_location",
                cluster=str(cluster),
                run_as=self._run_as.name if self._run_as else None,
            )
        self._initdb(cluster, link)
        return cluster, True

    def _run_as_for_existing(self, cluster: Path) -> _RunAs:
        """An existing cluster keeps running as whoever owns it."""
        try:
            uid = cluster.stat().st_uid
        except FileNotFoundError:
            return self._server_user_for_new_cluster()
        if uid == 0:
            return self._server_user_for_new_cluster()
        entry = pwd.getpwuid(uid)
        return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def _make_empty_cluster_dir(self, cluster: Path, link: Path) -> None:
        """An empty 0700 directory owned by the server user, plus the symlink if it lives away."""
        if cluster.exists():
            # A previous initdb died half way; the directory is ours and holds nothing of value.
            self._log.warning("embedded_postgres.clearing_incomplete_cluster", cluster=str(cluster))
            shutil.rmtree(cluster)
        cluster.mkdir(mode=0o700, parents=True)
        if self._run_as is not None:
            os.chown(cluster, self._run_as.uid, self._run_as.gid)
        os.chmod(cluster, 0o700)
        if cluster != link and not link.is_symlink():
            link.symlink_to(cluster, target_is_directory=True)

    def _initdb(self, cluster: Path, link: Path) -> None:
        """Create the cluster with a fresh random superuser password and our settings."""
        binaries = self._choose_binaries(None)
        self._make_empty_cluster_dir(cluster, link)
        password = secrets.token_urlsafe(32)
        self._write_password(password)
        fd, pwfile = tempfile.mkstemp(dir=cluster.parent, prefix=".initdb-pw-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            if self._run_as is not None:
                os.chown(pwfile, self._run_as.uid, self._run_as.gid)
            proc = self._run(
                [
                    binaries.exe("initdb"),
                    "-D",
                    str(cluster),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                as_server_user=True,
            )
        finally:
            os.unlink(pwfile)
        if proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed (exit {proc.returncode}) in {cluster}:\n{proc.stdout}{proc.stderr}"
            )
        self._write_settings(cluster, _pick_free_port())
        self._log.info("embedded_postgres.initdb", cluster=str(cluster), version=binaries.major)

    def _write_password(self, password: str) -> None:
        """Atomically replace ``data_root/password`` (0600), so readers never see half of it."""
        target = self._root / "password"
        fd, tmp = tempfile.mkstemp(dir=self._root, prefix=".password-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _read_password(self) -> str:
        """The superuser password; without it the cluster cannot be reached at all."""
        try:
            return (self._root / "password").read_text().strip()
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"{self._root / 'password'} is missing; the cluster in {self._root / 'cluster'} "
                "cannot be used without it (remove the cluster to start afresh)"
            ) from None

    # -- configuration -------------------------------------------------------------------

    @staticmethod
    def _write_settings(cluster: Path, port: int) -> None:
        """Replace our block at the end of postgresql.conf (later lines win in PostgreSQL).

        Written in place so the file keeps its owner when we are root.
        """
        conf = cluster / "postgresql.conf"
        text = conf.read_text()
        begin = text.find(_CONF_BEGIN)
        if begin != -1:
            end = text.find(_CONF_END, begin)
            tail = text[end + len(_CONF_END) :] if end != -1 else ""
            text = text[:begin] + tail.lstrip("\n")
        block = "\n".join(
            [
                _CONF_BEGIN,
                "listen_addresses = '127.0.0.1'",
                f"port = {port}",
                "unix_socket_directories = ''",
                _CONF_END,
            ]
        )
        if not text.endswith("\n"):
            text += "\n"
        with conf.open("r+") as fh:
            fh.seek(0)
            fh.write(text + block + "\n")
            fh.truncate()

    @staticmethod
    def _configured_port(cluster: Path) -> int | None:
        """The port our block in postgresql.conf names, if any."""
        text = (cluster / "postgresql.conf").read_text()
        begin = text.find(_CONF_BEGIN)
        if begin == -1:
            return None
        match = re.search(r"^port\s*=\s*(\d+)", text[begin:], re.MULTILINE)
        return int(match[1]) if match else None

    # -- binaries and subprocesses -------------------------------------------------------

    def _choose_binaries(self, cluster: Path | None) -> PgBinaries:
        """Binaries of the cluster's major version (any version for a new cluster)."""
        required: int | None = None
        if cluster is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                required = int((cluster / "PG_VERSION").read_text().strip())
        if self._binaries is not None and required in (None, self._binaries.major):
            return self._binaries
        if self._bin_dir is not None:
            binaries = _probe("explicit", self._bin_dir.resolve())
            if binaries is None:
                raise EmbeddedPostgresError(f"{self._bin_dir} holds no usable PostgreSQL binaries")
            if required is not None and binaries.major != required:
                raise EmbeddedPostgresError(
                    f"{self._bin_dir} is PostgreSQL {binaries.major} but the cluster is {required}"
                )
        else:
            binaries = find_postgres_binaries(required)
        self._check_user_can_execute(binaries)
        self._binaries = binaries
        self._log.info(
            "embedded_postgres.binaries",
            bin_dir=str(binaries.bin_dir),
            source=binaries.source,
            version=binaries.major,
        )
        return binaries

    def _check_user_can_execute(self, binaries: PgBinaries) -> None:
        """Fail clearly when the unprivileged user cannot run them (e.g. a venv under /root)."""
        if self._run_as is None:
            return
        if not self._user_can_reach(self._run_as, binaries.bin_dir / "postgres"):
            raise EmbeddedPostgresError(
                f"user {self._run_as.name} cannot execute {binaries.bin_dir}/postgres; install "
                "Debian's 'postgresql' package or put the virtualenv where that user can reach it"
            )

    def _exe(self, name: str) -> str:
        """Full path of one of the chosen binaries."""
        assert self._binaries is not None
        return self._binaries.exe(name)

    def _run(
        self,
        cmd: Sequence[str],
        *,
        as_server_user: bool,
        env: dict[str, str] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one program, dropping root for the server user when asked to.

        Output goes to ``stdout`` when given (pg_ctl start, whose server inherits it: a pipe
        would keep us waiting for the server's whole life), otherwise it is captured.
        """
        run_as = self._run_as if as_server_user else None
        capture = subprocess.PIPE if stdout is None else stdout
        try:
            proc = subprocess.run(  # noqa: S603 - argv built here, no shell
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=capture,
                stderr=subprocess.PIPE if stdout is None else subprocess.STDOUT,
                env=env if env is not None else _clean_env(),
                cwd="/",
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
                check=False,
                timeout=timeout if timeout is not None else self._timeout + 30,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedPostgresError(
                f"{cmd[0]} did not finish in {exc.timeout} s\n"
                f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}"
            ) from exc
        out = proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else ""
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else ""
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    # -- running the server --------------------------------------------------------------

    @staticmethod
    def _running_postmaster(cluster: Path) -> tuple[int, int] | None:
        """PID and port of a live postmaster for this cluster, read from its postmaster.pid."""
        try:
            lines = (cluster / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 4:
            return None  # being written or torn down; treat as not running
        try:
            pid, port = int(lines[0]), int(lines[3])
        except ValueError:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # stale file left by a crash; postgres cleans it up on start
        except PermissionError:
            pass  # alive, and owned by another user
        return pid, port

    def _start_server(self, cluster: Path) -> None:
        """Start with pg_ctl -w on the configured port, moving the port if it was taken."""
        port = self._configured_port(cluster)
        for attempt in range(3):
            if port is None or not _port_is_free(port):
                new_port = _pick_free_port()
                self._log.warning("embedded_postgres.port_moved", old=port, new=new_port)
                port = new_port
                self._write_settings(cluster, port)
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(log_fd, "ab") as logf:
                proc = self._run(
                    [
                        self._exe("pg_ctl"),
                        "start",
                        "-D",
                        str(cluster),
                        "-w",
                        "-t",
                        str(int(self._timeout)),
                    ],
                    as_server_user=True,
                    stdout=logf,
                )
            if proc.returncode == 0:
                self._port = port
                self._owned = True
                running = self._running_postmaster(cluster)
                self._owned_pid = running[0] if running else None
                return
            attempt_log = _tail(self.log_path, start=log_start)
            if "could not bind" in attempt_log and attempt < 2:
                port = None  # lost a race for the port: take another
                continue
            raise EmbeddedPostgresError(
                f"PostgreSQL in {cluster} did not start (pg_ctl exit {proc.returncode}, "
                f"port {port}).\n--- tail of {self.log_path} ---\n{attempt_log}"
            )

    def _wait_ready(self, port: int) -> None:
        """Poll until a server started elsewhere accepts connections (it may still be starting)."""
        deadline = time.monotonic() + self._timeout
        while True:
            proc = self._run(
                [self._exe("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
                as_server_user=False,
                timeout=30,
            )
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL on 127.0.0.1:{port} runs but does not accept connections after "
                    f"{self._timeout:.0f} s.\n--- tail of {self.log_path} ---\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def _createdb(self, name: str, template: str | None) -> subprocess.CompletedProcess[str]:
        """Run createdb against the running server as the superuser."""
        assert self._port is not None and self._password is not None
        cmd = [self._exe("createdb"), "-h", "127.0.0.1", "-p", str(self._port), "-U", SUPERUSER]
        if template is not None:
            cmd += ["-T", template]
        cmd.append(name)
        proc = self._run(
            cmd,
            as_server_user=False,
            env=_clean_env(PGPASSWORD=self._password, PGCONNECT_TIMEOUT="10"),
            timeout=120,
        )
        if proc.returncode != 0 and "already exists" not in proc.stderr:
            raise EmbeddedPostgresError(
                f"createdb {name} failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def _ensure_database(self, name: str, *, template: str | None, fresh: bool) -> None:
        """Create the CA's database; also on later starts, in case a crash came between initdb
        and createdb."""
        proc = self._createdb(name, template)
        if fresh and proc.returncode == 0:
            self._log.info("embedded_postgres.database_created", database=name)

    def _dsn_for(self, database: str) -> str:
        """A libpq/asyncpg URL for ``database`` on our server."""
        if self._port is None or self._password is None:
            raise EmbeddedPostgresError("the embedded cluster has not been started")
        return (
            f"postgresql://{quote(SUPERUSER, safe='')}:{quote(self._password, safe='')}"
            f"@127.0.0.1:{self._port}/{quote(database, safe='')}"
        )
