"""One CRL publisher per issuer among several workers, elected by a PostgreSQL advisory lock
(issue 17 item 4, docs/ha.md): two status updaters on one database publish each CRL once;
when the holder's connection goes (its process died), the other takes over."""

from __future__ import annotations

import asyncio

import asyncpg

from acme_ca.db.advisory import AdvisoryLocks
from acme_ca.db.status import StatusRepository
from acme_ca.status.updater import StatusUpdater
from tests.support import status as status_support
from tests.support.status import StatusEnv

status_config = status_support.status_config
env = status_support.env


def _updater(env: StatusEnv, locks: AdvisoryLocks) -> StatusUpdater:
    return StatusUpdater(
        env.repository,
        env.issuers,
        env.linter,
        env.clock,
        env.settings,
        roots=env.roots,
        crl_lock=locks,
    )


async def _published(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT issuer, count(*) AS n FROM crls GROUP BY issuer")
    return {r["issuer"]: r["n"] for r in rows}


async def test_only_the_lock_holder_publishes_crls_and_a_standby_takes_over(
    env: StatusEnv, pool: asyncpg.Pool
) -> None:
    first, second = AdvisoryLocks(pool), AdvisoryLocks(pool)
    try:
        await _updater(env, first).publish_all_crls("test")
        once = await _published(pool)
        assert once and set(once.values()) == {1}
        await _updater(env, second).publish_all_crls("test")
        assert await _published(pool) == once, "the standby published too"
        await _updater(env, first).publish_all_crls("test")
        assert set((await _published(pool)).values()) == {2}, "the holder keeps publishing"

        await first.aclose()  # the holder's session ends, as when its process dies
        await _updater(env, second).publish_all_crls("test")
        assert set((await _published(pool)).values()) == {3}
    finally:
        await first.aclose()
        await second.aclose()


async def test_revocation_listener_lost_with_its_server_connection_reads_as_dead(
    pool: asyncpg.Pool, dsn: str
) -> None:
    """A database restart ends the updater's LISTEN connection and the pool takes the proxy
    back; ``alive`` must then say False (so the updater listens again) instead of raising
    InterfaceError on a connection released to the pool, which failed every poll."""
    listener = await StatusRepository(pool).listen_revocations(lambda _notice: None)
    assert listener.alive
    backend = await pool.fetchval(
        "SELECT pid FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    )
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("SELECT pg_terminate_backend($1)", backend)
    finally:
        await other.close()
    deadline = asyncio.get_running_loop().time() + 5
    while listener.alive:
        assert asyncio.get_running_loop().time() < deadline, "the lost listener still reads alive"
        await asyncio.sleep(0.05)
    await listener.aclose()
