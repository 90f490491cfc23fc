"""Shared fixtures, loaded for tests/ and integration/ by the root conftest.py: one real
PostgreSQL per session, a fresh database per test, and the ACME front end served on a real
127.0.0.1 port."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from acme_ca.clock import Clock, SystemClock
from acme_ca.config import Config
from acme_ca.db.migrate import apply_schema
from acme_ca.db.pool import create_pool
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.log import configure_logging
from acme_ca.main.app import create_app
from tests.support.shared_clusters import clusters_linked_from, remove_cluster

TEMPLATE_DB = "acme_ca_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL: ``ACME_CA_TEST_DATABASE_URL`` is not supported on purpose;
    tests create and drop databases freely, so they get a private cluster.  It is removed at
    the end, so it runs as a throwaway (no fsync, as ``--ephemeral``): a database per test
    copied from the template, and the shutdown checkpoint, then cost no disk flushes."""
    root = Path(tempfile.mkdtemp(prefix="acme-ca-test-pg-"))
    os.chmod(root, 0o755)
    pg = EmbeddedPostgres(root / "pg", throwaway=True)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        cluster = pg.cluster_dir
        shutil.rmtree(root, ignore_errors=True)
        if cluster is not None and cluster.is_relative_to("/var/lib/acme-ca"):
            shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture(scope="session")
def template_dsn(postgres: EmbeddedPostgres) -> str:
    import asyncio

    dsn = postgres.create_database(TEMPLATE_DB)

    async def prepare() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await apply_schema(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    return dsn


@pytest.fixture
def dsn(postgres: EmbeddedPostgres, template_dsn: str) -> Iterator[str]:
    """A fresh database with the schema applied, private to this test, dropped after it.

    Dropped, not left for the cluster's removal at the end: each copy of the template is
    about 9 MB of files (plus as much WAL), so a suite's 1,500 of them wrote ~20 GB and the
    session's teardown spent minutes deleting them (288 s on a loaded CI run)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _maintain(postgres.dsn, f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE_DB}')
    yield postgres.dsn_for(name)
    # WITH (FORCE): a server process the test left running is cut off.
    _maintain(postgres.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _maintain(maintenance_dsn: str, statement: str) -> None:
    """One statement on the cluster's maintenance database: SQL, not a ``createdb`` process
    per test (about 70 ms less for each of the suite's ~1,500 databases)."""
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(maintenance_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, max_size=4)
    yield p
    await p.close()


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    configure_logging("json", "debug")


@pytest.fixture(autouse=True, scope="session")
def _shared_clusters_removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, the clusters its CA homes left in /var/lib/acme-ca
    (:mod:`tests.support.shared_clusters`)."""
    yield
    for cluster in set(clusters_linked_from(tmp_path_factory.getbasetemp())):
        remove_cluster(cluster)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class RunningCa:
    """An ACME front end listening on 127.0.0.1 over plain HTTP."""

    config: Config
    app: web.Application
    base_url: str

    @property
    def directory_url(self) -> str:
        return self.base_url + "/directory"


class CaFactory:
    """Starts front ends with config changes; all are stopped at test end."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self._dsn = dsn
        self._tmp = tmp_path
        self._runners: list[web.AppRunner] = []

    async def start(self, clock: Clock | None = None, **changes: object) -> RunningCa:
        """A front end on ``Config()`` with ``changes``; rate limits off unless a test sets
        ``rate_limits`` (tests make many accounts and orders from 127.0.0.1)."""
        changes = {"rate_limits": False, **changes}
        sock = free_socket()
        port = sock.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        config = replace(
            Config(),
            home=self._tmp / "home",
            plain_http=True,
            listen=f"127.0.0.1:{port}",
            base_url=base,
            **changes,  # type: ignore[arg-type]
        ).validate()
        app = create_app(config, self._dsn, clock=clock or SystemClock())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runners.append(runner)
        return RunningCa(config=config, app=app, base_url=base)

    async def close(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()


@pytest.fixture
async def ca_factory(dsn: str, tmp_path: Path) -> AsyncIterator[CaFactory]:
    factory = CaFactory(dsn, tmp_path)
    yield factory
    await factory.close()


@pytest.fixture
async def ca(ca_factory: CaFactory) -> RunningCa:
    """The front end on its defaults (terms of service published, EAB optional)."""
    return await ca_factory.start()
