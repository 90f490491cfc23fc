"""Where the database is: the configured URL, or the embedded cluster under ``home/pg``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import structlog

from acme_ca.db.migrate import apply_schema
from acme_ca.db.pool import create_pool
from acme_ca.db.settings import DatabaseSettings
from acme_ca.embedded_pg import EmbeddedPostgres


@asynccontextmanager
async def database_dsn(settings: DatabaseSettings) -> AsyncIterator[str]:
    """Yield a DSN; an embedded server started here is stopped on exit, one found running is not."""
    if settings.url:
        yield settings.url
        return
    embedded = EmbeddedPostgres(settings.embedded_data_root)
    await asyncio.to_thread(embedded.start)
    try:
        # The server's Unix socket when it has one: the cluster is ours and on this machine.
        yield embedded.local_dsn
    finally:
        await asyncio.to_thread(embedded.stop)


log = structlog.get_logger(component="acme_ca.db.database")

#: ``serve --test --ephemeral``: the migrated, otherwise empty database each run copies.
EPHEMERAL_TEMPLATE = "acme_ca_ephemeral_template"
#: A copy of the template made as a run ends and renamed to the next run's database as it
#: starts: CREATE DATABASE ... TEMPLATE takes ~0.4 s, the longest wait on ``serve --test
#: --ephemeral``'s path to ready (issue 21 item 8).  The run migrates its database as always,
#: so a spare made by an older version is brought up to date.
EPHEMERAL_SPARE = "acme_ca_ephemeral_spare"


@asynccontextmanager
async def ephemeral_database(
    data_root: Path,
    *,
    started: concurrent.futures.Future[tuple[EmbeddedPostgres, str]] | None = None,
) -> AsyncIterator[str]:
    """A new database for one ``serve --test --ephemeral`` run, dropped at exit.

    It is copied from :data:`EPHEMERAL_TEMPLATE` in a throwaway embedded cluster under
    ``data_root`` (no fsync: it only ever holds the template and the runs' databases), which
    stays between runs, so only the first run pays for initdb and the schema; the cluster is
    stopped at exit like any embedded one.  ``started``: that cluster already starting (the
    CLI starts it while the server's modules import, :mod:`acme_ca.main.early_cluster`).
    """
    if started is None:
        embedded = EmbeddedPostgres(data_root, throwaway=True)
        await asyncio.to_thread(embedded.start)
    else:
        embedded, _ = await asyncio.wrap_future(started)
    base = embedded.local_dsn  # its Unix socket, as database_dsn's
    try:
        await _create_database(base, EPHEMERAL_TEMPLATE, template=None, exist_ok=True)
        await migrate(_dsn_for(base, EPHEMERAL_TEMPLATE))
        name = f"acme_ca_run_{secrets.token_hex(8)}"
        spare = await _claim_spare(base, name)
        if not spare:
            await _create_database(base, name, template=EPHEMERAL_TEMPLATE)
        log.info("database.ephemeral_created", database=name, data_root=str(data_root), spare=spare)
        try:
            yield _dsn_for(base, name)
        finally:
            conn = await asyncpg.connect(base)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
            log.info("database.ephemeral_dropped", database=name)
            await _make_spare(base)
    finally:
        await asyncio.to_thread(embedded.stop)


def _dsn_for(dsn: str, name: str) -> str:
    """The same server's DSN for database ``name`` (the embedded DSNs end in ``/<db>``)."""
    return dsn.rsplit("/", 1)[0] + "/" + name


async def _create_database(
    dsn: str, name: str, *, template: str | None, exist_ok: bool = False
) -> None:
    """CREATE DATABASE, retried while a concurrent run still holds the template open."""
    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    conn = await asyncpg.connect(dsn)
    try:
        for attempt in range(20):
            try:
                await conn.execute(sql)
            except asyncpg.DuplicateDatabaseError:
                if exist_ok:
                    return
                raise
            except asyncpg.ObjectInUseError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.1)
            else:
                return
    finally:
        await conn.close()


async def _claim_spare(dsn: str, name: str) -> bool:
    """Rename the spare (:data:`EPHEMERAL_SPARE`) to ``name``; False when there is none (first
    run, or a concurrent run on the same home took it)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'ALTER DATABASE "{EPHEMERAL_SPARE}" RENAME TO "{name}"')
    except (asyncpg.InvalidCatalogNameError, asyncpg.ObjectInUseError):
        return False
    finally:
        await conn.close()
    return True


async def _make_spare(dsn: str) -> None:
    """Copy the template to :data:`EPHEMERAL_SPARE` for the next run; at exit, so a failure
    (another run made it first, the template in use) is logged and the next run copies."""
    try:
        await _create_database(dsn, EPHEMERAL_SPARE, template=EPHEMERAL_TEMPLATE, exist_ok=True)
    except (asyncpg.PostgresError, OSError) as e:
        log.warning("database.ephemeral_spare_failed", error=str(e))


async def migrate(dsn: str) -> list[int]:
    """Apply the schema over one short-lived connection."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_schema(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def operator_pool(settings: DatabaseSettings) -> AsyncIterator[asyncpg.Pool]:
    """The CA's database for a one-shot operator command (the embedded one found or started),
    schema current, one connection; closed on exit."""
    async with database_dsn(settings) as dsn:
        await migrate(dsn)
        pool = await create_pool(dsn, max_size=1)
        try:
            yield pool
        finally:
            await pool.close()
