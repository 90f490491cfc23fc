"""CONC-1: a POST to a challenge whose validation is in flight gets 409 with Retry-After (as
Boulder answers), so exactly one validation runs; a POST to a challenge already valid or
invalid is answered with its current state.

The validation is held in flight by an http-01 target of the test's own that answers only
when told to, so the race is not left to timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest

from acme_ca.acme.problems import AcmeError
from acme_ca.main.app import STORAGE
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.wfe.services import FRONT_END
from tests.fixtures import CaFactory, RunningCa
from tests.support.orders import Subscriber, subscriber, validation_config
from tests.support.problems import ERR


@dataclass
class HeldTarget:
    """An http-01 server that holds every request until ``release`` is set."""

    port: int = 0
    requests: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    body: bytes = b""


@pytest.fixture
async def held() -> AsyncIterator[HeldTarget]:
    target = HeldTarget()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        target.requests.append(line.decode().split(" ")[1])
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        await target.release.wait()
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(target.body)}\r\n\r\n"
        writer.write(head.encode() + target.body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    target.port = server.sockets[0].getsockname()[1]
    try:
        yield target
    finally:
        target.release.set()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def held_tls(held: HeldTarget) -> AsyncIterator[int]:
    """A tls-alpn-01 port that accepts and says nothing until ``held.release``, then hangs
    up (the validation fails then): the port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await held.release.wait()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def conflict_ca(
    ca_factory: CaFactory, challsrv: ChallengeTestServer, held: HeldTarget, held_tls: int
) -> RunningCa:
    """A CA whose http-01 port is ``held`` and tls-alpn-01 port ``held_tls``, answering
    409s with Retry-After 2 and never waiting for a validation."""
    config = {**validation_config(challsrv), "http01_port": held.port, "tlsalpn01_port": held_tls}
    return await ca_factory.start(**config, challenge_wait_seconds=0, retry_after_seconds=2)


@pytest.fixture
async def sub(
    conflict_ca: RunningCa, challsrv: ChallengeTestServer, session: aiohttp.ClientSession
) -> Subscriber:
    return await subscriber(conflict_ca, session, challsrv)


async def http01_challenge(sub: Subscriber, name: str) -> dict[str, Any]:
    order = (await sub.new_order(name)).body
    authz = (await sub.get(order["authorizations"][0])).body
    challenge: dict[str, Any] = next(c for c in authz["challenges"] if c["type"] == "http-01")
    return challenge


async def validated(sub: Subscriber, challenge_url: str) -> dict[str, Any]:
    """The challenge once its validation is over: polled, as a client would, for 4 s."""
    for _ in range(200):
        now: dict[str, Any] = (await sub.get(challenge_url)).body
        if now["status"] != "processing":
            break
        await asyncio.sleep(0.02)
    return now


async def processing_events(dsn: str, challenge_url: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE event = 'challenge.processing'"
            " AND (details->>'challenge_id')::bigint = $1",
            int(challenge_url.rsplit("/", 1)[1]),
        )
    finally:
        await conn.close()
    return count


async def test_conc_1_racing_posts_one_validation_the_other_409(
    sub: Subscriber, held: HeldTarget, dsn: str
) -> None:
    """Two POSTs at once: one starts the validation (200 processing), the other gets 409
    with Retry-After; a third while it is still in flight gets 409 too; once released, one
    fetch was made and one validation recorded, and a POST then answers valid."""
    challenge = await http01_challenge(sub, "race.example.com")
    held.body = sub.key_authorization(challenge["token"]).encode()
    first, second = await asyncio.gather(
        sub.post(challenge["url"], {}), sub.post(challenge["url"], {})
    )
    replies = sorted([first, second], key=lambda r: r.status)
    assert [r.status for r in replies] == [200, 409], [r.body for r in replies]
    started, refused = replies
    assert started.body["status"] == "processing"
    assert refused.body["type"] == ERR + "malformed"
    assert "is already being validated" in refused.body["detail"]
    assert refused.headers["Retry-After"] == "2"
    third = await sub.post(challenge["url"], {})
    assert third.status == 409 and third.headers["Retry-After"] == "2"
    held.release.set()
    now = await validated(sub, challenge["url"])
    assert now["status"] == "valid", now
    assert len(held.requests) == 1, held.requests
    assert await processing_events(dsn, challenge["url"]) == 1
    again = await sub.post(challenge["url"], {})
    assert again.status == 200 and again.body["status"] == "valid"
    assert "Retry-After" not in again.headers


