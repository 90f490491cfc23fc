"""http-01 (ACME-CHAL-5, BR §3.2.2.4.19, BR-DCV-2/3) against real servers on 127.0.0.1.

Names resolve through the challenge test server's DNS (every name gets 127.0.0.1 unless a
test says otherwise), and the test server's http-01 responder answers on an ephemeral port
that the validator treats as port 80.  Behaviour the responder cannot produce (303, chunked
bodies, silence, TLS) comes from small aiohttp apps the tests start.  The validator allows
loopback here only through an injected address policy; the production policy is tested too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from acme_ca.localca import LocalCa, cert_pem, key_pem, local_name
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.va.addresses import public_address_policy, unverified_tls_context
from acme_ca.va.http01 import (
    BODY_SLACK,
    Http01Validator,
    TargetRefused,
    parse_target,
)
from acme_ca.va.resolver import DnsClient
from tests.support.ports import free_port
from tests.support.problems import ERR
from tests.support.va import loopback_ok, srv_dns

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
KEY_AUTH = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
PATH = f"/.well-known/acme-challenge/{TOKEN}"
NAME = "site.example.test"


@pytest.fixture
def dns(srv: ChallengeTestServer) -> DnsClient:
    return srv_dns(srv)


@pytest.fixture
def validator(srv: ChallengeTestServer, dns: DnsClient) -> Http01Validator:
    assert srv.http01_port is not None
    return Http01Validator(dns, port=srv.http01_port, address_policy=loopback_ok, timeout=5.0)


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp app on 127.0.0.1 (optionally TLS); returns its port."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


def app_with(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    """A server certificate no client trusts, for another name: the VA must not judge it."""
    root = LocalCa.create(
        local_name("not-the-site.invalid"),
        now=dt.datetime.now(dt.UTC),
        lifetime=dt.timedelta(days=1),
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert_pem(root.cert))
    key_path.write_bytes(key_pem(root.key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


def problem_type(result: object) -> str | None:
    problem = getattr(result, "problem", None)
    return None if problem is None else str(problem.type).removeprefix(ERR)


# --- the response -----------------------------------------------------------------------------


async def test_acme_chal_5_good(srv: ChallengeTestServer, validator: Http01Validator) -> None:
    srv.store.add_http01(TOKEN, KEY_AUTH)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert result.ok, result.problem
    assert result.observed == KEY_AUTH
    (record,) = result.records
    assert record.method == "http-01"
    assert record.hostname == NAME
    assert record.query == f"http://{NAME}:{srv.http01_port}{PATH}"
    assert record.server == f"127.0.0.1:{srv.http01_port}"
    assert record.addresses == ("127.0.0.1",)
    assert record.response is not None and record.response.startswith("HTTP 200")
    (event,) = srv.store.http_history(NAME)
    assert event.url == PATH
    assert event.method == "GET"
    assert event.host == f"{NAME}:{srv.http01_port}"


async def test_acme_chal_5_trailing_whitespace_accepted(
    srv: ChallengeTestServer, validator: Http01Validator
) -> None:
    srv.store.add_http01(TOKEN, KEY_AUTH + "\r\n \t\n")
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert result.ok, result.problem
    assert result.observed == KEY_AUTH


async def test_acme_chal_5_leading_whitespace_refused(
    srv: ChallengeTestServer, validator: Http01Validator
) -> None:
    srv.store.add_http01(TOKEN, " " + KEY_AUTH)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "incorrectResponse"


async def test_acme_chal_5_wrong_body(srv: ChallengeTestServer, validator: Http01Validator) -> None:
    srv.store.add_http01(TOKEN, f"{TOKEN}.someone-elses-thumbprint")
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "incorrectResponse"
    assert result.problem is not None and result.problem.status == 403
    assert "did not match" in result.problem.detail
    assert result.observed == f"{TOKEN}.someone-elses-thumbprint"


async def test_br_dcv_2_404_is_unauthorized(serve: Serve, dns: DnsClient) -> None:
    # the challenge test server answers an unknown token 200 empty, as pebble-challtestsrv
    port = await serve(served_only_to("nobody.invalid"))
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=5.0)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "unauthorized"
    assert result.problem is not None and "HTTP 404" in result.problem.detail
    assert result.records[0].error is not None


async def test_acme_chal_5_body_larger_than_cap(
    srv: ChallengeTestServer, validator: Http01Validator
) -> None:
    srv.store.add_http01(TOKEN, KEY_AUTH + "x" * (BODY_SLACK + 1))
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "incorrectResponse"
    assert result.problem is not None and "larger than" in result.problem.detail


async def test_acme_chal_5_huge_chunked_body_not_read_whole(serve: Serve, dns: DnsClient) -> None:
    """A server streaming megabytes: the VA stops after its cap and fails the check."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(1024):
                await response.write(b"y" * 1024)
                sent += 1024
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    port = await serve(app_with(endless))
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=5.0)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "incorrectResponse"
    assert "larger than" in (result.problem.detail if result.problem else "")


