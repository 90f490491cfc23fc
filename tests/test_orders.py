"""Orders, authorizations and challenges through the HTTP API (RFC 8555 §7.1.3-7.1.6,
§7.4, §7.5, §8), validated against real DNS and http-01 servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_encode
from acme_ca.clock import FixedClock
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.orders import OrderRepository
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.testsrv.store import CaaPolicy
from acme_ca.wfe.services import FRONT_END
from tests.fixtures import CaFactory, RunningCa
from tests.support.orders import Subscriber, subscriber, validation_config
from tests.support.problems import ERR, assert_problem
from tests.support.worker import build_csr


async def test_acme_ord_1_new_order_created(sub: Subscriber, va_ca: RunningCa) -> None:
    reply = await sub.new_order("www.example.com", "example.com")
    assert reply.status == 201
    order = reply.body
    assert reply.headers["Location"].startswith(va_ca.base_url + "/acme/order/")
    assert order["status"] == "pending"
    assert order["identifiers"] == [
        {"type": "dns", "value": "www.example.com"},
        {"type": "dns", "value": "example.com"},
    ]
    assert len(order["authorizations"]) == 2
    assert order["finalize"] == reply.headers["Location"] + "/finalize"
    expires = datetime.fromisoformat(order["expires"].replace("Z", "+00:00"))
    assert expires > datetime.now(UTC) + timedelta(days=6)
    authz = (await sub.get(order["authorizations"][0])).body
    assert authz["identifier"] == {"type": "dns", "value": "www.example.com"}
    assert {c["type"] for c in authz["challenges"]} == {"http-01", "dns-01", "tls-alpn-01"}
    assert "wildcard" not in authz
    for c in authz["challenges"]:
        assert c["status"] == "pending" and len(c["token"]) >= 22 and "=" not in c["token"]


async def test_acme_authz_2_wildcard_offers_dns01_only(sub: Subscriber) -> None:
    order = (await sub.new_order("*.example.com")).body
    authz = (await sub.get(order["authorizations"][0])).body
    assert authz["identifier"] == {"type": "dns", "value": "example.com"}
    assert authz["wildcard"] is True
    assert [c["type"] for c in authz["challenges"]] == ["dns-01"]


async def test_acme_ord_rejected_identifiers_are_subproblems(sub: Subscriber) -> None:
    reply = await sub.post(
        sub.directory["newOrder"],
        {
            "identifiers": [
                {"type": "dns", "value": "ok.example.com"},
                {"type": "dns", "value": "printer.local"},
                {"type": "dns", "value": "bad_name.example.com"},
            ]
        },
    )
    body = assert_problem(reply, 400, "rejectedIdentifier")
    assert [p["identifier"]["value"] for p in body["subproblems"]] == [
        "printer.local",
        "bad_name.example.com",
    ]


async def test_acme_ord_ip_identifier_rejected(sub: Subscriber) -> None:
    reply = await sub.post(
        sub.directory["newOrder"], {"identifiers": [{"type": "ip", "value": "192.0.2.1"}]}
    )
    assert reply.status == 400
    assert reply.body["subproblems"][0]["type"] == ERR + "unsupportedIdentifier"


async def test_acme_ord_2_not_before_cannot_be_honoured(sub: Subscriber) -> None:
    reply = await sub.post(
        sub.directory["newOrder"],
        {
            "identifiers": [{"type": "dns", "value": "a.example.com"}],
            "notBefore": "2030-01-01T00:00:00Z",
        },
    )
    assert_problem(reply, 400, "malformed")


async def test_acme_ord_max_names(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> None:
    ca = await ca_factory.start(max_names_per_order=2, **validation_config(challsrv))
    s = await subscriber(ca, session, challsrv)
    assert_problem(
        await s.new_order("a.example.com", "b.example.com", "c.example.com"), 400, "malformed"
    )


async def test_acme_chal_5_http01_to_ready(sub: Subscriber) -> None:
    reply = await sub.new_order("www.example.com")
    order_url = reply.headers["Location"]
    authz_url = reply.body["authorizations"][0]
    answered = await sub.answer(authz_url, "http-01")
    assert answered.status == 200
    assert answered.body["status"] in ("processing", "valid")
    assert f'<{authz_url}>;rel="up"' in answered.links
    if answered.body["status"] == "processing":
        assert answered.headers["Retry-After"]
    order = await sub.wait_order(order_url)
    assert order["status"] == "ready"
    authz = (await sub.get(authz_url)).body
    assert authz["status"] == "valid"
    (challenge,) = authz["challenges"]
    assert challenge["type"] == "http-01" and challenge["status"] == "valid"
    assert challenge["validated"].endswith("Z")
    assert challenge["validationRecord"], "validation record kept for the audit"
    assert challenge["validationRecord"][0]["brMethod"] == "3.2.2.4.19"
    assert challenge["validationRecord"][0]["brVersion"] == "2.2.6"
    assert datetime.fromisoformat(authz["expires"].replace("Z", "+00:00")) > datetime.now(UTC)


async def test_acme_chal_6_dns01_wildcard_to_ready(sub: Subscriber) -> None:
    reply = await sub.new_order("*.example.org", "example.org")
    for authz_url in reply.body["authorizations"]:
        await sub.answer(authz_url, "dns-01")
    assert (await sub.wait_order(reply.headers["Location"]))["status"] == "ready"


async def test_acme_chal_1_wrong_response_invalidates(sub: Subscriber) -> None:
    reply = await sub.new_order("www.example.net")
    authz_url = reply.body["authorizations"][0]
    authz = (await sub.get(authz_url)).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    sub.srv.store.add_http01(challenge["token"], "not-the-key-authorization")
    await sub.post(challenge["url"], {})
    order = await sub.wait_order(reply.headers["Location"])
    assert order["status"] == "invalid"
    assert order["error"]["type"].startswith(ERR)
    authz = (await sub.get(authz_url)).body
    assert authz["status"] == "invalid"
    failed = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert failed["status"] == "invalid" and failed["error"]["type"].startswith(ERR)


async def test_caa_7_other_ca_refuses_with_caa_problem(sub: Subscriber) -> None:
    sub.srv.store.add_caa("caa-denied.example.com", [CaaPolicy("issue", "letsencrypt.org")])
    reply = await sub.new_order("caa-denied.example.com")
    await sub.answer(reply.body["authorizations"][0], "dns-01")
    order = await sub.wait_order(reply.headers["Location"])
    assert order["status"] == "invalid"
    authz = (await sub.get(reply.body["authorizations"][0])).body
    failed = next(c for c in authz["challenges"] if c["type"] == "dns-01")
    assert failed["error"]["type"] == ERR + "caa"


async def test_caa_jprs_jp_permits(sub: Subscriber) -> None:
    sub.srv.store.add_caa("caa-ok.example.com", [CaaPolicy("issue", "jprs.jp")])
    reply = await sub.new_order("caa-ok.example.com")
    await sub.answer(reply.body["authorizations"][0], "dns-01")
    assert (await sub.wait_order(reply.headers["Location"]))["status"] == "ready"


async def test_authz_reuse_valid_authz_makes_new_order_ready(sub: Subscriber) -> None:
    first = await sub.new_order("reuse.example.com")
    await sub.answer(first.body["authorizations"][0], "http-01")
    assert (await sub.wait_order(first.headers["Location"]))["status"] == "ready"
    second = await sub.new_order("reuse.example.com")
    assert second.body["authorizations"] == first.body["authorizations"]
    assert second.body["status"] == "ready"


async def test_authz_reuse_pending_authz_not_piled_up(sub: Subscriber) -> None:
    first = (await sub.new_order("pending.example.com")).body
    second = (await sub.new_order("pending.example.com")).body
    assert first["authorizations"] == second["authorizations"]


async def test_authz_reuse_not_across_accounts(
    sub: Subscriber,
    va_ca: RunningCa,
    session: aiohttp.ClientSession,
    challsrv: ChallengeTestServer,
) -> None:
    other = await subscriber(va_ca, session, challsrv)
    mine = (await sub.new_order("shared.example.com")).body
    theirs = (await other.new_order("shared.example.com")).body
    assert mine["authorizations"] != theirs["authorizations"]


async def test_acme_authz_3_deactivation_invalidates_order(sub: Subscriber) -> None:
    reply = await sub.new_order("deact.example.com")
    authz_url = reply.body["authorizations"][0]
    deactivated = await sub.post(authz_url, {"status": "deactivated"})
    assert deactivated.status == 200 and deactivated.body["status"] == "deactivated"
    assert (await sub.get(reply.headers["Location"])).body["status"] == "invalid"
    assert_problem(await sub.post(authz_url, {"status": "deactivated"}), 400, "malformed")


async def test_acme_authz_3_deactivation_lost_to_a_racing_one_names_the_stored_status(
    sub: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deactivation read as pending while a racing request deactivated it first: the
    conditional update refuses it, and the 400 names the status stored now, not the one read."""
    reply = await sub.new_order("deact-race.example.com")
    authz_url = reply.body["authorizations"][0]
    real = OrderRepository.deactivate_authorization

    async def raced(self: OrderRepository, authz_id: int, now: datetime) -> bool:
        assert await real(self, authz_id, now), "the racing request deactivates it"
        return await real(self, authz_id, now)

    monkeypatch.setattr(OrderRepository, "deactivate_authorization", raced)
    refused = await sub.post(authz_url, {"status": "deactivated"})
    assert_problem(refused, 400, "malformed")
    assert "is deactivated cannot be deactivated" in refused.body["detail"], refused.body


