"""A validation in flight renews its lease (issue 17 item 4): a slow validation is never taken
over by another process, while a dead process's one is, within seconds of its lease lapsing.

The front end, PostgreSQL and the validator are real (against the challenge test server);
the validator is wrapped so the test can hold a validation open.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from datetime import UTC, datetime, timedelta

import asyncpg

from acme_ca.db.accounts import Account, AccountRepository
from acme_ca.db.authorizations import Authorization, Challenge
from acme_ca.db.migrate import apply_schema
from acme_ca.db.orders import OrderRepository
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.main.app import STORAGE, TASKS, VALIDATOR
from acme_ca.ra.challenges import ChallengeAuthority, Validator
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.va.records import ChallengeRequest, CheckResult
from acme_ca.wfe.services import FRONT_END
from tests.fixtures import RunningCa
from tests.support.migrations import create_schema_before
from tests.support.orders import Subscriber


class HeldValidator:
    """The CA's own validator, held at the start of each validation until ``go`` is set."""

    def __init__(self, inner: Validator) -> None:
        self._inner = inner
        self.go = asyncio.Event()
        self.entered = asyncio.Event()

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        self.entered.set()
        await self.go.wait()
        return await self._inner.validate(request)

    async def recheck_caa(
        self, identifier: str, wildcard: bool, account_uri: str, validation_method: str
    ) -> CheckResult:
        return await self._inner.recheck_caa(identifier, wildcard, account_uri, validation_method)


class _RenewalsCounted(OrderRepository):
    """The orders repository as it is, counting the challenge lease renewals that held;
    :meth:`reached` waits for the n-th.  The test waits on renewals, not on wall-clock time:
    a loaded machine delays them, never skips them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.renewals = 0
        self._held = asyncio.Event()

    async def renew_challenge_lease(
        self, challenge_id: int, *, now: datetime, lease: timedelta
    ) -> bool:
        held = await super().renew_challenge_lease(challenge_id, now=now, lease=lease)
        if held:
            self.renewals += 1
            self._held.set()
        return held

    async def reached(self, n: int, *, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while self.renewals < n:
                self._held.clear()
                await self._held.wait()


async def test_slow_validation_renews_its_lease_and_is_not_taken_over(
    va_ca: RunningCa, sub: Subscriber, challsrv: ChallengeTestServer
) -> None:
    fe = va_ca.app[FRONT_END]
    storage = va_ca.app[STORAGE]
    held = HeldValidator(va_ca.app[VALIDATOR])
    lease = timedelta(seconds=3)
    orders = _RenewalsCounted(storage.pool)
    authority = ChallengeAuthority(
        orders,
        storage.accounts,
        held,
        va_ca.app[TASKS],
        fe.clock,
        account_uri=fe.urls.account,
        reuse_period=fe.orders.reuse_period,
        lease=lease,
    )
    reply = await sub.new_order("slow-validation.example.com")
    authz = (await sub.get(reply.body["authorizations"][0])).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    challsrv.store.add_http01(challenge["token"], sub.key_authorization(challenge["token"]))
    challenge_id = int(challenge["url"].rsplit("/", 1)[1])
    assert await storage.orders.start_challenge(challenge_id, now=datetime.now(UTC), lease=lease)
    running = asyncio.create_task(authority.run_validation(challenge_id))
    try:
        await asyncio.wait_for(held.entered.wait(), timeout=20)
        # Three renewals, each a third of a lease after the last: the lease taken at the start
        # has lapsed, only the renewals keep the validation from being recovered.
        await orders.reached(3)
        assert await authority.recover_stale() == 0, "a renewed lease was taken over"
        lease_until = await storage.pool.fetchval(
            "SELECT lease_until FROM challenges WHERE id = $1", challenge_id
        )
        assert lease_until > datetime.now(UTC)
    finally:
        held.go.set()
    await asyncio.wait_for(running, timeout=20)
    assert (await sub.wait_order(reply.headers["Location"]))["status"] == "ready"
    assert not await storage.orders.renew_challenge_lease(
        challenge_id, now=datetime.now(UTC), lease=lease
    ), "a finished validation has no lease to renew"


async def _dead_pid() -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    return proc.pid


async def _processing_challenge(
    sub: Subscriber, challsrv: ChallengeTestServer, name: str, dsn: str, holder: str
) -> tuple[str, int]:
    """An order whose http-01 challenge another process is validating under a 10-minute
    lease held by ``holder``; returns the order URL and the challenge id."""
    reply = await sub.new_order(name)
    authz = (await sub.get(reply.body["authorizations"][0])).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    challsrv.store.add_http01(challenge["token"], sub.key_authorization(challenge["token"]))
    challenge_id = int(challenge["url"].rsplit("/", 1)[1])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE challenges SET status = 'processing', attempts = 1, lease_holder = $2, "
            "lease_until = now() + interval '10 minutes' WHERE id = $1",
            challenge_id,
            holder,
        )
    finally:
        await conn.close()
    return reply.headers["Location"], challenge_id


async def test_validation_of_a_dead_process_on_this_host_is_taken_over_at_once(
    dsn: str, va_ca: RunningCa, sub: Subscriber, challsrv: ChallengeTestServer
) -> None:
    """A validation whose holder (same host) is gone is run again at the next scan, though
    its lease has ten minutes left; a live holder's is left alone."""
    dead = f"{socket.gethostname()}:{await _dead_pid()}"
    alive = f"{socket.gethostname()}:{os.getppid()}"
    orphan, _ = await _processing_challenge(sub, challsrv, "orphan.example.com", dsn, dead)
    _, kept_id = await _processing_challenge(sub, challsrv, "kept.example.com", dsn, alive)
    assert await va_ca.app[FRONT_END].challenges.recover_stale() == 1
    assert (await sub.wait_order(orphan))["status"] == "ready"
    holder = await va_ca.app[STORAGE].pool.fetchval(
        "SELECT lease_holder FROM challenges WHERE id = $1", kept_id
    )
    assert holder == alive


