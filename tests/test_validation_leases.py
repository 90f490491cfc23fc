"""A validation in flight renews its lease (issue 17 item 4): a slow validation is never taken
over by another process, while a dead process's one is, within seconds of its lease lapsing.

The front end, PostgreSQL and the validator are real (against the challenge test server);
the validator is wrapped so the test can hold a validation open.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from acme_ca.main.app import STORAGE, TASKS, VALIDATOR
from acme_ca.ra.challenges import ChallengeAuthority, Validator
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.va.records import CheckResult
from acme_ca.wfe.services import FRONT_END
from tests.fixtures import RunningCa
from tests.support.orders import Subscriber


class HeldValidator:
    """The CA's own validator, held at the start of each validation until ``go`` is set."""

    def __init__(self, inner: Validator) -> None:
        self._inner = inner
        self.go = asyncio.Event()
        self.entered = asyncio.Event()

    async def validate(
        self,
        challenge_type: str,
        identifier: str,
        wildcard: bool,
        token: str,
        key_authorization: str,
        account_uri: str,
    ) -> CheckResult:
        self.entered.set()
        await self.go.wait()
        return await self._inner.validate(
            challenge_type, identifier, wildcard, token, key_authorization, account_uri
        )

    async def recheck_caa(
        self, identifier: str, wildcard: bool, account_uri: str, validation_method: str
    ) -> CheckResult:
        return await self._inner.recheck_caa(identifier, wildcard, account_uri, validation_method)


async def test_slow_validation_renews_its_lease_and_is_not_taken_over(
    va_ca: RunningCa, sub: Subscriber, challsrv: ChallengeTestServer
) -> None:
    fe = va_ca.app[FRONT_END]
    storage = va_ca.app[STORAGE]
    held = HeldValidator(va_ca.app[VALIDATOR])
    lease = timedelta(seconds=0.6)
    authority = ChallengeAuthority(
        storage.orders,
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
        await asyncio.wait_for(held.entered.wait(), timeout=10)
        await asyncio.sleep(4 * lease.total_seconds())
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
