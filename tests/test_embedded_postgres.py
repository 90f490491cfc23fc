"""The CA's private PostgreSQL cluster, exercised against real PostgreSQL servers.

Each test makes its own cluster under tmp_path; the fixture stops whatever is still running and
removes clusters that root placement put under /var/lib/acme-ca, so runs leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from acme_ca import embedded_pg
from acme_ca.embedded_pg import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    find_postgres_binaries,
    pgserver_bin_dir,
)
from acme_ca.embedded_pg import binaries as pg_binaries
from acme_ca.embedded_pg.settings import socket_dir_for, write_settings


class RecordingLogger:
    """A structlog-shaped logger that keeps events, to check what start() reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append((event, kw))

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append((event, kw))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for name, kw in self.events if name == event]


MakePg = Callable[..., EmbeddedPostgres]


@pytest.fixture
def make_pg(tmp_path: Path) -> Iterator[MakePg]:
    """Build EmbeddedPostgres instances and clean up their servers and clusters afterwards."""
    made: list[EmbeddedPostgres] = []

    def make(data_root: Path | None = None, **kwargs: Any) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(data_root or tmp_path / "pg", **kwargs)
        made.append(pg)
        return pg

    yield make

    for pg in made:
        if pg.owns_server:
            pg.stop()
    clusters = {pg.cluster_dir for pg in made if pg.cluster_dir is not None}
    for cluster in clusters:
        _force_stop(cluster, [pg for pg in made if pg.cluster_dir == cluster])
        if not cluster.is_relative_to(tmp_path):
            shutil.rmtree(cluster, ignore_errors=True)


def _force_stop(cluster: Path, users: list[EmbeddedPostgres]) -> None:
    """Stop a server that a failed test left running without an owner."""
    if EmbeddedPostgres._running_postmaster(cluster) is None:
        return
    binaries = next(pg.binaries for pg in users if pg.binaries is not None)
    owner = cluster.stat().st_uid
    subprocess.run(
        [binaries.exe("pg_ctl"), "stop", "-D", str(cluster), "-m", "immediate", "-w"],
        user=owner if os.geteuid() == 0 else None,
        group=cluster.stat().st_gid if os.geteuid() == 0 else None,
        extra_groups=[] if os.geteuid() == 0 else None,
        cwd="/",
        capture_output=True,
        check=False,
        timeout=60,
    )


