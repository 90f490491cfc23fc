"""Load shedding (issue 17 item 3): bounded requests in flight, bounded database waits, a
database outage answered 503, idle and slow-header connections capped and timed out.

Every 503 is ``serverInternal`` with ``Retry-After`` (RFC 8555 §6.6, §6.7; RFC 9110
§15.6.4).  The database outage is a real one: the front end reaches PostgreSQL through a
TCP relay the test cuts and restores, and recovers without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.config import Config
from acme_ca.main.app import STORAGE, create_app
from acme_ca.wfe.middleware.load_shedding import LOAD_SHEDDER, GuardedRunner
from tests.fixtures import CaFactory, free_socket
from tests.support.jws import JwsClient
from tests.support.problems import assert_problem
from tests.support.relay import Relay, relay_to


def _assert_shed(status: int, headers: object, body: dict[str, object]) -> None:
    assert status == 503
    assert body["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert headers["Retry-After"] == "2"  # type: ignore[index]


async def _slow_body(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose headers are complete and whose body never comes: a request in flight."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /acme/new-account HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/jose+json\r\nContent-Length: 1000\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def test_rfc8555_6_6_requests_above_the_in_flight_bound_get_503_at_once(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    ca = await ca_factory.start(max_requests_in_flight=2)
    port = int(ca.base_url.rsplit(":", 1)[1])
    shedder = ca.app[LOAD_SHEDDER]
    held = [await _slow_body(port) for _ in range(2)]
    deadline = time.monotonic() + 5
    while shedder.in_flight < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert shedder.in_flight == 2
    started = time.monotonic()
    async with session.get(ca.directory_url) as resp:
        _assert_shed(resp.status, resp.headers, await resp.json(content_type=None))
        assert "Replay-Nonce" in resp.headers
    # At once, not after the held requests (which never end): a generous bound.
    assert time.monotonic() - started < 15, "shedding must answer at once"
    for _, writer in held:
        writer.close()
    deadline = time.monotonic() + 5
    while shedder.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    async with session.get(ca.directory_url) as resp:
        assert resp.status == 200
    assert shedder.shed == 1


async def test_rfc8555_6_6_database_pool_wait_is_bounded(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    """Every pooled connection busy for longer than the acquire timeout: 503, not a hang.
    (Of the two connections, the order-completion listener holds one for good.)"""
    ca = await ca_factory.start(database_pool_size=2, database_acquire_timeout_seconds=1)
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    pool = ca.app[STORAGE].pool
    async with pool.acquire():
        started = time.monotonic()
        reply = await client.register(contact=["mailto:ops@example.test"])
        waited = time.monotonic() - started
    assert_problem(reply, 503, "serverInternal")
    assert reply.headers["Retry-After"] == "2"
    # Waited for the acquire timeout (1 s), then shed: not a hang behind the connection,
    # which stays held until the answer came.
    assert 0.9 < waited < 20
    assert (await client.register(contact=["mailto:ops@example.test"])).status == 201


@pytest.fixture
async def relay(dsn: str) -> AsyncIterator[Relay]:
    async with relay_to(dsn) as r:
        yield r


async def test_rfc8555_6_7_database_outage_is_503_server_internal_then_recovers(
    dsn: str, relay: Relay, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    parts = urlsplit(dsn)
    relayed = urlunsplit(
        parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{relay.port}")
    )
    factory = CaFactory(relayed, tmp_path)
    try:
        ca = await factory.start(database_acquire_timeout_seconds=2)
        client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
        await client.load_directory()
        assert (await client.register(contact=["mailto:ops@example.test"])).status == 201
        await relay.cut()
        started = time.monotonic()
        reply = await client.post(client.kid or "", None)
        assert time.monotonic() - started < 5
        assert_problem(reply, 503, "serverInternal")
        assert reply.headers["Retry-After"] == "2"
        assert "traceback" not in str(reply.body).lower()
        await relay.start()  # the same port: the pool reconnects, no restart
        deadline = time.monotonic() + 10
        while (reply := await client.post(client.kid or "", None)).status != 200:
            assert time.monotonic() < deadline, reply.body
            await asyncio.sleep(0.2)
    finally:
        await factory.close()


@pytest.fixture
async def guarded(dsn: str, tmp_path: Path) -> AsyncIterator[tuple[web.Application, int]]:
    """A front end behind the runner ``serve`` uses, with small connection bounds."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = replace(
        Config(),
        home=tmp_path / "home",
        plain_http=True,
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        max_connections=40,
        header_read_timeout_seconds=1,
        keepalive_timeout_seconds=2,
    ).validate()
    app = create_app(config, dsn)
    runner = GuardedRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield app, port
    finally:
        await runner.cleanup()


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), timeout) == b""
    except (TimeoutError, ConnectionError):
        return False


async def test_slow_header_connections_are_closed_and_a_client_still_served(
    guarded: tuple[web.Application, int], session: aiohttp.ClientSession
) -> None:
    app, port = guarded
    slow = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /directory HTTP/1.1\r\nHost: x\r\n")  # headers never end
        slow.append((reader, writer))
    async with session.get(f"http://127.0.0.1:{port}/directory") as resp:
        assert resp.status == 200
    closed = await asyncio.gather(*(_closed_by_server(r, 3.0) for r, _ in slow))
    assert all(closed), closed
    assert app[LOAD_SHEDDER].connections.header_timeouts >= 20


async def test_idle_connections_above_the_cap_close_the_oldest(
    guarded: tuple[web.Application, int], session: aiohttp.ClientSession
) -> None:
    app, port = guarded
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
    guard = app[LOAD_SHEDDER].connections
    async with session.get(f"http://127.0.0.1:{port}/directory") as resp:
        assert resp.status == 200
    assert guard.open_connections <= 40
    assert guard.evicted >= 60
    # The oldest went first: the first connections are closed, the newest are open.
    assert await _closed_by_server(idle[0][0], 1.0)
    for _, writer in idle:
        writer.close()


def test_bounds_are_settable_by_flags() -> None:
    from acme_ca.cli import _overrides, _parser
    from acme_ca.config import load_config

    flags = ["--max-requests-in-flight", "7", "--max-connections", "50"]
    serve = _parser().parse_args(["serve", *flags, "--header-read-timeout", "3"])
    config = load_config(None, overrides=_overrides(serve))
    assert (config.requests_in_flight_limit, config.max_connections) == (7, 50)
    assert config.header_read_timeout_seconds == 3
    worker = _parser().parse_args(["worker", "--issuance-lease-seconds", "12"])
    assert load_config(None, overrides=_overrides(worker)).issuance_lease_seconds == 12
    assert load_config(None).requests_in_flight_limit == 16 * Config().database_pool_size


async def test_multi_host_database_url_reaches_the_writable_server(
    dsn: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """``database_url`` may list several hosts (libpq multi-host, as in front of a Patroni
    cluster): with ``target_session_attrs=read-write`` the pool skips a host that is down and
    uses the one that accepts writes, for every new connection."""
    parts = urlsplit(dsn)
    creds, real = parts.netloc.rsplit("@", 1)
    with free_socket() as dead:  # bound, never listening: connections are refused
        down = f"127.0.0.1:{dead.getsockname()[1]}"
        netloc = f"{creds}@{down},{real}"
        multi = urlunsplit(parts._replace(netloc=netloc, query="target_session_attrs=read-write"))
        factory = CaFactory(multi, tmp_path)
        try:
            ca = await factory.start()
            client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
            await client.load_directory()
            assert (await client.register(contact=["mailto:ops@example.test"])).status == 201
        finally:
            await factory.close()
