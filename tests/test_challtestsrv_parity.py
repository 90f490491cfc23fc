"""pebble-challtestsrv parity, endpoint by endpoint: the same request bodies sent to the real
pebble-challtestsrv (Debian's ``pebble`` package, /usr/bin/pebble-challtestsrv) and to ours
get the same status and body, and the DNS and http-01 answers that follow are the same
(answer sections in order, TTLs included).

Both servers run on loopback ports for the whole module.  Pebble's defaults are global, so a
test that moves them puts them back; every other test uses names of its own.  Pebble answers
AAAA ``::1`` by default where we answer none (a deliberate difference, documented in
docs/testing-with-acme-ca.md), so it is started with ``-defaultIPv6 ""``.  Where Go's error
text cannot be matched (a JSON syntax error), status and content type are compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.config import ConfigError, load_config
from acme_ca.testsrv.server import BindAddress, ChallengeServerConfig, ChallengeTestServer
from acme_ca.va.http01 import Http01Validator
from acme_ca.va.tlsalpn01 import (
    ACME_IDENTIFIER_OID,
    ALPN_PROTOCOL,
    acme_identifier_value,
    judge_certificate,
)
from tests.fixtures import CaFactory
from tests.support.orders import subscriber, validation_config
from tests.support.ports import free_port as _free_port
from tests.support.va import loopback_ok, srv_dns

_DER = Encoding.DER
PEBBLE_CHALLTESTSRV = shutil.which("pebble-challtestsrv")
pytestmark = pytest.mark.skipif(
    PEBBLE_CHALLTESTSRV is None, reason="pebble-challtestsrv not installed (Debian: pebble)"
)


@dataclass(frozen=True)
class Endpoints:
    """Where one challenge test server listens."""

    management: str
    dns_port: int
    http01: str
    https01: str
    tlsalpn01_port: int


@dataclass(frozen=True)
class Answer:
    """What a management POST answered, in the parts pebble-challtestsrv fixes."""

    status: int
    content_type: str | None
    body: bytes


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, "pebble-challtestsrv exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"pebble-challtestsrv not listening on {port}")


@pytest.fixture(scope="module")
def pebble() -> Iterator[Endpoints]:
    assert PEBBLE_CHALLTESTSRV is not None
    dns_port, http01, https01, tlsalpn01, management = (_free_port() for _ in range(5))
    proc = subprocess.Popen(
        [
            PEBBLE_CHALLTESTSRV,
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-http01",
            f"127.0.0.1:{http01}",
            "-https01",
            f"127.0.0.1:{https01}",
            "-tlsalpn01",
            f"127.0.0.1:{tlsalpn01}",
            "-management",
            f"127.0.0.1:{management}",
            "-defaultIPv6",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in (management, http01, https01, tlsalpn01):
            _wait_listening(port, proc)
        yield Endpoints(
            f"http://127.0.0.1:{management}",
            dns_port,
            f"http://127.0.0.1:{http01}",
            f"https://127.0.0.1:{https01}",
            tlsalpn01,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def ours() -> AsyncIterator[Endpoints]:
    config = replace(
        ChallengeServerConfig.ephemeral(https01=True), tlsalpn01=BindAddress("127.0.0.1", 0)
    )
    async with ChallengeTestServer(config) as srv:
        assert srv.dns_port and srv.http01_port and srv.https01_port and srv.tlsalpn01_port
        yield Endpoints(
            srv.management_url,
            srv.dns_port,
            f"http://127.0.0.1:{srv.http01_port}",
            f"https://127.0.0.1:{srv.https01_port}",
            srv.tlsalpn01_port,
        )


@pytest.fixture
async def both(
    pebble: Endpoints, ours: Endpoints, session: aiohttp.ClientSession
) -> tuple[Endpoints, Endpoints]:
    return pebble, ours


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> Answer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url, data=data) as resp:
        ctype = resp.headers.get("Content-Type")
        return Answer(resp.status, ctype, await resp.read())


async def same(
    session: aiohttp.ClientSession,
    servers: tuple[Endpoints, Endpoints],
    path: str,
    body: Any,
    *,
    exact: bool = True,
) -> Answer:
    """POST ``body`` to both; the answers must agree (bodies too unless ``exact`` is off)."""
    theirs_a = await _post(session, servers[0].management + path, body)
    mine_a = await _post(session, servers[1].management + path, body)
    assert mine_a.status == theirs_a.status, (path, body, theirs_a, mine_a)
    assert mine_a.content_type == theirs_a.content_type, (path, body, theirs_a, mine_a)
    if exact:
        assert mine_a.body == theirs_a.body, (path, body, theirs_a, mine_a)
    else:
        assert bool(mine_a.body) == bool(theirs_a.body), (path, body, theirs_a, mine_a)
    return mine_a


async def _dns(port: int, name: str, rdtype: str) -> tuple[str, list[str]]:
    query = dns.message.make_query(name, rdtype)
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=3)
    answers = [rrset.to_text() for rrset in reply.answer]
    return dns.rcode.to_text(reply.rcode()), answers


async def same_dns(servers: tuple[Endpoints, Endpoints], name: str, rdtype: str) -> list[str]:
    """Rcode and answer section, in order, with TTLs; returns ours for further checks."""
    theirs, mine = [await _dns(s.dns_port, name, rdtype) for s in servers]
    assert mine == theirs, (name, rdtype)
    return mine[1]


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None, bytes, str]:
    async with session.get(url, allow_redirects=False, ssl=False) as resp:
        return (
            resp.status,
            resp.headers.get("Content-Type"),
            await resp.read(),
            resp.headers.get("Location", ""),
        )


async def same_http01(
    session: aiohttp.ClientSession, servers: tuple[Endpoints, Endpoints], path: str, *, tls: bool
) -> tuple[int, str | None, bytes, str]:
    theirs, mine = [await _get(session, (s.https01 if tls else s.http01) + path) for s in servers]
    if theirs[0] == 302:  # Go's redirect body is an HTML link; the Location is what counts
        theirs, mine = (theirs[0], None, b"", theirs[3]), (mine[0], None, b"", mine[3])
    assert mine == theirs, path
    return mine


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# ------------------------------------------------------------------------------------------
# DNS verbs


async def test_challtestsrv_set_default_ipv4(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    assert await same_dns(both, "nobody-set.parity.example.", "A") == [
        "nobody-set.parity.example. 0 IN A 127.0.0.1"
    ]
    try:
        await same(session, both, "/set-default-ipv4", {"ip": "10.9.8.7"})
        await same_dns(both, "default4.parity.example.", "A")
        await same(session, both, "/set-default-ipv4", {"ip": ""})
        assert await same_dns(both, "default4-off.parity.example.", "A") == []
    finally:
        await same(session, both, "/set-default-ipv4", {"ip": "127.0.0.1"})
    await same(session, both, "/set-default-ipv4", b"")
    await same(session, both, "/set-default-ipv4", b"{", exact=False)


async def test_challtestsrv_set_default_ipv6(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    assert await same_dns(both, "default6.parity.example.", "AAAA") == []
    try:
        await same(session, both, "/set-default-ipv6", {"ip": "2001:db8::6"})
        assert await same_dns(both, "default6.parity.example.", "AAAA") == [
            "default6.parity.example. 0 IN AAAA 2001:db8::6"
        ]
    finally:
        await same(session, both, "/set-default-ipv6", {"ip": ""})
    assert await same_dns(both, "default6.parity.example.", "AAAA") == []


async def test_challtestsrv_add_a_keeps_insertion_order(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "add-a.parity.example."
    await same(session, both, "/add-a", {"host": host, "addresses": ["10.0.0.2", "10.0.0.1"]})
    await same(session, both, "/add-a", {"host": host, "addresses": ["10.0.0.3"]})
    assert await same_dns(both, host, "A") == [
        f"{host} 0 IN A 10.0.0.2\n{host} 0 IN A 10.0.0.1\n{host} 0 IN A 10.0.0.3"
    ]
    await same(session, both, "/add-a", {"host": host})
    await same(session, both, "/add-a", {"host": host, "addresses": []})
    await same(session, both, "/add-a", {"addresses": ["10.0.0.1"]})


async def test_challtestsrv_clear_a(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "clear-a.parity.example."
    await same(session, both, "/add-a", {"host": host, "addresses": ["10.0.0.9"]})
    await same(session, both, "/clear-a", {"host": host})
    assert await same_dns(both, host, "A") == [f"{host} 0 IN A 127.0.0.1"]
    await same(session, both, "/clear-a", {"host": "never-added.parity.example."})
    await same(session, both, "/clear-a", {})


async def test_challtestsrv_add_aaaa_keeps_insertion_order(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "add-aaaa.parity.example."
    await same(session, both, "/add-aaaa", {"host": host, "addresses": ["2001:db8::2", "::1"]})
    assert await same_dns(both, host, "AAAA") == [
        f"{host} 0 IN AAAA 2001:db8::2\n{host} 0 IN AAAA ::1"
    ]
    await same(session, both, "/add-aaaa", {"host": host, "addresses": []})
    await same(session, both, "/add-aaaa", {"addresses": ["::1"]})


async def test_challtestsrv_clear_aaaa(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "clear-aaaa.parity.example."
    await same(session, both, "/add-aaaa", {"host": host, "addresses": ["2001:db8::9"]})
    await same(session, both, "/clear-aaaa", {"host": host})
    assert await same_dns(both, host, "AAAA") == []
    await same(session, both, "/clear-aaaa", {"host": "never-added.parity.example."})
    await same(session, both, "/clear-aaaa", {})


async def test_challtestsrv_add_caa(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "add-caa.parity.example."
    policies = [{"tag": "issue", "value": "jprs.jp"}, {"tag": "iodef", "value": "mailto:x@y.z"}]
    await same(session, both, "/add-caa", {"host": host, "policies": policies})
    await same(
        session, both, "/add-caa", {"host": host, "policies": [{"tag": "issuewild", "value": ";"}]}
    )
    assert len((await same_dns(both, host, "CAA"))[0].splitlines()) == 3
    await same(session, both, "/add-caa", {"host": host, "policies": []})
    await same(session, both, "/add-caa", {"policies": policies})


async def test_challtestsrv_clear_caa(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "clear-caa.parity.example."
    await same(
        session, both, "/add-caa", {"host": host, "policies": [{"tag": "issue", "value": "a"}]}
    )
    await same(session, both, "/clear-caa", {"host": host})
    assert await same_dns(both, host, "CAA") == []
    await same(session, both, "/clear-caa", {"host": "never-added.parity.example."})
    await same(session, both, "/clear-caa", {})


async def test_challtestsrv_set_cname(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host, target = "alias.parity.example.", "target.parity.example."
    await same(session, both, "/add-a", {"host": target, "addresses": ["10.1.1.1"]})
    await same(session, both, "/set-cname", {"host": host, "target": target})
    assert await same_dns(both, host, "CNAME") == [f"{host} 0 IN CNAME {target}"]
    assert len(await same_dns(both, host, "A")) == 2  # the CNAME, then the target's A
    await same(session, both, "/set-cname", {"host": host})
    await same(session, both, "/set-cname", {"target": target})


async def test_challtestsrv_clear_cname(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "clear-alias.parity.example."
    await same(session, both, "/set-cname", {"host": host, "target": "t.parity.example."})
    await same(session, both, "/clear-cname", {"host": host})
    assert await same_dns(both, host, "CNAME") == []
    await same(session, both, "/clear-cname", {"host": "never-added.parity.example."})
    await same(session, both, "/clear-cname", {})


async def test_challtestsrv_set_servfail(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "servfail.parity.example."
    await same(session, both, "/set-servfail", {"host": host})
    theirs, mine = [await _dns(s.dns_port, host, "A") for s in both]
    assert mine == theirs == ("SERVFAIL", [])
    await same(session, both, "/set-servfail", {})


async def test_challtestsrv_clear_servfail(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "clear-servfail.parity.example."
    await same(session, both, "/set-servfail", {"host": host})
    await same(session, both, "/clear-servfail", {"host": host})
    await same_dns(both, host, "A")
    await same(session, both, "/clear-servfail", {"host": "never-set.parity.example."})
    await same(session, both, "/clear-servfail", {})


async def test_challtestsrv_set_txt_appends_in_order(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "_acme-challenge.txt.parity.example."
    await same(session, both, "/set-txt", {"host": host, "value": "second"})
    await same(session, both, "/set-txt", {"host": host, "value": "first"})
    assert await same_dns(both, host, "TXT") == [
        f'{host} 0 IN TXT "second"\n{host} 0 IN TXT "first"'
    ]
    await same(session, both, "/set-txt", {"host": host})
    await same(session, both, "/set-txt", {"value": "v"})


async def test_challtestsrv_clear_txt(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "_acme-challenge.clear-txt.parity.example."
    await same(session, both, "/set-txt", {"host": host, "value": "v"})
    await same(session, both, "/clear-txt", {"host": host})
    assert await same_dns(both, host, "TXT") == []
    await same(session, both, "/clear-txt", {"host": "never-set.parity.example."})
    await same(session, both, "/clear-txt", {})


# ------------------------------------------------------------------------------------------
# http-01 verbs, the http-01 listener and the https-01 listener

WELL_KNOWN = "/.well-known/acme-challenge/"


async def test_challtestsrv_add_http01(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    await same(session, both, "/add-http01", {"token": "tok-add", "content": "tok-add.thumb"})
    for tls in (False, True):
        assert (await same_http01(session, both, WELL_KNOWN + "tok-add", tls=tls))[2] == (
            b"tok-add.thumb"
        )
    await same(session, both, "/add-http01", {"token": "tok-add"})
    await same(session, both, "/add-http01", {"content": "c"})


async def test_challtestsrv_del_http01_unknown_token_200_empty(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    await same(session, both, "/add-http01", {"token": "tok-del", "content": "c"})
    answer = await same(session, both, "/del-http01", {"token": "tok-del"})
    assert (answer.status, answer.body) == (200, b"")
    answer = await same(session, both, "/del-http01", {"token": "never-added"})
    assert (answer.status, answer.body) == (200, b"")
    # an unknown token on the listener: 200 with an empty body in both
    assert (await same_http01(session, both, WELL_KNOWN + "tok-del", tls=False))[:3] == (
        200,
        None,
        b"",
    )
    await same(session, both, "/del-http01", {})
    await same(session, both, "/del-http01", b"")
    await same(session, both, "/del-http01", b"not json", exact=False)


async def test_challtestsrv_add_redirect(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    path = WELL_KNOWN + "redirected"
    target = "https://redirect.parity.example/.well-known/acme-challenge/redirected"
    await same(session, both, "/add-redirect", {"path": path, "targetURL": target})
    assert (await same_http01(session, both, path, tls=False))[::3] == (302, target)
    # over TLS the redirect is not served (pebble-challtestsrv redirects plain HTTP only)
    assert (await same_http01(session, both, path, tls=True))[0] == 200
    await same(session, both, "/add-redirect", {"path": path})
    await same(session, both, "/add-redirect", {"targetURL": target})


async def test_challtestsrv_del_redirect(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    path = WELL_KNOWN + "del-redirect"
    await same(session, both, "/add-redirect", {"path": path, "targetURL": "http://x.example/"})
    await same(session, both, "/del-redirect", {"path": path})
    assert (await same_http01(session, both, path, tls=False))[0] == 200
    await same(session, both, "/del-redirect", {"path": "/never-added"})
    await same(session, both, "/del-redirect", {})


# ------------------------------------------------------------------------------------------
# tls-alpn-01 verbs and the tls-alpn-01 listener (RFC 8737)


async def _alpn_handshake(port: int, server_name: str) -> tuple[str | None, bytes] | None:
    """(negotiated ALPN, the certificate's DER) of a handshake offering only ``acme-tls/1``
    with SNI ``server_name``, or None when the listener refuses it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([ALPN_PROTOCOL])
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_name),
            timeout=5,
        )
    except (ssl.SSLError, ConnectionError):
        return None
    try:
        tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return tls.selected_alpn_protocol(), der
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def same_tlsalpn01(
    servers: tuple[Endpoints, Endpoints], server_name: str
) -> list[x509.Certificate]:
    """Both listeners accept (or both refuse) the handshake; when they accept, both negotiate
    ``acme-tls/1`` and present a certificate for exactly ``server_name`` with the same
    critical acmeIdentifier.  Returns [theirs, ours] (empty when both refused)."""
    theirs, mine = [await _alpn_handshake(s.tlsalpn01_port, server_name) for s in servers]
    assert (theirs is None) == (mine is None), (server_name, theirs, mine)
    if theirs is None or mine is None:
        return []
    assert theirs[0] == mine[0] == ALPN_PROTOCOL
    certs = [x509.load_der_x509_certificate(answer[1]) for answer in (theirs, mine)]
    for cert in certs:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [server_name]
    their_id, my_id = [c.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID) for c in certs]
    assert their_id.critical and my_id.critical
    assert their_id.value.public_bytes() == my_id.value.public_bytes()
    return certs