async def test_acme_get_2_other_accounts_resources_not_found(
    sub: Subscriber,
    va_ca: RunningCa,
    session: aiohttp.ClientSession,
    challsrv: ChallengeTestServer,
) -> None:
    reply = await sub.new_order("mine.example.com")
    other = await subscriber(va_ca, session, challsrv)
    assert_problem(await other.get(reply.headers["Location"]), 404, "malformed")
    assert_problem(await other.get(reply.body["authorizations"][0]), 404, "malformed")


async def test_acme_ord_3_order_expires(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> None:
    clock = FixedClock(datetime.now(UTC))
    ca = await ca_factory.start(clock=clock, **validation_config(challsrv))
    s = await subscriber(ca, session, challsrv)
    reply = await s.new_order("late.example.com")
    clock.advance(timedelta(days=8))
    order = (await s.get(reply.headers["Location"])).body
    assert order["status"] == "invalid"
    authz = (await s.get(reply.body["authorizations"][0])).body
    assert authz["status"] == "expired"


async def test_acme_account_orders_list_shows_order(sub: Subscriber) -> None:
    reply = await sub.new_order("listed.example.com")
    account = (await sub.post(sub.kid or "", None)).body
    listed = (await sub.get(account["orders"])).body
    assert reply.headers["Location"] in listed["orders"]


async def test_validation_resumes_after_crash(
    dsn: str,
    sub: Subscriber,
    va_ca: RunningCa,
    challsrv: ChallengeTestServer,
    tmp_path: Any,
) -> None:
    """A challenge left 'processing' by a dead process (lease expired) is validated again by
    any live process, instead of staying stuck."""
    reply = await sub.new_order("crash.example.com")
    authz = (await sub.get(reply.body["authorizations"][0])).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    challsrv.store.add_http01(challenge["token"], sub.key_authorization(challenge["token"]))
    conn = await asyncpg.connect(dsn)
    try:
        challenge_id = int(challenge["url"].rsplit("/", 1)[1])
        await conn.execute(
            "UPDATE challenges SET status = 'processing', attempts = 1, "
            "lease_until = now() - interval '1 minute' WHERE id = $1",
            challenge_id,
        )
    finally:
        await conn.close()
    recovered = await va_ca.app[FRONT_END].challenges.recover_stale()
    assert recovered == 1
    assert (await sub.wait_order(reply.headers["Location"]))["status"] == "ready"


# ------------------------------------------------------------------ answers that wait


async def _waiting_subscriber(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> Subscriber:
    """A subscriber of a CA whose challenge POST waits up to the most allowed (30 s) for the
    validation it starts: the wait ends when the validation does, so a quick one costs no
    more, and the answer is final even when a loaded machine makes it take seconds."""
    ca = await ca_factory.start(challenge_wait_seconds=30, **validation_config(challsrv))
    return await subscriber(ca, session, challsrv)


async def test_acme_chal_1_quick_validation_is_answered_with_its_result(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> None:
    """challenge_wait_seconds: the POST that starts a quick validation answers with its
    outcome (valid, with `validated`), so the client need not poll; no Retry-After."""
    sub = await _waiting_subscriber(ca_factory, session, challsrv)
    reply = await sub.new_order("answered.example.com")
    answered = await sub.answer(reply.body["authorizations"][0], "http-01")
    assert answered.status == 200
    assert answered.body["status"] == "valid", answered.body
    assert answered.body["validated"].endswith("Z")
    assert "Retry-After" not in answered.headers


async def test_acme_chal_3_failed_validation_is_answered_invalid_with_its_error(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> None:
    sub = await _waiting_subscriber(ca_factory, session, challsrv)
    reply = await sub.new_order("refused.example.com")
    authz_url = reply.body["authorizations"][0]
    authz = (await sub.get(authz_url)).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    sub.srv.store.add_http01(challenge["token"], "not-the-key-authorization")
    answered = await sub.post(challenge["url"], {})
    assert answered.status == 200
    assert answered.body["status"] == "invalid", answered.body
    assert answered.body["error"]["type"] == ERR + "incorrectResponse"


async def _ready_order(sub: Subscriber, name: str) -> tuple[str, dict[str, Any]]:
    reply = await sub.new_order(name)
    await sub.answer(reply.body["authorizations"][0], "http-01")
    order = await sub.wait_order(reply.headers["Location"])
    assert order["status"] == "ready", order
    return reply.headers["Location"], order


def _csr_b64(name: str) -> str:
    return b64url_encode(build_csr([name]))


async def test_acme_ord_3_finalize_answers_once_the_worker_is_done(
    ca_factory: CaFactory,
    session: aiohttp.ClientSession,
    challsrv: ChallengeTestServer,
    pool: asyncpg.Pool,
) -> None:
    """finalize_wait_seconds: finalize holds its answer until the worker's NOTIFY that the
    order is done (here: given up on, the simplest outcome to produce by hand), and then
    answers with the order's final state instead of `processing`."""
    ca = await ca_factory.start(finalize_wait_seconds=30, **validation_config(challsrv))
    sub = await subscriber(ca, session, challsrv)
    order_url, order = await _ready_order(sub, "held.example.com")
    order_id = int(order_url.rsplit("/", 1)[1])
    finalizing = asyncio.create_task(
        sub.post(order["finalize"], {"csr": _csr_b64("held.example.com")})
    )

    jobs = IssuanceRepository(pool)
    job = None
    for _ in range(200):
        job = await jobs.claim("test-worker", now=datetime.now(UTC), lease=timedelta(minutes=1))
        if job is not None:
            break
        await asyncio.sleep(0.05)
    assert job is not None and job.order_id == order_id
    assert not finalizing.done(), "finalize answered before the worker finished"
    problem = problems.server_internal("given up for the test")
    await jobs.fail(job, problem, {"reason": "test"}, datetime.now(UTC))

    # Well inside the 30 s wait: the NOTIFY, not the timeout, released the answer.
    answered = await asyncio.wait_for(finalizing, timeout=15)
    assert answered.status == 200
    assert answered.body["status"] == "invalid", answered.body
    assert answered.body["error"]["type"] == ERR + "serverInternal"
    assert "Retry-After" not in answered.headers


async def test_acme_ord_3_finalize_without_a_worker_answers_processing(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> None:
    """No worker finishes within finalize_wait_seconds: `processing` with Retry-After."""
    ca = await ca_factory.start(finalize_wait_seconds=1, **validation_config(challsrv))
    sub = await subscriber(ca, session, challsrv)
    _, order = await _ready_order(sub, "queued.example.com")
    answered = await sub.post(order["finalize"], {"csr": _csr_b64("queued.example.com")})
    assert answered.status == 200
    assert answered.body["status"] == "processing", answered.body
    assert int(answered.headers["Retry-After"]) > 0