async def test_conc_1_post_to_invalid_challenge_answers_its_state(
    sub: Subscriber, held: HeldTarget, dsn: str
) -> None:
    """A POST to an invalid challenge answers it as it is, with its error; nothing re-runs."""
    challenge = await http01_challenge(sub, "refused-race.example.com")
    held.body = b"not-the-key-authorization"
    held.release.set()
    assert (await sub.post(challenge["url"], {})).status == 200
    now = await validated(sub, challenge["url"])
    assert now["status"] == "invalid"
    again = await sub.post(challenge["url"], {})
    assert again.status == 200 and again.body["status"] == "invalid"
    assert again.body["error"]["type"] == ERR + "incorrectResponse"
    assert len(held.requests) == 1
    assert await processing_events(dsn, challenge["url"]) == 1


async def test_conc_1_one_validation_per_authorization(
    sub: Subscriber, held: HeldTarget, dsn: str
) -> None:
    """Answering two challenges of one authorization at once (http-01 and tls-alpn-01, as a
    confused client might; both targets hold the validation until released, so whichever
    starts is still in flight when the other is decided): one starts, the other gets 409
    naming the one in flight, as Boulder's authorization-level processing flag answers; the
    other is never validated."""
    order = (await sub.new_order("both.example.com")).body
    authz = (await sub.get(order["authorizations"][0])).body
    by_type = {c["type"]: c for c in authz["challenges"]}
    http, alpn = by_type["http-01"], by_type["tls-alpn-01"]
    held.body = sub.key_authorization(http["token"]).encode()
    replies = await asyncio.gather(sub.post(http["url"], {}), sub.post(alpn["url"], {}))
    assert sorted(r.status for r in replies) == [200, 409], [r.body for r in replies]
    refused = next(r for r in replies if r.status == 409)
    assert refused.headers["Retry-After"] == "2"
    started = next(r for r in replies if r.status == 200)
    in_flight = http if started.body["url"] == http["url"] else alpn
    assert in_flight["type"] in refused.body["detail"]
    held.release.set()
    await validated(sub, in_flight["url"])
    counts = [await processing_events(dsn, c["url"]) for c in (http, alpn)]
    assert sorted(counts) == [0, 1], counts


async def test_conc_1_start_lost_to_a_sibling_now_over_is_answered_as_stored(
    conflict_ca: RunningCa, sub: Subscriber, dsn: str
) -> None:
    """A challenge POST decided on a read taken before a sibling challenge started and failed
    (serve reads the challenge in the nonce's round trip): the database refuses its start,
    and it is answered as a POST arriving after the failure is -- 400 ``malformed``, the
    authorization is invalid -- not 200 with the challenge still pending and nothing
    running (a CI run caught that answer when dns-01 failed between the two)."""
    order = (await sub.new_order("stale-read.example.com")).body
    authz = (await sub.get(order["authorizations"][0])).body
    by_type = {c["type"]: c for c in authz["challenges"]}
    http, dns = by_type["http-01"], by_type["dns-01"]
    storage = conflict_ca.app[STORAGE]
    http_id = int(http["url"].rsplit("/", 1)[1])
    stale = await storage.orders.get_challenge(http_id)
    assert stale is not None and stale[1].status == "pending"
    sub.srv.store.set_txt("_acme-challenge.stale-read.example.com", "not-the-digest")
    assert (await sub.post(dns["url"], {})).status == 200
    assert (await validated(sub, dns["url"]))["status"] == "invalid"
    account = await storage.accounts.get(stale[1].account_id)
    assert account is not None
    challenges = conflict_ca.app[FRONT_END].challenges
    with pytest.raises(AcmeError) as refused:
        await challenges.respond(account, http_id, found=stale)
    problem = refused.value.problem
    assert (problem.type, problem.status) == (ERR + "malformed", 400), problem
    assert "the authorization is invalid" in problem.detail
    late = await sub.post(http["url"], {})
    assert late.status == 400 and late.body["type"] == ERR + "malformed", late.body
    assert await processing_events(dsn, http["url"]) == 0
