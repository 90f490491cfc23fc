"""What serve and worker meet while a Patroni cluster fails over (issue 17 item 1), on a real
PostgreSQL: the errors asyncpg raises then count as a database outage (503 with
``Retry-After``, never a 500), and a pooled connection whose protocol state broke is thrown
away instead of failing the next requests too. The failover itself is
``integration/test_patroni.py``."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from acme_ca.ca.deferrals import release_when_database_back
from acme_ca.clock import SystemClock
from acme_ca.db.accounts import AccountRepository
from acme_ca.db.errors import database_unavailable
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.orders import OrderRepository
from acme_ca.db.pool import create_pool
from acme_ca.liveness import holder_name
from acme_ca.main.app import STORAGE, TASKS, VALIDATOR
from acme_ca.ra.challenges import ChallengeAuthority
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.wfe.services import FRONT_END
from tests.fixtures import RunningCa
from tests.support.orders import Subscriber
from tests.support.relay import relay_to
from tests.support.worker import build_csr, insert_ready_order


async def test_no_read_write_host_in_a_multi_host_url_is_a_database_outage(dsn: str) -> None:
    """Every host up but none the primary (a promotion in progress): asyncpg raises
    ``TargetServerAttributeNotMatched``, not a connection error; it must be a 503."""
    parts = urlsplit(dsn)
    creds, host = parts.netloc.rsplit("@", 1)
    # The one host refuses writes by default, as a standby does (reported to the client at
    # start-up, which is what target_session_attrs=read-write checks).
    query = "target_session_attrs=read-write&default_transaction_read_only=on"
    read_only = urlunsplit(parts._replace(netloc=f"{creds}@{host},{host}", query=query))
    with pytest.raises(asyncpg.TargetServerAttributeNotMatched) as raised:
        await asyncpg.connect(read_only)
    assert database_unavailable(raised.value)
    writable = urlunsplit(parts._replace(query="target_session_attrs=read-write"))
    conn = await asyncpg.connect(writable)
    try:
        assert await conn.fetchval("SELECT NOT pg_is_in_recovery()")
    finally:
        await conn.close()


async def test_a_connection_whose_protocol_broke_is_terminated_not_pooled(dsn: str) -> None:
    """An ``InternalClientError`` inside ``acquire()`` (asyncpg's "cannot switch to state N"
    after the server died mid-operation) terminates that connection; it is an outage for the
    client (503), and the pool's next connection works."""
    pool = await create_pool(dsn, max_size=1)
    try:
        with pytest.raises(asyncpg.InternalClientError) as raised:
            async with pool.acquire() as conn:
                backend = await conn.fetchval("SELECT pg_backend_pid()")
                raise asyncpg.InternalClientError(
                    "cannot switch to state 12; another operation (2) is in progress"
                )
        assert database_unavailable(raised.value)
        async with pool.acquire() as fresh:
            assert await fresh.fetchval("SELECT pg_backend_pid()") != backend
            # The broken one's session ends (its socket closed), polled for a few seconds.
            for _ in range(100):
                gone = not await fresh.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend
                )
                if gone:
                    break
                await asyncio.sleep(0.05)
            assert gone, "the broken connection was not terminated"
        # Other errors leave the connection in the pool.
        with pytest.raises(asyncpg.UndefinedTableError):
            async with pool.acquire() as conn:
                kept = await conn.fetchval("SELECT pg_backend_pid()")
                await conn.execute("SELECT * FROM no_such_table")
        assert await pool.fetchval("SELECT pg_backend_pid()") == kept
    finally:
        await pool.close()


async def test_a_job_that_met_a_database_outage_is_claimable_once_the_database_is_back(
    dsn: str,
) -> None:
    """A worker whose job failed on a database outage (a restart, a failover) hands its lease
    back as soon as the database answers again: the job resumes at its recorded step at once,
    not when the 30 s lease lapses. The outage is real: a relay in front of PostgreSQL, cut
    for a second."""
    pool = await create_pool(dsn, max_size=2)
    names = ["outage.failover.example.com"]
    jobs = IssuanceRepository(pool)
    lease = timedelta(seconds=30)
    try:
        account_id, order_id = await insert_ready_order(pool, names)
        assert await jobs.enqueue(
            order_id=order_id,
            account_id=account_id,
            csr_der=build_csr(names, "ec"),
            names=names,
            issuer="dv-ecc",
            now=datetime.now(UTC),
        )
        job = await jobs.claim("host:1:worker", now=datetime.now(UTC), lease=lease)
        assert job is not None
        assert await jobs.claim("host:2:other", now=datetime.now(UTC), lease=lease) is None
        async with relay_to(dsn) as relay:
            relayed = await create_pool(relay.dsn(dsn), max_size=1, acquire_timeout=0.5)
            try:
                await relay.cut()
                started = time.monotonic()
                back = asyncio.create_task(
                    release_when_database_back(
                        IssuanceRepository(relayed), SystemClock(), "host:1:worker", job, lease
                    )
                )
                await asyncio.sleep(1.0)
                assert not back.done(), "released while the database was away"
                await relay.start()  # the same port: the database is back
                assert await asyncio.wait_for(back, 18)
                # Far sooner than the 30 s lease (the loop retries every 0.5 s).
                assert time.monotonic() - started < 20
            finally:
                relayed.terminate()
        again = await jobs.claim("host:2:other", now=datetime.now(UTC), lease=lease)
        assert again is not None and again.id == job.id and again.step == job.step
        # Not ours any more: nothing to release.
        assert not await release_when_database_back(
            jobs, SystemClock(), "host:1:worker", job, lease
        )
    finally:
        await pool.close()