async def test_challtestsrv_add_tlsalpn01(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host, content = "alpn-add.parity.example", "tok-alpn.thumbprint"
    assert await same_tlsalpn01(both, host) == []  # nothing added: both refuse the handshake
    answer = await same(session, both, "/add-tlsalpn01", {"host": host, "content": content})
    assert (answer.status, answer.body) == (200, b"")
    theirs, mine = await same_tlsalpn01(both, host)
    value = mine.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID).value.public_bytes()
    assert value == acme_identifier_value(content)  # RFC 8737 §3: SHA-256 of the content
    # ours also passes our own VA's RFC 8737 / BR 3.2.2.4.20 judgement (Pebble's has zero
    # validity dates, a documented difference, so only its SAN and acmeIdentifier compare)
    assert judge_certificate(mine.public_bytes(_DER), host, content, datetime.now(UTC)) == (
        None,
        value[2:].hex(),
    )
    assert theirs.public_bytes(_DER) != mine.public_bytes(_DER)
    # a new content for the same host replaces the old one in both
    await same(session, both, "/add-tlsalpn01", {"host": host, "content": "other.thumbprint"})
    _, mine = await same_tlsalpn01(both, host)
    assert mine.extensions.get_extension_for_oid(
        ACME_IDENTIFIER_OID
    ).value.public_bytes() == acme_identifier_value("other.thumbprint")
    await same(session, both, "/add-tlsalpn01", {"host": host})
    await same(session, both, "/add-tlsalpn01", {"content": content})
    await same(session, both, "/add-tlsalpn01", {"host": "", "content": content})
    await same(session, both, "/add-tlsalpn01", b"")
    await same(session, both, "/add-tlsalpn01", b"{", exact=False)


