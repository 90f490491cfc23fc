"""Directory, newNonce and the headers every response carries (RFC 8555 §6.5, §7.1, §7.2)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fixtures import CaFactory, RunningCa
from tests.support.jws import JwsClient


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_acme_dir_1_lists_required_resources(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    async with session.get(ca.directory_url) as resp:
        assert resp.status == 200
        body = await resp.json()
    for name in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
        assert body[name].startswith(ca.base_url + "/acme/")
    assert "newAuthz" not in body


async def test_acme_dir_2_meta(ca_factory: CaFactory, session: aiohttp.ClientSession) -> None:
    ca = await ca_factory.start(external_account_required=True, caa_identities=["jprs.jp"])
    async with session.get(ca.directory_url) as resp:
        meta = (await resp.json())["meta"]
    assert meta["caaIdentities"] == ["jprs.jp"]
    assert meta["externalAccountRequired"] is True
    assert meta["termsOfService"] == "https://jprs.jp/pubcert/info/repository/"
    assert meta["website"] == "https://jprs.jp/"


async def test_acme_nonce_4_head_and_get(ca: RunningCa, session: aiohttp.ClientSession) -> None:
    url = ca.base_url + "/acme/new-nonce"
    async with session.head(url) as head:
        assert head.status == 200
        assert head.headers["Cache-Control"] == "no-store"
        first = head.headers["Replay-Nonce"]
    async with session.get(url) as get:
        assert get.status == 204
        assert get.headers["Cache-Control"] == "no-store"
        second = get.headers["Replay-Nonce"]
    assert first != second
    assert "=" not in first and len(first) >= 22


async def test_acme_nonce_4_head_keeps_the_connection(ca: RunningCa) -> None:
    """HEAD newNonce says Content-Length: 0, so a client that does not special-case HEAD
    (aiohttp's) reuses the connection instead of opening one (a TLS handshake) per nonce."""
    opened = 0

    async def on_connection(*_: object) -> None:
        nonlocal opened
        opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connection)
    connector = aiohttp.TCPConnector(ssl=False, limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        for _ in range(3):
            async with session.head(ca.base_url + "/acme/new-nonce") as head:
                assert head.status == 200
                assert head.headers["Content-Length"] == "0"
                assert await head.read() == b""
    assert opened == 1


async def test_acme_link_1_index_on_resources(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    async with session.head(ca.base_url + "/acme/new-nonce") as resp:
        assert f'<{ca.directory_url}>;rel="index"' in resp.headers.getall("Link")
    async with session.get(ca.directory_url) as resp:
        assert "Link" not in resp.headers


async def test_every_advertised_url_answers_with_protocol_response(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """No advertised-but-missing endpoint: each resource answers a signed POST (or the GET/HEAD
    of newNonce) with an ACME response, and an unsigned GET with 405 malformed."""
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    directory = await client.load_directory()
    await client.register()
    for name, url in directory.items():
        if name == "meta":
            continue
        if name == "newNonce":
            async with session.get(url) as resp:
                assert resp.status == 204
            continue
        reply = await client.post(url, {}, use_jwk=name == "newAccount")
        assert reply.status != 404, (name, reply.body)
        assert reply.status < 500, (name, reply.body)
        assert "Replay-Nonce" in reply.headers, name
        async with session.get(url) as resp:
            assert resp.status == 405, name
            assert resp.content_type == "application/problem+json"
            assert (await resp.json())["type"] == "urn:ietf:params:acme:error:malformed"
            assert "Replay-Nonce" in resp.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/path", 404),
        ("POST", "/no/such/path", 404),
        ("GET", "/acme/new-account", 405),
        ("PUT", "/directory", 405),
        ("GET", "/acme/acct/1", 405),
    ],
    ids=["get-unknown", "post-unknown", "get-newaccount", "put-directory", "get-account"],
)
async def test_errors_are_problem_documents_with_nonce(
    ca: RunningCa, session: aiohttp.ClientSession, method: str, path: str, status: int
) -> None:
    async with session.request(method, ca.base_url + path) as resp:
        assert resp.status == status
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
        assert body["type"] == "urn:ietf:params:acme:error:malformed"
        assert body["status"] == status
        assert resp.headers["Replay-Nonce"]
        assert resp.headers["X-Request-ID"]
