"""Deeply nested JSON is a client error (RFC 8555 §6.2, §6.7 ``malformed``), never a 500.

``json.loads`` recurses per nesting level: before :mod:`acme_ca.acme.json_limits`, a 2 KB
body of a thousand ``[`` raised ``RecursionError`` in ``acme/jws.py``.  The depth is now
measured before parsing, in the request body, the protected header and the payload alike.
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.json_limits import MAX_JSON_DEPTH, json_depth_exceeds, loads_limited
from acme_ca.acme.problems import AcmeError
from tests.fixtures import CaFactory
from tests.support.jws import JwsClient, make_jws
from tests.support.problems import assert_problem

DEPTHS = [100, 100_000]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
async def roomy_client(ca_factory: CaFactory, session: aiohttp.ClientSession) -> JwsClient:
    """A registered client of a CA whose body limit lets a 100,000-deep body reach the
    parser (at the default 50 kB it is refused earlier, with 413)."""
    ca = await ca_factory.start(max_request_bytes=2_000_000)
    c = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await c.load_directory()
    assert (await c.register(contact=["mailto:ops@example.test"])).status == 201
    return c


@pytest.mark.parametrize("depth", DEPTHS)
async def test_rfc8555_6_7_nested_json_body_is_malformed(
    roomy_client: JwsClient, depth: int
) -> None:
    reply = await roomy_client.post_raw(roomy_client.kid or "", _nested(depth))
    assert_problem(reply, 400, "malformed")
    assert "deeper" in reply.body["detail"]


@pytest.mark.parametrize("depth", DEPTHS)
async def test_rfc8555_6_2_nested_json_protected_header_is_malformed(
    roomy_client: JwsClient, depth: int
) -> None:
    c = roomy_client
    jws = make_jws(c.key, None, url=c.kid or "", nonce=await c.nonce(), kid=c.kid)
    header = json.dumps({"alg": "ES256", "nonce": await c.nonce(), "url": c.kid, "kid": c.kid})
    jws["protected"] = b64url_encode(f'{header[:-1]}, "x": {_nested(depth)}}}'.encode())
    reply = await c.post_raw(c.kid or "", json.dumps(jws))
    assert_problem(reply, 400, "malformed")
    assert "protected header" in reply.body["detail"]


@pytest.mark.parametrize("depth", DEPTHS)
async def test_rfc8555_6_2_nested_json_payload_is_malformed(
    roomy_client: JwsClient, depth: int
) -> None:
    """A correctly signed JWS whose payload nests too deep: the account update is refused."""
    c = roomy_client
    reply = await c.post(c.kid or "", f'{{"contact": {_nested(depth)}}}'.encode())
    assert_problem(reply, 400, "malformed")
    assert "payload" in reply.body["detail"]


async def test_rfc8555_6_7_huge_nested_body_over_the_limit_is_413_malformed(
    client_at_defaults: JwsClient,
) -> None:
    """At the default body limit a 100,000-deep body is refused before it is read whole."""
    reply = await client_at_defaults.post_raw(client_at_defaults.kid or "", _nested(100_000))
    assert_problem(reply, 413, "malformed")


@pytest.fixture
async def client_at_defaults(ca_factory: CaFactory, session: aiohttp.ClientSession) -> JwsClient:
    ca = await ca_factory.start()
    c = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await c.load_directory()
    assert (await c.register(contact=["mailto:ops@example.test"])).status == 201
    return c


def test_depth_counts_brackets_outside_strings_only() -> None:
    deep_string = json.dumps({"a": "[" * 1000 + '\\"{' * 50}).encode()
    assert not json_depth_exceeds(deep_string)
    assert loads_limited(deep_string, "x") == json.loads(deep_string)
    at_limit = _nested(MAX_JSON_DEPTH).encode()
    assert not json_depth_exceeds(at_limit)
    assert json_depth_exceeds(_nested(MAX_JSON_DEPTH + 1).encode())
    wide = ("[" + ",".join(["[]"] * 10_000) + "]").encode()
    assert not json_depth_exceeds(wide)


def test_unterminated_string_never_hides_depth() -> None:
    with pytest.raises(AcmeError) as raised:
        loads_limited(b'"' + _nested(100_000).encode(), "body")
    assert raised.value.problem.short_type == "malformed"
