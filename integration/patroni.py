"""A Patroni-managed PostgreSQL cluster on loopback, for ``integration/test_patroni.py``.

One etcd member (the DCS) and N Patroni nodes, each running Debian's PostgreSQL binaries on a
data directory of its own under one temporary directory, as the same unprivileged user the
embedded PostgreSQL runs as when we are root (:mod:`acme_ca.embedded_pg.run_as`: PostgreSQL
refuses root, and so does Patroni's postmaster). ``synchronous_mode`` is on, so a commit is
acknowledged only once the synchronous standby has it, and Patroni promotes only that
standby: a failover loses no committed row. The timings are short (``TTL`` etc.) so a failover
takes seconds.

:meth:`PatroniNode.kill` SIGKILLs a node as a crash would: Patroni, and the postmaster with
every backend (Patroni starts the postmaster in a session of its own, so it would outlive
Patroni).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from acme_ca.embedded_pg import EmbeddedPostgresError, find_postgres_binaries
from acme_ca.embedded_pg.process import RunAs, clean_env
from acme_ca.embedded_pg.run_as import server_user_for_new_cluster
from integration.processes import LoggedProcess
from tests.support.ports import free_port

PATRONI = shutil.which("patroni") or "/usr/bin/patroni"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
#: Leader key TTL, Patroni's loop and its DCS/PostgreSQL retry budget (seconds): a dead
#: leader's key lapses within TTL, and the synchronous standby takes it on its next loop.
#: ttl > loop_wait + 2 * retry_timeout, as Patroni requires; short, but not so short that a
#: loaded 2-core machine misses a renewal.
TTL, LOOP_WAIT, RETRY_TIMEOUT = 6, 1, 2
SUPERUSER = "postgres"
APP_USER = APP_DB = "acme_ca"
START_TIMEOUT = 60.0


def patroni_available() -> str | None:
    """Why the cluster cannot run here, or None when Patroni, etcd and PostgreSQL are there."""
    for exe in (PATRONI, ETCD):
        if not os.access(exe, os.X_OK):
            return f"{exe} is not installed (Debian: patroni, etcd-server)"
    try:
        find_postgres_binaries()
    except EmbeddedPostgresError as exc:
        return str(exc)
    return None


def _scratch_dir() -> str | None:
    """``/dev/shm`` if it is a writable tmpfs with room to spare, else the default tmp."""
    shm = Path("/dev/shm")
    try:
        if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * 2**30:
            return str(shm)
    except OSError:
        pass
    return None


def _get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """Status and JSON body of a GET (Patroni answers 503 with a body for 'not the leader')."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _exists(pid: int) -> bool:
    """Whether ``pid`` is a process that has not been reaped (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class PatroniNode:
    """One PostgreSQL + Patroni member."""

    name: str
    pg_port: int
    api_port: int
    data_dir: Path
    config: Path
    process: LoggedProcess | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def status(self) -> dict[str, Any] | None:
        """Patroni's view of this member (``role``, ``state``, ...), None if it does not answer."""
        try:
            _, body = _get_json(f"{self.api}/patroni")
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL Patroni and the postmaster's whole process group (every backend)."""
        pid = self.postmaster_pid()
        if self.process is not None:
            self.process.kill()
        if pid is None:
            return
        try:
            # Patroni starts the postmaster from a child that called setsid(): its process
            # group holds the postmaster and every backend, and not Patroni nor us.
            group = os.getpgid(pid)
        except ProcessLookupError:
            return
        assert group != os.getpgid(0), "the postmaster is in our process group"
        os.killpg(group, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _exists(pid):  # a live postmaster would go on accepting writes: split brain
            assert time.monotonic() < deadline, f"{self.name}: postmaster {pid} survived SIGKILL"
            time.sleep(0.01)

    def tails(self) -> str:
        return self.process.tails() if self.process is not None else f"{self.name}: not started"


class PatroniCluster:
    """etcd plus ``size`` Patroni nodes under a fresh temporary directory (its own user).

    A context manager: on exit every process is SIGKILLed and the directory removed.
    """

    def __init__(self, log_dir: Path, size: int = 2) -> None:
        self._log_dir = log_dir
        self._log = structlog.get_logger(__name__)
        self._run_as: RunAs | None = (
            server_user_for_new_cluster(self._log) if os.geteuid() == 0 else None
        )
        # Outside pytest's 0700 tree, so the server user can reach it (as embedded_pg does);
        # in memory when there is room: creating and removing two clusters on a loaded disk
        # took seconds.
        self.root = Path(tempfile.mkdtemp(prefix="acme-ca-patroni-", dir=_scratch_dir()))
        if self._run_as is not None:
            os.chown(self.root, self._run_as.uid, self._run_as.gid)
        self.scope = f"acme-ca-{secrets.token_hex(4)}"
        self.superuser_password = secrets.token_urlsafe(16)
        self.app_password = secrets.token_urlsafe(16)
        self._replication_password = secrets.token_urlsafe(16)
        self._bin_dir = find_postgres_binaries().bin_dir
        self.etcd_port = free_port()
        self._etcd: LoggedProcess | None = None
        self.nodes = [
            PatroniNode(
                name=f"pg{i}",
                pg_port=free_port(),
                api_port=free_port(),
                data_dir=self.root / f"pg{i}",
                config=self.root / f"pg{i}.yml",
            )
            for i in range(size)
        ]

    # -- DSNs ----------------------------------------------------------------------------

    def dsn(self, *, superuser: bool = False, database: str = APP_DB) -> str:
        """The libpq multi-host URL of every node, ``target_session_attrs=read-write``: a new
        connection skips nodes that are down or standbys and lands on the primary."""
        user, password = (
            (SUPERUSER, self.superuser_password) if superuser else (APP_USER, self.app_password)
        )
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgresql://{user}:{password}@{hosts}/{database}?target_session_attrs=read-write"

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """etcd, then every node at once; returns as soon as one leads (the others clone it
        meanwhile: :meth:`wait_healthy` waits for them)."""
        self._start_etcd()
        for node in self.nodes:
            node.config.write_text(json.dumps(self._config(node), indent=2))
            node.process = LoggedProcess.spawn(
                f"patroni-{node.name}",
                [PATRONI, str(node.config)],
                log_dir=self._log_dir,
                env=clean_env(TMPDIR=str(self.root), HOME=str(self.root)),
                cwd=str(self.root),
                **self._as_server_user(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.leader() is None:
            for node in self.nodes:
                if node.process is not None and not node.process.alive():
                    raise AssertionError(f"{node.name} exited\n{node.tails()}")
            assert time.monotonic() < deadline, "\n".join(n.tails() for n in self.nodes)
            time.sleep(0.1)

    def _as_server_user(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.uid, "group": self._run_as.gid, "extra_groups": []}

    def _start_etcd(self) -> None:
        peer = free_port()
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._etcd = LoggedProcess.spawn(
            "etcd",
            [
                ETCD,
                "--name=etcd0",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=etcd0=http://127.0.0.1:{peer}",
                f"--initial-cluster-token={self.scope}",
                "--log-level=warn",
            ],
            log_dir=self._log_dir,
            env=clean_env(),
            **self._as_server_user(),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                status, body = _get_json(f"{client}/health")
                if status == 200 and body.get("health") == "true":
                    return
            except (OSError, ValueError):
                pass
            if not self._etcd.alive() or time.monotonic() > deadline:
                raise AssertionError(f"etcd did not start\n{self._etcd.tails()}")
            time.sleep(0.1)

    def _config(self, node: PatroniNode) -> dict[str, Any]:
        """Patroni's YAML configuration (written as JSON, which YAML reads)."""
        hba_auth = "scram-sha-256"
        return {
            "scope": self.scope,
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    # A committed row is on the synchronous standby before the client hears
                    # of it, and only that standby may be promoted: nothing committed is lost.
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": False,
                        "use_slots": True,
                        "parameters": {
                            "max_connections": 100,
                            "wal_keep_size": "64MB",
                            "min_wal_size": "4MB",
                            "max_wal_size": "64MB",
                        },
                    },
                },
                # 1 MB WAL segments: a few MB of WAL on disk, not a hundred.
                "initdb": [
                    {"encoding": "UTF8"},
                    {"locale": "C"},
                    {"auth": hba_auth},
                    {"wal-segsize": "1"},
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(self._bin_dir),
                "pgpass": str(self.root / f"{node.name}.pgpass"),
                # The replica's pg_basebackup asks the leader for an immediate checkpoint, not
                # a spread one (paced over 0.9 x checkpoint_timeout: the replica then stayed
                # "creating replica" past START_TIMEOUT on a quiet CI run).
                "basebackup": [{"checkpoint": "fast"}],
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": self.superuser_password},
                    "replication": {
                        "username": "replicator",
                        "password": self._replication_password,
                    },
                },
                "pg_hba": [
                    f"local all all {hba_auth}",
                    f"host all all 127.0.0.1/32 {hba_auth}",
                    f"host replication replicator 127.0.0.1/32 {hba_auth}",
                ],
                "parameters": {
                    "unix_socket_directories": str(self.root),
                    "password_encryption": "scram-sha-256",
                    # A SIGKILL loses no page cache: fsync does not bear on what the test
                    # proves (replication does), and a throwaway cluster runs faster without.
                    "fsync": "off",
                },
            },
        }

    def cluster(self) -> list[dict[str, Any]]:
        """Patroni's member list (``name``, ``role``, ``state``), asked of any node that
        answers."""
        for node in self.nodes:
            with contextlib.suppress(OSError, ValueError):
                status, body = _get_json(f"{node.api}/cluster")
                if status == 200 and isinstance(body, dict):
                    return list(body.get("members", []))
        return []

    def leader(self) -> PatroniNode | None:
        """The running leader, by Patroni's member list."""
        for member in self.cluster():
            if member.get("role") == "leader" and member.get("state") == "running":
                return next(n for n in self.nodes if n.name == member["name"])
        return None

    def wait_healthy(self, *, timeout: float, alive: list[PatroniNode] | None = None) -> None:
        """Until a running leader has a streaming synchronous standby among ``alive``."""
        alive = alive if alive is not None else self.nodes
        names = {n.name for n in alive}
        deadline = time.monotonic() + timeout
        while True:
            members = {m["name"]: m for m in self.cluster() if m.get("name") in names}
            roles = sorted(m.get("role", "") for m in members.values())
            running = all(m.get("state") in ("running", "streaming") for m in members.values())
            synchronous = len(names) == 1 or "sync_standby" in roles
            if len(members) == len(names) and running and "leader" in roles and synchronous:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(n.tails() for n in alive)
                raise AssertionError(f"Patroni cluster not healthy: {members}\n{tails}")
            for node in alive:
                if node.process is not None and not node.process.alive():
                    raise AssertionError(f"{node.name} exited\n{node.tails()}")
            time.sleep(0.2)

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
            if node.process is not None:
                node.process.close_files()
        if self._etcd is not None:
            self._etcd.kill()
            self._etcd.close_files()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def patroni_cluster(log_dir: Path, size: int = 2) -> Iterator[PatroniCluster]:
    """A started :class:`PatroniCluster`, removed on exit."""
    with PatroniCluster(log_dir, size) as cluster:
        cluster.start()
        yield cluster


async def create_app_database(cluster: PatroniCluster) -> str:
    """The CA's own login role and database on the primary; returns the CA's multi-host DSN."""
    import asyncpg

    conn = await asyncpg.connect(cluster.dsn(superuser=True, database="postgres"))
    try:
        await conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{cluster.app_password}'")
        await conn.execute(f"CREATE DATABASE {APP_DB} OWNER {APP_USER}")
    finally:
        await conn.close()
    return cluster.dsn()
