"""The embedded cluster's lifecycle: find or initdb it, start or reuse it, stop what we started.

See the package docstring for the layout of ``data_root`` and the run-as-root rules.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import quote

import structlog

from acme_ca.embedded_pg.binaries import PgBinaries, find_postgres_binaries, probe
from acme_ca.embedded_pg.process import (
    EmbeddedPostgresError,
    Logger,
    RunAs,
    clean_env,
    run,
    tail,
)
from acme_ca.embedded_pg.run_as import (
    run_as_for_existing,
    server_user_for_new_cluster,
    user_can_reach,
)
from acme_ca.embedded_pg.settings import (
    configured_port,
    pick_free_port,
    port_is_free,
    socket_dir_for,
    write_settings,
)

DB_NAME = "acme_ca"
SUPERUSER = "acme_ca"

SHARED_CLUSTER_ROOT = Path("/var/lib/acme-ca")
"""Home of clusters whose data_root the unprivileged user cannot reach (root only)."""

START_TIMEOUT = 60.0
"""Seconds to wait for the server to accept connections (a crash recovery can take a while)."""


class EmbeddedPostgres:
    """One private PostgreSQL cluster under ``data_root``, started on demand and shared safely.

    ``start()`` is blocking; call it before the event loop runs or through
    ``asyncio.to_thread``.
    """

    def __init__(
        self,
        data_root: Path,
        *,
        log: Logger | None = None,
        bin_dir: Path | None = None,
        start_timeout: float = START_TIMEOUT,
        throwaway: bool = False,
    ) -> None:
        """``bin_dir`` pins the binaries (skipping the search); the default finds them.
        ``throwaway``: a cluster removed after this run (``--ephemeral``), created and run
        without fsync (initdb ``--no-sync``, ``fsync = off``)."""
        self._root = Path(data_root)
        self._throwaway = throwaway
        self._log: Logger = log if log is not None else structlog.get_logger(__name__)
        self._bin_dir = bin_dir
        self._timeout = start_timeout
        self._binaries: PgBinaries | None = None
        self._run_as: RunAs | None = None
        self._cluster: Path | None = None
        self._port: int | None = None
        self._socket_dir: Path | None = None
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
    def local_dsn(self) -> str:
        """DSN of the ``acme_ca`` database over the server's Unix socket, for a client on this
        machine (the CA's own processes): the same server, user and password as :attr:`dsn`,
        with less kernel work per round trip than loopback TCP.  :attr:`dsn` when the running
        server has no socket we can reach (a path too long for one, a server started by an
        older version, a socket directory this user cannot enter)."""
        return self.local_dsn_for(DB_NAME)

    def dsn_for(self, database: str) -> str:
        """:attr:`dsn` (loopback TCP) for another database of the same server."""
        return self._dsn_for(database)

    def local_dsn_for(self, database: str) -> str:
        """:attr:`local_dsn` for another database of the same server."""
        if self._port is None or self._socket_dir is None:
            return self._dsn_for(database)
        socket = self._socket_dir / f".s.PGSQL.{self._port}"
        if not (os.access(self._socket_dir, os.X_OK) and socket.is_socket()):
            return self._dsn_for(database)
        return self._dsn_for(database, host=str(self._socket_dir))

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
                self._socket_dir = self._socket_dir_of(cluster)
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
                    f"--- tail of {self.log_path} ---\n{tail(self.log_path)}"
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

    # -- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``data_root/lock`` so only one process at a time inits, starts or stops."""
        fd = os.open(self._root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- cluster directory ---------------------------------------------------------------

    def _prepare_cluster(self) -> tuple[Path, bool]:
        """Find or make the data directory; returns its real path and whether initdb just ran."""
        link = self._root / "cluster"
        is_root = os.geteuid() == 0
        if link.is_symlink() or link.is_dir():
            cluster = link.resolve()
            if is_root:
                self._run_as = run_as_for_existing(cluster, self._log)
            if (cluster / "PG_VERSION").is_file():
                return cluster, False
        else:
            cluster = link
            if is_root:
                self._run_as = server_user_for_new_cluster(self._log)
                if not user_can_reach(self._run_as, self._root):
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
                    *(["--no-sync"] if self._throwaway else []),
                ],
                as_server_user=True,
            )
        finally:
            os.unlink(pwfile)
        if proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed (exit {proc.returncode}) in {cluster}:\n{proc.stdout}{proc.stderr}"
            )
        write_settings(
            cluster,
            pick_free_port(),
            throwaway=self._throwaway,
            socket_dir=socket_dir_for(cluster),
        )
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
            binaries = probe("explicit", self._bin_dir.resolve())
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
        if not user_can_reach(self._run_as, binaries.bin_dir / "postgres"):
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
        """Run one program (:func:`process.run`), as the server user when asked to."""
        return run(
            cmd,
            run_as=self._run_as if as_server_user else None,
            server_log=self.log_path,
            timeout=timeout if timeout is not None else self._timeout + 30,
            env=env,
            stdout=stdout,
        )

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

    @staticmethod
    def _socket_dir_of(cluster: Path) -> Path | None:
        """The running server's Unix socket directory, from its postmaster.pid (fifth line;
        empty when it listens on TCP only)."""
        try:
            lines = (cluster / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        return Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None

    def _start_server(self, cluster: Path) -> None:
        """Start with pg_ctl -w on the configured port, moving the port if it was taken."""
        port = configured_port(cluster)
        for attempt in range(3):
            if port is None or not port_is_free(port):
                new_port = pick_free_port()
                self._log.warning("embedded_postgres.port_moved", old=port, new=new_port)
                port = new_port
            # Every start: a cluster made before the Unix socket was added gets it now.
            write_settings(
                cluster, port, throwaway=self._throwaway, socket_dir=socket_dir_for(cluster)
            )
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
                self._socket_dir = self._socket_dir_of(cluster)
                return
            attempt_log = tail(self.log_path, start=log_start)
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
                    f"{tail(self.log_path)}"
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
            env=clean_env(PGPASSWORD=self._password, PGCONNECT_TIMEOUT="10"),
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

    def _dsn_for(self, database: str, *, host: str = "127.0.0.1") -> str:
        """A libpq/asyncpg URL for ``database`` on our server; ``host`` a socket directory
        (percent-encoded into the URL's host, which libpq and asyncpg decode) or 127.0.0.1."""
        if self._port is None or self._password is None:
            raise EmbeddedPostgresError("the embedded cluster has not been started")
        return (
            f"postgresql://{quote(SUPERUSER, safe='')}:{quote(self._password, safe='')}"
            f"@{quote(host, safe='.')}:{self._port}/{quote(database, safe='')}"
        )