async def test_acme_chal_5_chunked_body_accepted(serve: Serve, dns: DnsClient) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(KEY_AUTH), 10):
            await response.write(KEY_AUTH[i : i + 10].encode())
        await response.write_eof()
        return response

    port = await serve(app_with(chunked))
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=5.0)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert result.ok, result.problem


# --- where the VA connects --------------------------------------------------------------------


async def test_br_dcv_6_loopback_refused_under_production_policy(
    srv: ChallengeTestServer, dns: DnsClient
) -> None:
    srv.store.add_http01(TOKEN, KEY_AUTH)
    assert srv.http01_port is not None
    validator = Http01Validator(dns, port=srv.http01_port, timeout=5.0)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "dns"
    assert result.problem is not None and "127.0.0.1" in result.problem.detail
    assert srv.store.http_history(NAME) == ()
    assert result.records[0].addresses == ("127.0.0.1",)


async def test_acme_chal_5_redirect_to_internal_address_refused(
    srv: ChallengeTestServer, dns: DnsClient
) -> None:
    """Each hop is resolved and checked again: a redirect cannot reach a private address."""
    assert srv.http01_port is not None
    srv.store.add_a("internal.example.test", ["10.1.2.3"])
    srv.store.add_redirect(PATH, f"http://internal.example.test:{srv.http01_port}{PATH}")
    validator = Http01Validator(dns, port=srv.http01_port, address_policy=loopback_ok)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "dns"
    assert result.problem is not None and "10.1.2.3" in result.problem.detail
    assert [r.hostname for r in result.records] == [NAME, "internal.example.test"]


async def test_acme_chal_5_dns_failure(
    srv: ChallengeTestServer, validator: Http01Validator
) -> None:
    srv.store.set_servfail(NAME)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "dns"
    assert result.problem is not None and "servfail" in result.problem.detail


async def test_acme_chal_5_no_address(srv: ChallengeTestServer, validator: Http01Validator) -> None:
    srv.store.set_nxdomain(NAME)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "dns"


async def test_acme_chal_5_connection_refused(dns: DnsClient) -> None:
    port = free_port()
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=5.0)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "connection"
    assert result.records[0].server == f"127.0.0.1:{port}"


