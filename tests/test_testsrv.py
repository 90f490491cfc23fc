"""The Pebble-style challenge test server, driven the way tests and the VA will drive it.

Everything goes over real sockets on ephemeral ports: the management API through aiohttp's
client, DNS through dnspython's query functions (UDP and TCP) and its async resolver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from acme_ca.clock import FixedClock
from acme_ca.testsrv.dns import answer_query
from acme_ca.testsrv.management import static_pem
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.testsrv.store import ChallengeStore

ROOT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    server = ChallengeTestServer(
        ChallengeServerConfig.ephemeral(), roots=static_pem(ROOT_PEM), clock=FixedClock(NOW)
    )
    async with server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    """POSTs JSON to the management API and insists on the expected status."""

    def __init__(self, srv: ChallengeTestServer, session: aiohttp.ClientSession) -> None:
        self.base = srv.management_url
        self.session = session

    async def __call__(self, path: str, body: Any, status: int = 200) -> Any:
        data = body if isinstance(body, bytes) else aiohttp.payload.JsonPayload(body)
        async with self.session.post(self.base + path, data=data) as resp:
            text = await resp.text()
            assert resp.status == status, text
            if resp.content_type == "application/json":
                return await resp.json()
            return text


@pytest.fixture
def api(srv: ChallengeTestServer, http: aiohttp.ClientSession) -> Api:
    return Api(srv, http)


async def query(
    srv: ChallengeTestServer, name: str, rdtype: str, *, tcp: bool = False
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    assert srv.dns_port is not None
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", timeout=2, port=srv.dns_port)
    return await dns.asyncquery.udp(q, "127.0.0.1", timeout=2, port=srv.dns_port)


def resolver(srv: ChallengeTestServer) -> dns.asyncresolver.Resolver:
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    assert srv.dns_port is not None
    res.port = srv.dns_port
    res.lifetime = 2
    return res


def texts(msg: dns.message.Message, rdtype: str = "TXT") -> list[str]:
    return [
        b"".join(rd.strings).decode()
        for rrset in msg.answer
        if rrset.rdtype == dns.rdatatype.from_text(rdtype)
        for rd in rrset
    ]


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in msg.answer for rd in rrset if hasattr(rd, "address"))


# DNS


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_set_txt_answers_and_clear_txt_removes(
    srv: ChallengeTestServer, api: Api, tcp: bool
) -> None:
    await api("/set-txt", {"host": "_acme-challenge.example.com.", "value": "one"})
    await api("/set-txt", {"host": "_acme-challenge.example.com", "value": "two"})
    msg = await query(srv, "_acme-challenge.EXAMPLE.com.", "TXT", tcp=tcp)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA
    assert sorted(texts(msg)) == ["one", "two"]
    assert msg.answer[0].ttl == 0

    await api("/clear-txt", {"host": "_acme-challenge.example.com"})
    msg = await query(srv, "_acme-challenge.example.com.", "TXT", tcp=tcp)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.answer == []
    assert [r.rdtype for r in msg.authority] == [dns.rdatatype.SOA]


async def test_long_txt_value_is_split_into_character_strings(
    srv: ChallengeTestServer, api: Api
) -> None:
    value = "x" * 300
    await api("/set-txt", {"host": "long.example", "value": value})
    msg = await query(srv, "long.example.", "TXT", tcp=True)
    (rd,) = msg.answer[0]
    assert [len(s) for s in rd.strings] == [255, 45]
    assert texts(msg) == [value]


async def test_oversized_udp_answer_truncates_and_resolver_retries_over_tcp(
    srv: ChallengeTestServer, api: Api
) -> None:
    for i in range(12):
        await api("/set-txt", {"host": "big.example", "value": f"{i:02d}" + "v" * 60})
    msg = await query(srv, "big.example.", "TXT")
    assert msg.flags & dns.flags.TC
    answer = await resolver(srv).resolve("big.example.", "TXT")
    assert len(answer.rrset or ()) == 12
    transports = [
        e["Transport"] for e in await api("/dns-request-history", {"host": "big.example"})
    ]
    assert transports == ["udp", "udp", "tcp"]


async def test_a_answers_default_unless_host_has_its_own(
    srv: ChallengeTestServer, api: Api
) -> None:
    assert addresses(await query(srv, "anything.example.", "A")) == ["127.0.0.1"]
    assert addresses(await query(srv, "anything.example.", "AAAA")) == []

    await api("/add-a", {"host": "web.example", "addresses": ["10.0.0.1", "10.0.0.2"]})
    await api("/add-aaaa", {"host": "web.example.", "addresses": ["2001:db8::1"]})
    assert addresses(await query(srv, "web.example.", "A")) == ["10.0.0.1", "10.0.0.2"]
    assert addresses(await query(srv, "web.example.", "AAAA")) == ["2001:db8::1"]
    assert addresses(await query(srv, "other.example.", "A")) == ["127.0.0.1"]

    await api("/set-default-ipv4", {"ip": "10.9.9.9"})
    await api("/set-default-ipv6", {"ip": "::1"})
    assert addresses(await query(srv, "other.example.", "A", tcp=True)) == ["10.9.9.9"]
    assert addresses(await query(srv, "other.example.", "AAAA")) == ["::1"]

    await api("/clear-a", {"host": "web.example."})
    await api("/clear-aaaa", {"host": "web.example"})
    assert addresses(await query(srv, "web.example.", "A")) == ["10.9.9.9"]

    await api("/set-default-ipv4", {"ip": ""})
    msg = await query(srv, "other.example.", "A")
    assert (msg.rcode(), msg.answer) == (dns.rcode.NOERROR, [])


async def test_cname_chain_leads_resolver_to_txt(srv: ChallengeTestServer, api: Api) -> None:
    await api("/set-cname", {"host": "_acme-challenge.a.example", "target": "hop.example."})
    await api("/set-cname", {"host": "hop.example", "target": "validation.example"})
    await api("/set-txt", {"host": "validation.example", "value": "token"})

    msg = await query(srv, "_acme-challenge.a.example.", "TXT")
    kinds = [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in msg.answer]
    assert kinds == [
        ("_acme-challenge.a.example.", "CNAME"),
        ("hop.example.", "CNAME"),
        ("validation.example.", "TXT"),
    ]

    answer = await resolver(srv).resolve("_acme-challenge.a.example.", "TXT")
    assert answer.canonical_name == dns.name.from_text("validation.example.")
    assert texts(answer.response) == ["token"]

    msg = await query(srv, "_acme-challenge.a.example.", "CNAME")
    assert [r.rdtype for r in msg.answer] == [dns.rdatatype.CNAME]

    await api("/clear-cname", {"host": "_acme-challenge.a.example"})
    assert texts(await query(srv, "_acme-challenge.a.example.", "TXT")) == []


async def test_cname_to_unknown_target_and_loops(srv: ChallengeTestServer, api: Api) -> None:
    await api("/set-cname", {"host": "alias.example", "target": "nowhere.example"})
    msg = await query(srv, "alias.example.", "TXT")
    assert msg.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in msg.answer] == [dns.rdatatype.CNAME]
    # Any name has the default A, so the target of an A query always answers.
    assert addresses(await query(srv, "alias.example.", "A")) == ["127.0.0.1"]

    await api("/set-cname", {"host": "loop1.example", "target": "loop2.example"})
    await api("/set-cname", {"host": "loop2.example", "target": "loop1.example"})
    assert (await query(srv, "loop1.example.", "A")).rcode() == dns.rcode.SERVFAIL


async def test_caa_with_critical_flag(srv: ChallengeTestServer, api: Api) -> None:
    await api(
        "/add-caa",
        {
            "host": "caa.example",
            "policies": [
                {"tag": "issue", "value": "acme-ca.test; validationmethods=dns-01"},
                {"tag": "tbs", "value": "unknown", "flags": 128},
            ],
        },
    )
    msg = await query(srv, "caa.example.", "CAA")
    got = sorted((rd.flags, rd.tag.decode(), rd.value.decode()) for rd in msg.answer[0])
    assert got == [
        (0, "issue", "acme-ca.test; validationmethods=dns-01"),
        (128, "tbs", "unknown"),
    ]
    assert (await query(srv, "sub.caa.example.", "CAA")).answer == []

    await api("/set-cname", {"host": "www.caa.example", "target": "caa.example"})
    msg = await query(srv, "www.caa.example.", "CAA", tcp=True)
    assert [r.rdtype for r in msg.answer] == [dns.rdatatype.CNAME, dns.rdatatype.CAA]

    await api("/clear-caa", {"host": "caa.example."})
    assert (await query(srv, "caa.example.", "CAA")).answer == []


async def test_servfail_overrides_records_until_cleared(srv: ChallengeTestServer, api: Api) -> None:
    await api("/set-txt", {"host": "broken.example", "value": "v"})
    await api("/add-caa", {"host": "broken.example", "policies": [{"tag": "issue", "value": ";"}]})
    await api("/set-servfail", {"host": "broken.example."})
    for rdtype in ("A", "TXT", "CAA"):
        msg = await query(srv, "broken.example.", rdtype)
        assert (msg.rcode(), msg.answer) == (dns.rcode.SERVFAIL, [])
    with pytest.raises(dns.resolver.NoNameservers):
        await resolver(srv).resolve("broken.example.", "CAA")

    await api("/set-cname", {"host": "via.example", "target": "broken.example"})
    assert (await query(srv, "via.example.", "TXT")).rcode() == dns.rcode.SERVFAIL

    await api("/clear-servfail", {"host": "broken.example"})
    assert texts(await query(srv, "broken.example.", "TXT")) == ["v"]


async def test_nxdomain_only_for_configured_names(srv: ChallengeTestServer, api: Api) -> None:
    await api("/set-nxdomain", {"host": "gone.example"})
    assert (await query(srv, "gone.example.", "A")).rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver(srv).resolve("gone.example.", "A")
    assert (await query(srv, "sub.gone.example.", "A")).rcode() == dns.rcode.NOERROR
    await api("/clear-nxdomain", {"host": "gone.example"})
    assert addresses(await query(srv, "gone.example.", "A")) == ["127.0.0.1"]


async def test_unhandled_type_is_nodata(srv: ChallengeTestServer) -> None:
    msg = await query(srv, "example.", "MX")
    assert (msg.rcode(), msg.answer) == (dns.rcode.NOERROR, [])


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"\x12\x34" + b"\x00" * 10 + b"\xff", dns.rcode.FORMERR),
        (b"\x00\x01short", None),
    ],
    ids=["garbage-after-header-formerr", "shorter-than-header-dropped"],
)
def test_unparseable_queries(wire: bytes, expected: dns.rcode.Rcode | None) -> None:
    reply = answer_query(ChallengeStore(), wire, "udp")
    if expected is None:
        assert reply is None
    else:
        assert reply is not None
        msg = dns.message.from_wire(reply)
        assert (msg.id, msg.rcode()) == (0x1234, expected)


# http-01


async def test_http01_add_and_delete(
    srv: ChallengeTestServer, api: Api, http: aiohttp.ClientSession
) -> None:
    url = f"{srv.http01_url}/.well-known/acme-challenge/tok123"
    async with http.get(url) as resp:  # unknown: 200, empty, as pebble-challtestsrv answers
        assert (resp.status, await resp.read()) == (200, b"")
    await api("/add-http01", {"token": "tok123", "content": "tok123.thumbprint"})
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "tok123.thumbprint"
    await api("/del-http01", {"token": "tok123"})
    async with http.get(url) as resp:
        assert (resp.status, await resp.read()) == (200, b"")


async def test_redirect_add_and_delete(
    srv: ChallengeTestServer, api: Api, http: aiohttp.ClientSession
) -> None:
    path = "/.well-known/acme-challenge/moved"
    await api("/add-redirect", {"path": path, "targetURL": "http://elsewhere.example/ok"})
    async with http.get(f"{srv.http01_url}{path}", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "http://elsewhere.example/ok"
    await api("/del-redirect", {"path": path})
    async with http.get(f"{srv.http01_url}{path}", allow_redirects=False) as resp:
        assert resp.status == 200


async def test_http_request_history(
    srv: ChallengeTestServer, api: Api, http: aiohttp.ClientSession
) -> None:
    url = f"{srv.http01_url}/.well-known/acme-challenge/abc?x=1"
    headers = {"Host": "Site.Example:5002", "User-Agent": "va-test"}
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 200
    history = await api("/http-request-history", {"host": "site.example."})
    assert history == [
        {
            "URL": "/.well-known/acme-challenge/abc?x=1",
            "Host": "Site.Example:5002",
            "HTTPS": False,
            "ServerName": "",
            "UserAgent": "va-test",
            "Method": "GET",
            "Time": NOW.isoformat(),
        }
    ]
    await api("/clear-request-history", {"host": "site.example", "type": "http"})
    assert await api("/http-request-history", {"host": "site.example"}) == []


async def test_dns_request_history(srv: ChallengeTestServer, api: Api) -> None:
    await query(srv, "Hist.Example.", "CAA")
    await query(srv, "hist.example.", "TXT", tcp=True)
    history = await api("/dns-request-history", {"host": "hist.example."})
    assert [(e["Question"], e["Transport"]) for e in history] == [
        ({"Name": "Hist.Example.", "Qtype": 257, "Qclass": 1}, "udp"),
        ({"Name": "hist.example.", "Qtype": 16, "Qclass": 1}, "tcp"),
    ]
    assert await api("/dns-request-history", {"host": "other.example"}) == []
    await api("/clear-request-history", {"host": "hist.example", "type": "tlsalpn"})
    await api("/clear-request-history", {"host": "hist.example", "type": "dns"})
    assert await api("/dns-request-history", {"host": "hist.example"}) == []


# Management API contract


async def test_field_names_match_case_insensitively_like_go(
    srv: ChallengeTestServer, api: Api, http: aiohttp.ClientSession
) -> None:
    await api("/set-txt", {"Host": "go.example", "Value": "v"})
    assert texts(await query(srv, "go.example.", "TXT")) == ["v"]
    await api("/add-redirect", {"path": "/r", "targeturl": "http://x.example/"})
    async with http.get(f"{srv.http01_url}/r", allow_redirects=False) as resp:
        assert resp.status == 302


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/set-txt", b""),
        ("/set-txt", b"{not json"),
        ("/set-txt", b'["host"]'),
        ("/set-txt", {"host": "x.example"}),
        ("/set-txt", {"host": 5, "value": "v"}),
        ("/set-txt", {"host": "a..example", "value": "v"}),
        ("/clear-txt", {}),
        ("/add-a", {"host": "x.example", "addresses": []}),
        ("/add-a", {"host": "x.example", "addresses": ["::1"]}),
        ("/add-aaaa", {"host": "x.example", "addresses": ["10.0.0.1"]}),
        ("/set-default-ipv4", {"ip": "not-an-ip"}),
        ("/set-default-ipv6", {"ip": "127.0.0.1"}),
        ("/add-caa", {"host": "x.example", "policies": []}),
        ("/add-caa", {"host": "x.example", "policies": [{"tag": "is sue", "value": "v"}]}),
        ("/add-caa", {"host": "x.example", "policies": [{"tag": "issue", "flags": 256}]}),
        ("/set-cname", {"host": "x.example"}),
        ("/add-http01", {"token": "t"}),
        ("/add-redirect", {"path": "/p"}),
        ("/dns-request-history", {}),
        ("/clear-request-history", {"host": "x.example", "type": "smtp"}),
    ],
    ids=[
        "empty-body",
        "not-json",
        "not-an-object",
        "txt-without-value",
        "host-not-a-string",
        "host-empty-label",
        "clear-without-host",
        "no-addresses",
        "ipv6-as-a",
        "ipv4-as-aaaa",
        "default-ipv4-garbage",
        "default-ipv6-given-ipv4",
        "no-caa-policies",
        "caa-tag-not-alphanumeric",
        "caa-flags-over-255",
        "cname-without-target",
        "http01-without-content",
        "redirect-without-target",
        "history-without-host",
        "unknown-history-type",
    ],
)
async def test_bad_bodies_get_400(api: Api, path: str, body: Any) -> None:
    await api(path, body, status=400)


async def test_roots_and_intermediates(
    srv: ChallengeTestServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{srv.management_url}/roots/0") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/pem-certificate-chain"
        assert await resp.read() == ROOT_PEM
    for path in ("/roots/1", "/intermediates/0", "/roots/x"):
        async with http.get(f"{srv.management_url}{path}") as resp:
            assert resp.status == 404, path


async def test_http01_disabled_drops_its_verbs(http: aiohttp.ClientSession) -> None:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(http01=False)) as srv:
        assert srv.http01_port is None
        assert srv.http01_url is None
        async with http.post(f"{srv.management_url}/add-http01", json={"token": "t"}) as resp:
            assert resp.status == 404
        async with http.post(
            f"{srv.management_url}/set-txt", json={"host": "h.example", "value": "v"}
        ) as resp:
            assert resp.status == 200
    assert srv.dns_port is None
    await srv.stop()