async def test_migration_012_gives_challenges_a_lease_holder(postgres: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(postgres.create_database(f"m_{os.urandom(8).hex()}"))
    try:
        await create_schema_before(conn, 12)
        column = (
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'challenges' AND column_name = 'lease_holder'"
        )
        assert await conn.fetchval(column) == 0
        assert 12 in await apply_schema(conn)
        assert await conn.fetchval(column) == 1
        assert await apply_schema(conn) == [], "replaying the schema changes nothing"
    finally:
        await conn.close()


class _CountedOrders(OrderRepository):
    """The orders repository as it is, counting the challenge reads."""

    challenge_reads = 0

    async def get_challenge(self, challenge_id: int) -> tuple[Challenge, Authorization] | None:
        self.challenge_reads += 1
        return await super().get_challenge(challenge_id)


class _CountedAccounts(AccountRepository):
    """The accounts repository as it is, counting the reads by id."""

    reads = 0

    async def get(self, account_id: int) -> Account | None:
        self.reads += 1
        return await super().get(account_id)


async def test_started_validation_reads_nothing_the_request_read(
    dsn: str, va_ca: RunningCa, sub: Subscriber, challsrv: ChallengeTestServer
) -> None:
    """The validation a challenge POST starts runs on the challenge, authorization and
    account that request read (issue 20: two statements fewer), and the result is what a
    validation reading them itself records; one recovered from its lease reads them."""
    fe = va_ca.app[FRONT_END]
    storage = va_ca.app[STORAGE]
    orders, accounts = _CountedOrders(storage.pool), _CountedAccounts(storage.pool)
    authority = ChallengeAuthority(
        orders,
        accounts,
        va_ca.app[VALIDATOR],
        va_ca.app[TASKS],
        fe.clock,
        account_uri=fe.urls.account,
        reuse_period=fe.orders.reuse_period,
        wait_seconds=10,
    )
    reply = await sub.new_order("started-validation.example.com")
    authz = (await sub.get(reply.body["authorizations"][0])).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    challsrv.store.add_http01(challenge["token"], sub.key_authorization(challenge["token"]))
    challenge_id = int(challenge["url"].rsplit("/", 1)[1])
    account_id = await storage.pool.fetchval(
        "SELECT account_id FROM authorizations a JOIN challenges c ON c.authz_id = a.id "
        "WHERE c.id = $1",
        challenge_id,
    )
    account = await storage.accounts.get(account_id)
    assert account is not None
    done, _ = await authority.respond(account, challenge_id)
    assert done.status == "valid" and done.validation_records
    assert (orders.challenge_reads, accounts.reads) == (2, 0)  # respond's own, before and after
    assert (await sub.wait_order(reply.headers["Location"]))["status"] == "ready"

    # Recovered (no request behind it): the validation reads what is recorded.
    order_url, recovered = await _processing_challenge(
        sub, challsrv, "recovered-validation.example.com", dsn, "gone-1:1"
    )
    before = (orders.challenge_reads, accounts.reads)
    await authority.run_validation(recovered)
    assert (orders.challenge_reads, accounts.reads) == (before[0] + 1, before[1] + 1)
    assert (await sub.wait_order(order_url))["status"] == "ready"