async def test_acme_chal_5_total_timeout(dns: DnsClient) -> None:
    """A server that accepts and never answers costs the VA its timeout, no more."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await validator.check(NAME, TOKEN, KEY_AUTH)
        assert loop.time() - started < 2.0
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert problem_type(result) == "connection"
    assert result.problem is not None and "timeout" in result.problem.detail
    assert len(result.records) == 1


async def test_br_dcv_5_wildcard_refused(validator: Http01Validator) -> None:
    result = await validator.check("*.example.test", TOKEN, KEY_AUTH)
    assert problem_type(result) == "unauthorized"
    assert result.records == ()


# --- redirects (BR-DCV-3) ---------------------------------------------------------------------


async def test_br_dcv_3_redirect_chain_followed(
    srv: ChallengeTestServer, validator: Http01Validator
) -> None:
    port = srv.http01_port
    final_token = "final-token"
    srv.store.add_redirect(PATH, f"http://b.example.test:{port}/hop1")
    srv.store.add_redirect("/hop1", "/hop2?x=1")  # relative, same host
    srv.store.add_redirect(
        "/hop2", f"http://c.example.test:{port}/.well-known/acme-challenge/{final_token}"
    )
    srv.store.add_http01(final_token, KEY_AUTH)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert result.ok, result.problem
    assert [r.hostname for r in result.records] == [
        NAME,
        "b.example.test",
        "b.example.test",
        "c.example.test",
    ]
    assert result.records[1].query == f"http://b.example.test:{port}/hop1"
    assert result.records[2].query == f"http://b.example.test:{port}/hop2?x=1"
    assert all(r.response and r.response.startswith("HTTP 302") for r in result.records[:3])
    # Every hop was resolved afresh.
    assert any(e.qtype == 1 for e in srv.store.dns_history("c.example.test"))
    (event,) = srv.store.http_history("c.example.test")
    assert event.host == f"c.example.test:{port}"


def redirect_chain(srv: ChallengeTestServer, length: int) -> None:
    """``length`` redirects from the challenge path, ending at the key authorization."""
    srv.store.add_redirect(PATH, "/r1" if length > 1 else "/final")
    for i in range(1, length):
        srv.store.add_redirect(f"/r{i}", f"/r{i + 1}" if i + 1 < length else "/final")
    srv.store.add_redirect("/final", f"/.well-known/acme-challenge/{TOKEN}x")
    srv.store.add_http01(TOKEN + "x", KEY_AUTH)


@pytest.mark.parametrize(
    ("redirects", "expected"),
    [(10, None), (11, "connection")],
    ids=["ten-followed", "eleven-refused"],
)
async def test_br_dcv_3_redirect_limit(
    srv: ChallengeTestServer,
    validator: Http01Validator,
    redirects: int,
    expected: str | None,
) -> None:
    redirect_chain(srv, redirects - 1)  # the chain helper adds one more hop via /final
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == expected
    if expected is None:
        assert len(result.records) == 11
    else:
        assert result.problem is not None and "Too many redirects" in result.problem.detail
        assert len(result.records) == 11
        assert result.records[-1].error is not None


async def test_acme_chal_5_redirect_to_forbidden_port(
    srv: ChallengeTestServer, validator: Http01Validator
) -> None:
    srv.store.add_redirect(PATH, f"http://b.example.test:8443{PATH}")
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "connection"
    assert result.problem is not None and "8443" in result.problem.detail
    assert srv.store.http_history("b.example.test") == ()


@pytest.mark.parametrize(
    "location",
    ["ftp://b.example.test/file", "http://127.0.0.1/", "http://user:pw@b.example.test/"],
    ids=["ftp", "ip-literal", "userinfo"],
)
async def test_br_dcv_3_redirect_target_refused(
    srv: ChallengeTestServer, validator: Http01Validator, location: str
) -> None:
    srv.store.add_redirect(PATH, location)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "connection"
    assert "redirect target" in (result.problem.detail if result.problem else "")


async def test_br_dcv_3_redirect_loop(srv: ChallengeTestServer, validator: Http01Validator) -> None:
    srv.store.add_redirect(PATH, "/a")
    srv.store.add_redirect("/a", PATH)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "connection"
    assert "loop" in (result.problem.detail if result.problem else "")


@pytest.mark.parametrize("status", [303, 300, 305], ids=["303", "300", "305"])
async def test_br_dcv_3_other_redirect_statuses_not_followed(
    serve: Serve, dns: DnsClient, status: int
) -> None:
    followed: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/elsewhere":
            followed.append(request.path)
            return web.Response(text=KEY_AUTH)
        return web.Response(status=status, headers={"Location": "/elsewhere"})

    port = await serve(app_with(handler))
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert problem_type(result) == "unauthorized"
    assert followed == []


async def test_br_dcv_3_redirect_to_https_accepted(
    srv: ChallengeTestServer, dns: DnsClient, serve: Serve, tmp_path: Path
) -> None:
    """An https target is fetched without judging its certificate (self-signed, wrong name)."""
    seen: list[tuple[str, str]] = []

    async def secure(request: web.Request) -> web.StreamResponse:
        seen.append((request.host, request.path))
        return web.Response(text=KEY_AUTH + "\n")

    https_port = await serve(app_with(secure), self_signed_context(tmp_path))
    assert srv.http01_port is not None
    srv.store.add_redirect(PATH, f"https://secure.example.test{PATH}")
    validator = Http01Validator(
        dns,
        port=srv.http01_port,
        https_port=https_port,
        address_policy=loopback_ok,
        timeout=5.0,
    )
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert result.ok, result.problem
    assert seen == [("secure.example.test", PATH)]
    assert result.records[1].query == f"https://secure.example.test{PATH}"
    assert result.records[1].server == f"127.0.0.1:{https_port}"


# --- the pure policies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff0e::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("2002:7f00:1::", False),
        ("64:ff9b::a00:1", False),
        ("64:ff9b::5db8:d70e", True),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
        ("2001:db8::1", False),
    ],
    ids=str,
)
def test_br_dcv_6_public_address_policy(address: str, allowed: bool) -> None:
    assert public_address_policy(ipaddress.ip_address(address)) is allowed


@pytest.mark.parametrize(
    ("url", "port", "reason"),
    [
        ("http://a.example/x", 80, None),
        ("http://a.example:80/x", 80, None),
        ("https://a.example/x", 443, None),
        ("https://a.example:443/x", 443, None),
        ("http://a.example:443/x", 443, None),
        ("http://a.example:8080/x", None, "port 8080"),
        ("https://a.example:8443/x", None, "port 8443"),
        ("http://a.example:22/x", None, "port 22"),
        ("ftp://a.example/x", None, "scheme"),
        ("file:///etc/passwd", None, "scheme"),
        ("http://10.0.0.1/x", None, "IP address"),
        ("http://[::1]/x", None, "IP address"),
        ("http://u@a.example/x", None, "user information"),
        ("http://a_b.example/x", None, "not a valid domain"),
        ("http:///x", None, "no host"),
    ],
    ids=str,
)
def test_br_dcv_3_url_policy(url: str, port: int | None, reason: str | None) -> None:
    if reason is None:
        assert parse_target(url).port == port
    else:
        with pytest.raises(TargetRefused, match=reason):
            parse_target(url)


def test_br_dcv_3_url_policy_maps_test_ports() -> None:
    target = parse_target("http://a.example/x y", http_port=5002, https_port=5003)
    assert (target.port, target.path, target.host_header) == (5002, "/x%20y", "a.example")
    assert parse_target("https://a.example:5003/", http_port=5002, https_port=5003).port == 5003
    with pytest.raises(TargetRefused):
        parse_target("http://a.example:80/", http_port=5002, https_port=5003)


# --- the Authorization Domain Name (BR 3.2.2.4 with SC-101; 5.4.1 with SC-099) ---------------


def served_only_to(host: str, body: str = KEY_AUTH) -> web.Application:
    """A web server answering the challenge path only for requests whose Host is ``host``;
    every other Host gets 404, so a validator that asked a parent or a CNAME target fails."""

    async def handler(request: web.Request) -> web.Response:
        asked = (request.host or "").rsplit(":", 1)[0].lower()
        if asked == host and request.path == PATH:
            return web.Response(text=body)
        return web.Response(status=404, text=f"nothing for {asked}")

    return app_with(handler)


async def test_br_3_2_2_4_19_http01_validates_exact_fqdn(serve: Serve, dns: DnsClient) -> None:
    """www.example.test must not pass because its parent example.test serves the token:
    method 3.2.2.4.19 has no Prune column, the ADN is the FQDN itself."""
    port = await serve(served_only_to("example.test"))
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=5.0)
    result = await validator.check("www.example.test", TOKEN, KEY_AUTH)
    assert problem_type(result) == "unauthorized", result.problem
    assert [r.query for r in result.records] == [f"http://www.example.test:{port}{PATH}"]
    (record,) = result.records
    assert (record.identifier, record.adn, record.result) == (
        "www.example.test",
        "www.example.test",
        "fail",
    )
    # The same server, asked for the name it does serve, passes: the check is not vacuous.
    parent = await validator.check("example.test", TOKEN, KEY_AUTH)
    assert parent.ok, parent.problem
    assert parent.records[-1].adn == "example.test"


async def test_br_3_2_2_4_19_http01_cname_target_is_not_the_adn(
    srv: ChallengeTestServer, serve: Serve, dns: DnsClient
) -> None:
    """www.example.test CNAME example.test: the addresses come through the CNAME (the DNS
    layer), but the request still names www.example.test -- the target serving the token
    proves nothing about www (3.2.2.4.19 has no CNAME column)."""
    srv.store.set_cname("www.example.test", "example.test")
    port = await serve(served_only_to("example.test"))
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=5.0)
    result = await validator.check("www.example.test", TOKEN, KEY_AUTH)
    assert problem_type(result) == "unauthorized", result.problem
    assert result.records[0].adn == "www.example.test"
    assert result.records[0].response is not None
    assert "nothing for www.example.test" in result.records[0].response


async def test_br_3_2_2_4_19_http01_fqdn_behind_cname_validates_as_itself(
    srv: ChallengeTestServer, serve: Serve, dns: DnsClient
) -> None:
    """Following the CNAME to find where to connect is allowed; the validated name is still
    the FQDN, and that is what the record names."""
    srv.store.set_cname("www.example.test", "cdn.example.test")
    port = await serve(served_only_to("www.example.test"))
    validator = Http01Validator(dns, port=port, address_policy=loopback_ok, timeout=5.0)
    result = await validator.check("www.example.test", TOKEN, KEY_AUTH)
    assert result.ok, result.problem
    (record,) = result.records
    assert (record.hostname, record.identifier, record.adn) == ("www.example.test",) * 3
    assert record.addresses == ("127.0.0.1",)


@pytest.mark.parametrize("wildcard", [True, False], ids=["flag", "prefix"])
async def test_br_3_2_2_4_19_http01_has_no_wildcard(
    srv: ChallengeTestServer, validator: Http01Validator, wildcard: bool
) -> None:
    """Neither a wildcard flag nor a ``*.`` name gets an ADN under 3.2.2.4.19; nothing is asked."""
    srv.store.add_http01(TOKEN, KEY_AUTH)
    name = "example.test" if wildcard else "*.example.test"
    result = await validator.check(name, TOKEN, KEY_AUTH, wildcard=wildcard)
    assert problem_type(result) == "unauthorized"
    assert result.problem is not None and "3.2.2.4.19" in result.problem.detail
    assert srv.store.http_history("example.test") == ()


async def test_br_5_4_1_http01_records_name_value_adn_and_method(
    srv: ChallengeTestServer, validator: Http01Validator
) -> None:
    """SC-099: every hop names what was validated, the ADN and the method; the hop that
    decided carries the result; the value is the key authorization that proved control."""
    port = srv.http01_port
    srv.store.add_redirect(PATH, f"http://b.example.test:{port}/.well-known/acme-challenge/final")
    srv.store.add_http01("final", KEY_AUTH)
    result = await validator.check(NAME, TOKEN, KEY_AUTH)
    assert result.ok, result.problem
    assert [r.hostname for r in result.records] == [NAME, "b.example.test"]
    for record in result.records:
        body = record.to_json()
        assert body["method"] == "http-01" and body["brMethod"] == "3.2.2.4.19"
        assert body["identifier"] == NAME and body["adn"] == NAME
        assert body["value"] == KEY_AUTH
    assert [r.result for r in result.records] == [None, "pass"]


def test_redirect_tls_context_is_made_once_per_process() -> None:
    """Issue 20: a remote VA builds its validators per request; the TLS settings are shared."""
    context = unverified_tls_context()
    assert unverified_tls_context() is context
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