async def test_challtestsrv_del_tlsalpn01(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "alpn-del.parity.example"
    await same(session, both, "/add-tlsalpn01", {"host": host, "content": "c.thumbprint"})
    assert len(await same_tlsalpn01(both, host)) == 2
    answer = await same(session, both, "/del-tlsalpn01", {"host": host})
    assert (answer.status, answer.body) == (200, b"")
    assert await same_tlsalpn01(both, host) == []  # removed: both refuse the handshake
    answer = await same(session, both, "/del-tlsalpn01", {"host": "never-added.parity.example"})
    assert (answer.status, answer.body) == (200, b"")
    await same(session, both, "/del-tlsalpn01", {})
    await same(session, both, "/del-tlsalpn01", b"")
    await same(session, both, "/del-tlsalpn01", b"not json", exact=False)


# ------------------------------------------------------------------------------------------
# request history


async def test_challtestsrv_http_request_history(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "history.parity.example"
    for server in both:
        for base in (server.http01, server.https01):
            async with session.get(
                base + WELL_KNOWN + "hist", headers={"Host": host}, ssl=False
            ) as resp:
                await resp.read()
    theirs, mine = [
        await _post(session, s.management + "/http-request-history", {"host": host}) for s in both
    ]
    assert (mine.status, mine.content_type) == (theirs.status, theirs.content_type)
    their_events = json.loads(theirs.body)
    my_events = json.loads(mine.body)
    assert len(my_events) == len(their_events) == 2
    for their_event, my_event in zip(their_events, my_events, strict=True):
        # ours carries Pebble's members, with the same values, and a method and time beside
        assert {k: my_event[k] for k in their_event} == their_event
    empty = await same(session, both, "/http-request-history", {"host": "nobody.example"})
    assert empty.body == b"[]"
    await same(session, both, "/http-request-history", {})


async def test_challtestsrv_dns_request_history(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    """Not in the issue's list, but documented as pebble-challtestsrv's: the questions asked
    for a name, with Pebble's members and values (ours adds the transport and time)."""
    host = "dns-history.parity.example"  # pebble-challtestsrv keys it without the dot
    for rdtype in ("A", "TXT"):
        await same_dns(both, host + ".", rdtype)
    theirs, mine = [
        await _post(session, s.management + "/dns-request-history", {"host": host}) for s in both
    ]
    assert (mine.status, mine.content_type) == (theirs.status, theirs.content_type)
    their_events, my_events = json.loads(theirs.body), json.loads(mine.body)
    assert len(my_events) == len(their_events) == 2
    for their_event, my_event in zip(their_events, my_events, strict=True):
        assert {k: my_event[k] for k in their_event} == their_event
    await same(session, both, "/clear-request-history", {"host": host, "type": "dns"})
    assert (await same(session, both, "/dns-request-history", {"host": host})).body == b"[]"


async def test_challtestsrv_clear_request_history(
    session: aiohttp.ClientSession, both: tuple[Endpoints, Endpoints]
) -> None:
    host = "clear-history.parity.example"
    for server in both:
        async with session.get(server.http01 + "/x", headers={"Host": host}) as resp:
            await resp.read()
    await same(session, both, "/clear-request-history", {"host": host, "type": "http"})
    await same(session, both, "/http-request-history", {"host": host})
    await same(session, both, "/clear-request-history", {"host": host, "type": "dns"})
    await same(session, both, "/clear-request-history", {"host": host, "type": "tlsalpn"})
    await same(session, both, "/clear-request-history", {"host": host, "type": "bogus"})
    await same(session, both, "/clear-request-history", {"type": "http"})


# ------------------------------------------------------------------------------------------
# test mode: an http-01 redirect to https (port 443) is fetched from the https-01 listener


def test_test_mode_sends_https_redirects_to_the_https01_listener() -> None:
    config = load_config(env={}, overrides={"test_mode": True})
    assert config.challsrv_https01 == "127.0.0.1:5003"
    assert config.https01_port == 5003
    moved = load_config(
        env={"ACME_CA_CHALLSRV_HTTPS01": "127.0.0.1:6443"}, overrides={"test_mode": True}
    )
    assert moved.https01_port == 6443
    assert load_config(env={}).https01_port == 443
    with pytest.raises(ConfigError, match="https01_port"):
        load_config(env={"ACME_CA_HTTPS01_PORT": "5003"})


async def test_br_3_2_2_4_19_redirect_to_https_validates_on_the_https01_listener() -> None:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(https01=True)) as srv:
        assert srv.dns_port and srv.http01_port and srv.https01_port
        dns_client = srv_dns(srv)
        validator = Http01Validator(
            dns_client,
            port=srv.http01_port,
            https_port=srv.https01_port,
            address_policy=loopback_ok,
            timeout=5.0,
        )
        name, token = "redirected.parity.example", "tok-https"
        path = WELL_KNOWN + token
        srv.store.add_redirect(path, f"https://{name}{path}")
        srv.store.add_http01(token, f"{token}.thumb")
        try:
            result = await validator.check(name, token, f"{token}.thumb")
        finally:
            await dns_client.aclose()
        assert result.ok, result.problem
        assert [e.https for e in srv.store.http_history(name)] == [False, True]
        assert srv.store.http_history(name)[1].server_name == name


async def test_br_3_2_2_4_19_test_mode_ca_sends_a_redirect_to_443_to_the_https01_listener(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    """Through the whole CA in test mode: the http-01 answer redirects to ``https://NAME/…``
    (port 443, BR 3.2.2.4.19's only other port); the CA follows it to the challenge server's
    https-01 listener (``https01_port``) and the authorization becomes valid."""
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(https01=True)) as srv:
        ca = await ca_factory.start(
            test_mode=True, https01_port=srv.https01_port, **validation_config(srv)
        )
        client = await subscriber(ca, session, srv)
        name = "https-redirect.parity.example.com"
        order = await client.new_order(name)
        assert order.status == 201, order.body
        (authz_url,) = order.body["authorizations"]
        authz = (await client.get(authz_url)).body
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        path = WELL_KNOWN + challenge["token"]
        srv.store.add_redirect(path, f"https://{name}{path}")
        srv.store.add_http01(challenge["token"], client.key_authorization(challenge["token"]))
        assert (await client.post(challenge["url"], {})).status == 200
        assert (await client.wait_authz(authz_url))["status"] == "valid"
        history = srv.store.http_history(name)
        assert [(e.https, e.server_name) for e in history] == [(False, ""), (True, name)]