async def test_a_validation_that_met_a_database_outage_runs_again_once_the_database_is_back(
    dsn: str, va_ca: RunningCa, sub: Subscriber, challsrv: ChallengeTestServer
) -> None:
    """The process validating a challenge meets a database outage (a failover): it still
    holds the challenge, so it runs the validation again as soon as the database answers,
    instead of leaving it to another process after the 30 s lease. Real outage: the
    validating authority reaches PostgreSQL through a relay that is cut for a second."""
    fe = va_ca.app[FRONT_END]
    storage = va_ca.app[STORAGE]
    lease = timedelta(seconds=30)
    reply = await sub.new_order("outage-validation.example.com")
    authz = (await sub.get(reply.body["authorizations"][0])).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    challsrv.store.add_http01(challenge["token"], sub.key_authorization(challenge["token"]))
    challenge_id = int(challenge["url"].rsplit("/", 1)[1])
    assert await storage.orders.start_challenge(challenge_id, now=datetime.now(UTC), lease=lease)
    async with relay_to(dsn) as relay:
        relayed = await create_pool(relay.dsn(dsn), max_size=2, acquire_timeout=0.5)
        try:
            authority = ChallengeAuthority(
                OrderRepository(relayed),
                AccountRepository(relayed),
                va_ca.app[VALIDATOR],
                va_ca.app[TASKS],
                fe.clock,
                account_uri=fe.urls.account,
                reuse_period=fe.orders.reuse_period,
                lease=lease,
            )
            await relay.cut()
            started = time.monotonic()
            running = asyncio.create_task(authority.run_validation(challenge_id))
            await asyncio.sleep(1.0)
            assert not running.done(), "the validation gave up while the database was away"
            await relay.start()
            await asyncio.wait_for(running, 18)
            # Far sooner than the 30 s lease (the validation retries every 0.5 s).
            assert time.monotonic() - started < 20
        finally:
            relayed.terminate()
    assert (await sub.wait_order(reply.headers["Location"]))["status"] == "ready"


async def test_a_challenge_started_while_the_answer_was_lost_is_run_by_its_holder_at_once(
    dsn: str, va_ca: RunningCa, sub: Subscriber, challsrv: ChallengeTestServer
) -> None:
    """A challenge POST whose start committed (on the synchronous standby too) but whose
    answer was lost to the primary's death gets a 503 and spawns no validation: the
    challenge is processing under this live process's lease with nothing running it. The
    next scan runs it at once instead of after the 30 s lease; one just started (its
    validation about to be spawned) is left alone."""
    fe = va_ca.app[FRONT_END]
    holder = holder_name()
    ids = []
    for name, started_ago in (("orphan-here", 10), ("just-started", 0)):
        reply = await sub.new_order(f"{name}.failover.example.com")
        authz = (await sub.get(reply.body["authorizations"][0])).body
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        challsrv.store.add_http01(challenge["token"], sub.key_authorization(challenge["token"]))
        ids.append((reply.headers["Location"], int(challenge["url"].rsplit("/", 1)[1])))
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE challenges SET status = 'processing', attempts = 1, lease_holder = $2, "
                "lease_until = now() + interval '30 seconds' - make_interval(secs => $3) "
                "WHERE id = $1",
                ids[-1][1],
                holder,
                float(started_ago),
            )
        finally:
            await conn.close()
    assert await fe.challenges.recover_stale() == 1
    orphan_url, _ = ids[0]
    assert (await sub.wait_order(orphan_url))["status"] == "ready"
    _, kept_id = ids[1]
    status = await va_ca.app[STORAGE].pool.fetchval(
        "SELECT status FROM challenges WHERE id = $1", kept_id
    )
    assert status == "processing"