async def _fetchval(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_embedded_start_select_one(make_pg: MakePg, tmp_path: Path) -> None:
    log = RecordingLogger()
    pg = make_pg(log=log)
    dsn = pg.start()

    assert dsn == pg.dsn
    assert dsn.startswith("postgresql://acme_ca:")
    assert dsn.endswith("/acme_ca")
    assert "@127.0.0.1:" in dsn
    assert pg.owns_server
    assert await _fetchval(dsn, "select 1") == 1
    assert await _fetchval(dsn, "select current_database()") == "acme_ca"
    assert await _fetchval(dsn, "show server_encoding") == "UTF8"
    # The TCP DSN is TCP; the cluster also has a Unix socket (test_embedded_local_dsn_...).
    assert await _fetchval(dsn, "select inet_server_addr() is not null") is True
    assert await _fetchval(dsn, "show listen_addresses") == "127.0.0.1"

    password = tmp_path / "pg" / "password"
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    assert password.read_text().strip() in dsn
    chosen = log.named("embedded_postgres.binaries")
    assert chosen and chosen[0]["source"] in {"path", "system", "pgserver"}

    # A wrong password is refused: scram-sha-256 is really in force over TCP.
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _fetchval(dsn.replace(password.read_text().strip(), "wrong"), "select 1")

    cluster = pg.cluster_dir
    assert cluster is not None
    if os.geteuid() == 0:
        assert cluster.stat().st_uid != 0, "the server must not run as root"
        link = tmp_path / "pg" / "cluster"
        if cluster != link:  # pytest's tmp is 0700 for root: cluster moved out, symlink left
            assert link.is_symlink()
            assert link.resolve() == cluster
            assert cluster.parent == embedded_pg.SHARED_CLUSTER_ROOT
    else:
        assert cluster == tmp_path / "pg" / "cluster"


async def test_embedded_start_reuse(make_pg: MakePg) -> None:
    first = make_pg()
    dsn = first.start()

    second = make_pg()
    assert second.start() == dsn
    assert not second.owns_server
    second.stop()  # not ours: the server keeps running
    assert await _fetchval(dsn, "select 1") == 1

    assert first.start() == dsn  # idempotent for the owner too
    assert first.owns_server
    first.stop()
    assert not first.owns_server
    with pytest.raises(OSError):
        await _fetchval(dsn, "select 1")

    # Ownership follows the postmaster: once someone else restarted it, it is theirs.
    assert first.start() == dsn
    cluster = first.cluster_dir
    assert cluster is not None
    _force_stop(cluster, [first])
    third = make_pg()
    assert third.start() == dsn
    assert third.owns_server
    assert first.start() == dsn
    assert not first.owns_server
    first.stop()
    assert await _fetchval(dsn, "select 1") == 1


async def test_embedded_restart_keeps_data(make_pg: MakePg) -> None:
    pg = make_pg()
    dsn = pg.start()
    await _execute(dsn, "create table kept (v text); insert into kept values ('still here')")
    pg.stop()

    again = make_pg()
    assert again.start() == dsn  # same password and port
    assert again.owns_server
    assert await _fetchval(dsn, "select v from kept") == "still here"


async def test_embedded_create_database_template(make_pg: MakePg) -> None:
    pg = make_pg()
    dsn = pg.start()
    await _execute(dsn, "create table seeded (n int); insert into seeded values (42)")

    copy_dsn = pg.create_database("acme_ca_copy", template="acme_ca")
    assert copy_dsn.endswith("/acme_ca_copy")
    assert await _fetchval(copy_dsn, "select n from seeded") == 42

    empty_dsn = pg.create_database("acme_ca_empty")
    assert await _fetchval(empty_dsn, "select to_regclass('seeded') is null") is True


def test_embedded_concurrent_start(make_pg: MakePg) -> None:
    racers = [make_pg(), make_pg(), make_pg()]
    results: dict[int, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(racers))

    def run(i: int, pg: EmbeddedPostgres) -> None:
        barrier.wait()
        try:
            results[i] = pg.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, pg)) for i, pg in enumerate(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(set(results.values())) == 1
    assert sum(pg.owns_server for pg in racers) == 1


async def test_embedded_port_moves_when_taken(make_pg: MakePg) -> None:
    log = RecordingLogger()
    pg = make_pg(log=log)
    dsn = pg.start()
    await _execute(dsn, "create table t (v int)")
    old_port = int(dsn.rsplit(":", 1)[1].split("/")[0])
    pg.stop()

    with socket.socket() as squatter:
        # Like PostgreSQL, ignore our own client's TIME_WAIT; the listener then holds the port.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        new_dsn = pg.start()
    new_port = int(new_dsn.rsplit(":", 1)[1].split("/")[0])
    assert new_port != old_port
    assert log.named("embedded_postgres.port_moved")
    assert await _fetchval(new_dsn, "select count(*) from t") == 0
    pg.stop()

    # The new port was written to postgresql.conf and is kept.
    assert pg.start() == new_dsn


def test_embedded_start_failure_reports_log_tail(make_pg: MakePg) -> None:
    pg = make_pg()
    pg.start()
    pg.stop()
    cluster = pg.cluster_dir
    assert cluster is not None
    with (cluster / "postgresql.conf").open("a") as fh:
        fh.write("acme_ca_no_such_setting = 1\n")

    with pytest.raises(EmbeddedPostgresError) as info:
        pg.start()
    message = str(info.value)
    assert "did not start" in message
    assert "server.log" in message
    assert "acme_ca_no_such_setting" in message
    assert not pg.owns_server


def test_embedded_finder_finds_pgserver(tmp_path: Path) -> None:
    bundled = pgserver_bin_dir()
    assert bundled is not None
    assert bundled.parts[-2:] == ("pginstall", "bin")
    assert (bundled / "initdb").is_file()

    hidden = find_postgres_binaries(search_path="", system_root=tmp_path / "no-system-pg")
    assert hidden.source == "pgserver"
    assert hidden.bin_dir == bundled.resolve()
    assert hidden.major >= 14

    with pytest.raises(EmbeddedPostgresError, match="PostgreSQL 7"):
        find_postgres_binaries(7, search_path="", system_root=tmp_path / "no-system-pg")

    preferred = find_postgres_binaries()
    machine_has_pg = shutil.which("initdb") is not None or any(
        embedded_pg.SYSTEM_PG_ROOT.glob("*/bin/initdb")
    )
    assert (preferred.source != "pgserver") == machine_has_pg


async def test_embedded_start_with_pgserver_binaries(
    make_pg: MakePg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    visible_path = os.environ.get("PATH", "")
    hidden_path = os.pathsep.join(
        d for d in visible_path.split(os.pathsep) if d and not (Path(d) / "initdb").exists()
    )
    monkeypatch.setenv("PATH", hidden_path)
    monkeypatch.setattr(pg_binaries, "SYSTEM_PG_ROOT", tmp_path / "no-system-pg")

    log = RecordingLogger()
    pg = make_pg(log=log)
    try:
        dsn = pg.start()
    except EmbeddedPostgresError as exc:
        if "cannot execute" in str(exc):
            pytest.skip(f"the unprivileged server user cannot reach the venv: {exc}")
        raise
    assert pg.binaries is not None
    assert pg.binaries.source == "pgserver"
    assert log.named("embedded_postgres.binaries")[0]["source"] == "pgserver"
    version = await _fetchval(dsn, "show server_version_num")
    assert int(version) // 10000 == pg.binaries.major
    pg.stop()

    # With the machine's binaries visible again, the cluster is still served by its own major.
    monkeypatch.undo()
    again = make_pg()
    assert again.start() == dsn
    assert again.binaries is not None
    assert again.binaries.major == pg.binaries.major


async def test_embedded_local_dsn_is_its_unix_socket_and_still_asks_the_password(
    make_pg: MakePg, tmp_path: Path
) -> None:
    """The CA's own connections go over the cluster's Unix socket (issue 20: less kernel work
    per round trip than loopback TCP); scram-sha-256 holds over it as over TCP, and only the
    server user (and root) can reach it."""
    pg = make_pg()
    pg.start()
    local = pg.local_dsn
    cluster = pg.cluster_dir
    assert cluster is not None
    assert local != pg.dsn and "@127.0.0.1:" not in local
    assert local.endswith("/acme_ca")
    assert await _fetchval(local, "select inet_server_addr() is null") is True  # a Unix socket
    assert await _fetchval(local, "show unix_socket_directories") == str(cluster)
    assert await _fetchval(local, "show unix_socket_permissions") == "0700"
    sockets = list(cluster.glob(".s.PGSQL.*[0-9]"))
    assert len(sockets) == 1 and sockets[0].is_socket()
    assert stat.S_IMODE(cluster.stat().st_mode) == 0o700
    password = (tmp_path / "pg" / "password").read_text().strip()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await _fetchval(local.replace(password, "wrong"), "select 1")
    # Another database of the same server, over the same socket.
    copy = pg.create_database("acme_ca_local")
    assert await _fetchval(pg.local_dsn_for("acme_ca_local"), "select current_database()") == (
        "acme_ca_local"
    )
    assert copy.endswith("/acme_ca_local")


async def test_embedded_server_without_a_socket_is_reached_over_tcp_and_gets_one_next_start(
    make_pg: MakePg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started by a version that made no socket (or whose path is too long for one)
    is reused over TCP; the next start by this version adds the socket."""
    with monkeypatch.context() as patch:
        patch.setattr("acme_ca.embedded_pg.cluster.socket_dir_for", lambda cluster: None)
        old = make_pg()
        old.start()
    reuser = make_pg()
    reuser.start()
    assert not reuser.owns_server
    assert reuser.local_dsn == reuser.dsn
    assert await _fetchval(reuser.local_dsn, "select inet_server_addr() is not null") is True
    old.stop()
    again = make_pg()
    again.start()
    assert again.local_dsn != again.dsn
    assert await _fetchval(again.local_dsn, "select inet_server_addr() is null") is True


def test_embedded_socket_only_where_the_path_fits_a_socket_name(tmp_path: Path) -> None:
    """``sun_path`` is 108 bytes: a cluster path too long for ``/.s.PGSQL.<port>.lock`` (or
    one the setting's list syntax would split) gets no socket, and its server TCP only."""
    assert socket_dir_for(Path("/var/lib/acme-ca/pg-0123456789abcdef")) == Path(
        "/var/lib/acme-ca/pg-0123456789abcdef"
    )
    assert socket_dir_for(Path("/" + "d" * 86)) == Path("/" + "d" * 86)
    assert socket_dir_for(Path("/" + "d" * 87)) is None
    assert socket_dir_for(Path("/srv/a,b/cluster")) is None
    (tmp_path / "postgresql.conf").write_text("shared_buffers = 128MB\n")
    write_settings(tmp_path, 54321, socket_dir=None)
    assert "unix_socket_directories = ''" in (tmp_path / "postgresql.conf").read_text()
    write_settings(tmp_path, 54321, socket_dir=Path("/srv/it's"))
    text = (tmp_path / "postgresql.conf").read_text()
    assert "unix_socket_directories = '/srv/it''s'" in text
    assert text.count("unix_socket_directories") == 1
