"""tls-alpn-01 (RFC 8737, BR 3.2.2.4.20): ALPN-1..5 and the SC-101 rows for it.

Real TLS responders on 127.0.0.1 serve certificates built here, right and wrong; names
resolve through the challenge test server's DNS (default A record 127.0.0.1), and the VA's
address policy is production's plus loopback (tests/support/va.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acme_ca.clock import FixedClock, SystemClock
from acme_ca.config import Config
from acme_ca.deployment.invariants import CHECKS, HTTP01, Context
from acme_ca.testsrv.server import BindAddress, ChallengeServerConfig, ChallengeTestServer
from acme_ca.testsrv.store import CaaPolicy
from acme_ca.testsrv.tlsalpn01 import load_pem_chain
from acme_ca.va.addresses import public_address_policy
from acme_ca.va.records import ChallengeRequest, CheckResult
from acme_ca.va.tlsalpn01 import (
    ACME_IDENTIFIER_OID,
    ALPN_PROTOCOL,
    TLS_PORT,
    TlsAlpn01Validator,
    acme_identifier_value,
    client_context,
)
from tests.fixtures import CaFactory, free_socket
from tests.support.orders import subscriber, validation_config
from tests.support.problems import ERR
from tests.support.va import local_authority, loopback_ok, srv_dns

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTH = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
ACCOUNT = "https://ca.example/acme/acct/1"
NAME = "alpn.example.test"
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Spec:
    """One challenge certificate, right unless a field says otherwise."""

    sans: tuple[x509.GeneralName, ...] = (x509.DNSName(NAME),)
    value: bytes = field(default_factory=lambda: acme_identifier_value(KEY_AUTH))
    critical: bool = True
    identifier: bool = True
    ca: bool = False
    not_before: datetime = NOW - timedelta(hours=1)
    not_after: datetime = NOW + timedelta(hours=1)
    issued_by_other_key: bool = False


def build(spec: Spec) -> bytes:
    """The certificate and its key as one PEM, as a TLS server loads them."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = ec.generate_private_key(ec.SECP256R1()) if spec.issued_by_other_key else key
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME challenge")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.SubjectAlternativeName(list(spec.sans)), critical=False)
    )
    if spec.identifier:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, spec.value), critical=spec.critical
        )
    if spec.ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    cert = builder.sign(signer, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Responder:
    port: int
    server_names: list[str | None]


@contextlib.asynccontextmanager
async def responder(pem: bytes | None, *, alpn: bool = True) -> AsyncIterator[Responder]:
    """A TLS server on 127.0.0.1 presenting ``pem``; ``alpn=False``: it selects no ALPN
    protocol; ``pem=None``: a plain TCP server answering in HTTP (no TLS at all)."""
    seen: list[str | None] = []
    context: ssl.SSLContext | None = None
    if pem is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_pem_chain(context, pem)
        if alpn:
            context.set_alpn_protocols([ALPN_PROTOCOL])

        def remember(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            seen.append(name)

        context.sni_callback = remember

    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if context is None:  # answer the ClientHello with something that is not TLS
            await reader.read(1)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(close, "127.0.0.1", 0, ssl=context)
    try:
        yield Responder(server.sockets[0].getsockname()[1], seen)
    finally:
        server.close()
        await server.wait_closed()


def validator(srv: ChallengeTestServer, port: int, **kwargs: object) -> TlsAlpn01Validator:
    policy = kwargs.pop("address_policy", loopback_ok)
    return TlsAlpn01Validator(
        srv_dns(srv),
        port=port,
        address_policy=policy,  # type: ignore[arg-type]
        clock=FixedClock(NOW),
        **kwargs,  # type: ignore[arg-type]
    )


async def check(
    srv: ChallengeTestServer, spec: Spec | None, *, name: str = NAME, alpn: bool = True
) -> tuple[CheckResult, Responder]:
    async with responder(build(spec) if spec is not None else None, alpn=alpn) as r:
        result = await validator(srv, r.port).check(name, KEY_AUTH)
    return result, r


def digest() -> str:
    return hashlib.sha256(KEY_AUTH.encode()).hexdigest()


async def test_alpn_1_to_4_the_right_certificate_passes(srv: ChallengeTestServer) -> None:
    """ALPN acme-tls/1, SNI the name, self-signed, one dNSName SAN, critical acmeIdentifier
    with SHA-256(key authorization): valid; every record names method, section, ADN."""
    result, r = await check(srv, Spec())
    assert result.ok, result.problem
    assert result.observed == digest()
    assert r.server_names == [NAME]  # ALPN-2: SNI is the name
    (record,) = result.records
    body = record.to_json()
    assert body["method"] == "tls-alpn-01" and body["brMethod"] == "3.2.2.4.20"
    assert body["identifier"] == body["adn"] == body["hostname"] == NAME
    assert body["server"] == f"127.0.0.1:{r.port}" and body["addresses"] == ["127.0.0.1"]
    assert body["value"] == digest() and body["result"] == "pass"
    assert f"ALPN {ALPN_PROTOCOL}" in str(body["response"])


REFUSALS: list[tuple[str, Spec, str]] = [
    ("wrong-san", Spec(sans=(x509.DNSName("other.example.test"),)), "dNSName is"),
    (
        "two-sans",
        Spec(sans=(x509.DNSName(NAME), x509.DNSName("www." + NAME))),
        "names 2 identifiers",
    ),
    ("wrong-digest", Spec(value=acme_identifier_value("other.key-authorization")), "expected"),
    ("non-critical", Spec(critical=False), "not critical"),
    ("no-identifier", Spec(identifier=False), "no acmeIdentifier"),
    (
        "digest-not-octet-string",
        Spec(value=hashlib.sha256(KEY_AUTH.encode()).digest()),
        "not an OCTET STRING",
    ),
    (
        "expired",
        Spec(not_before=NOW - timedelta(days=2), not_after=NOW - timedelta(days=1)),
        "expired",
    ),
    ("not-yet-valid", Spec(not_before=NOW + timedelta(hours=1)), "not valid before"),
    ("ca-certificate", Spec(ca=True), "CA certificate"),
    ("not-self-signed", Spec(issued_by_other_key=True), "not self-signed"),
]


@pytest.mark.parametrize(
    ("spec", "reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
async def test_alpn_3_4_wrong_certificates_refused_with_their_reason(
    srv: ChallengeTestServer, spec: Spec, reason: str
) -> None:
    result, r = await check(srv, spec)
    assert result.problem is not None, spec
    assert result.problem.type == ERR + "unauthorized"
    assert "Incorrect validation certificate for tls-alpn-01" in result.problem.detail
    assert reason in result.problem.detail
    assert f"127.0.0.1:{r.port}" in result.problem.detail
    assert result.records[-1].result == "fail" and result.records[-1].error is not None


async def test_alpn_1_server_without_acme_tls_1_refused(srv: ChallengeTestServer) -> None:
    """ALPN-1: a server that does not select acme-tls/1 (any ordinary TLS server) fails,
    even with the right certificate."""
    result, _ = await check(srv, Spec(), alpn=False)
    assert result.problem is not None and result.problem.type == ERR + "unauthorized"
    assert "Cannot negotiate ALPN protocol 'acme-tls/1'" in result.problem.detail
    assert "no protocol" in result.problem.detail


async def test_alpn_tls_and_connection_failures(srv: ChallengeTestServer) -> None:
    """No TLS on the port: a ``tls`` problem; nothing listening: ``connection``; both name the
    address tried."""
    result, r = await check(srv, None)
    assert result.problem is not None and result.problem.type == ERR + "tls", result.problem
    assert f"127.0.0.1:{r.port}" in result.problem.detail
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    refused = await validator(srv, port).check(NAME, KEY_AUTH)
    assert refused.problem is not None and refused.problem.type == ERR + "connection"
    assert refused.records[-1].server == f"127.0.0.1:{port}"


async def test_adn_1_tlsalpn01_wildcard_refused(srv: ChallengeTestServer) -> None:
    """SC-101: tls-alpn-01 has no Wildcard column: refused before any lookup."""
    async with responder(build(Spec())) as r:
        result = await validator(srv, r.port).check(NAME, KEY_AUTH, wildcard=True)
        assert r.server_names == []
    assert result.problem is not None and result.problem.type == ERR + "unauthorized"
    assert "3.2.2.4.20" in result.problem.detail
    assert srv.store.dns_history(NAME) == ()


async def test_adn_1_tlsalpn01_validates_exactly_the_fqdn(srv: ChallengeTestServer) -> None:
    """SC-101: the ADN is the applied-for FQDN: SNI and SAN are www.<name>; a certificate for
    the parent name does not prove the child, and nothing is pruned."""
    child = "www." + NAME
    result, r = await check(srv, Spec(sans=(x509.DNSName(child),)), name=child)
    assert result.ok, result.problem
    assert r.server_names == [child]
    assert result.records[-1].adn == child
    parent, r = await check(srv, Spec(), name=child)
    assert parent.problem is not None and "dNSName is" in parent.problem.detail
    assert r.server_names == [child]


async def test_adn_1_http01_validates_exactly_the_fqdn(srv: ChallengeTestServer) -> None:
    """SC-101: http-01 asks the applied-for FQDN itself (Host and URL), never a parent."""
    child = "www.http.example.test"
    srv.store.add_http01(TOKEN, KEY_AUTH)
    result = await local_authority(srv, FixedClock(NOW)).validate(
        ChallengeRequest("http-01", child, False, TOKEN, KEY_AUTH, ACCOUNT)
    )
    assert result.ok, result.problem
    assert [e.host.split(":")[0] for e in srv.store.http_history(child)] == [child]
    assert srv.store.http_history("http.example.test") == ()
    assert {r.adn for r in result.records if r.method == "http-01"} == {child}


async def test_alpn_address_policy_shared_with_http01(srv: ChallengeTestServer) -> None:
    """BR-DCV-6: production's address policy refuses 127.0.0.1 before any connection."""
    async with responder(build(Spec())) as r:
        result = await validator(srv, r.port, address_policy=public_address_policy).check(
            NAME, KEY_AUTH
        )
        assert r.server_names == []
    assert result.problem is not None and result.problem.type == ERR + "dns"
    assert "127.0.0.1 refused" in result.problem.detail
    assert result.records[-1].addresses == ("127.0.0.1",)


def test_alpn_5_port_443_by_default() -> None:
    """ALPN-5: the VA connects to 443 unless configured (tests and test mode move it)."""
    assert TLS_PORT == 443
    assert TlsAlpn01Validator(dns=None).port == 443  # type: ignore[arg-type]


# --- the challenge test server's listener and its management verbs ---------------------------


@pytest.fixture
async def alpn_srv() -> AsyncIterator[ChallengeTestServer]:
    config = replace(ChallengeServerConfig.ephemeral(), tlsalpn01=BindAddress("127.0.0.1", 0))
    async with ChallengeTestServer(config, clock=SystemClock()) as server:
        yield server


async def test_testsrv_add_and_del_tlsalpn01(
    alpn_srv: ChallengeTestServer, session: aiohttp.ClientSession
) -> None:
    """Pebble's /add-tlsalpn01 {host, content} makes the listener serve a certificate the VA
    accepts (with CAA, through the whole authority); /del-tlsalpn01 {host} removes it."""
    api = alpn_srv.management_url
    async with session.post(f"{api}/add-tlsalpn01", json={"host": NAME, "content": KEY_AUTH}) as r:
        assert r.status == 200 and await r.read() == b""
    alpn_srv.store.add_caa(NAME, [CaaPolicy("issue", "jprs.jp")])
    va = local_authority(alpn_srv, SystemClock())
    result = await va.validate(
        ChallengeRequest("tls-alpn-01", NAME, False, TOKEN, KEY_AUTH, ACCOUNT)
    )
    assert result.ok, result.problem
    assert result.observed == digest()
    async with session.post(f"{api}/del-tlsalpn01", json={"host": NAME}) as r:
        assert r.status == 200
    gone = await va.validate(ChallengeRequest("tls-alpn-01", NAME, False, TOKEN, KEY_AUTH, ACCOUNT))
    assert gone.problem is not None and gone.problem.type == ERR + "tls"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/add-tlsalpn01", {"host": NAME}),
        ("/add-tlsalpn01", {"content": KEY_AUTH}),
        ("/del-tlsalpn01", {}),
    ],
    ids=["add-without-content", "add-without-host", "del-without-host"],
)
async def test_testsrv_tlsalpn01_bodies_refused(
    alpn_srv: ChallengeTestServer,
    session: aiohttp.ClientSession,
    path: str,
    body: dict[str, str],
) -> None:
    async with session.post(alpn_srv.management_url + path, json=body) as r:
        assert r.status == 400


async def test_testsrv_tlsalpn01_verbs_absent_without_listener(
    srv: ChallengeTestServer, session: aiohttp.ClientSession
) -> None:
    """As in Pebble, a disabled listener's verbs are 404."""
    body = {"host": NAME, "content": KEY_AUTH}
    async with session.post(srv.management_url + "/add-tlsalpn01", json=body) as r:
        assert r.status == 404
    assert srv.tlsalpn01_port is None


def test_alpn_5_production_invariant_wants_port_443() -> None:
    """ALPN-5: a production deployment offering tls-alpn-01 must connect to 443; the http-01
    invariant (BR 3.2.2.4.19/.20) says which key is wrong."""
    check = CHECKS[HTTP01.id]
    ok = Config()
    assert check(Context(ok, NOW, None, ""))[0]
    moved = replace(ok, tlsalpn01_port=5001)
    passed, detail = check(Context(moved, NOW, None, ""))
    assert not passed and "tlsalpn01_port = 5001, not 443" in detail
    off = replace(moved, challenge_types=["http-01", "dns-01"])
    assert check(Context(off, NOW, None, ""))[0]


async def test_alpn_ipv6_first_then_ipv4_each_attempt_recorded(srv: ChallengeTestServer) -> None:
    """IPv6 is tried first; when it refuses the connection the first IPv4 address is tried,
    and both attempts are records (SC-099: the addresses tried)."""
    srv.store.add_aaaa(NAME, ["::1"])
    result, r = await check(srv, Spec())
    assert result.ok, result.problem
    first, second = result.records
    assert first.server == f"[::1]:{r.port}" and first.error is not None
    assert second.server == f"127.0.0.1:{r.port}" and second.result == "pass"
    assert set(first.addresses) == {"::1", "127.0.0.1"}


async def test_alpn_acme_authorization_validated_through_the_challenge_server(
    ca_factory: CaFactory, alpn_srv: ChallengeTestServer, session: aiohttp.ClientSession
) -> None:
    """Over ACME: a new authorization offers tls-alpn-01 (a default method); with the key
    authorization given to the challenge server (/add-tlsalpn01) the POST validates it, the
    records name BR 3.2.2.4.20, and the order becomes ready."""
    config = {**validation_config(alpn_srv), "tlsalpn01_port": alpn_srv.tlsalpn01_port}
    ca = await ca_factory.start(**config)
    sub = await subscriber(ca, session, alpn_srv)
    reply = await sub.new_order("alpn-acme.example.com")
    authz = (await sub.get(reply.body["authorizations"][0])).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "tls-alpn-01")
    alpn_srv.store.add_tlsalpn01("alpn-acme.example.com", sub.key_authorization(challenge["token"]))
    answered = await sub.post(challenge["url"], {})
    assert answered.status == 200
    done = answered.body
    for _ in range(200):
        if done["status"] != "processing":
            break
        await asyncio.sleep(0.02)
        done = (await sub.get(challenge["url"])).body
    assert done["status"] == "valid", done
    records = [r for r in done["validationRecord"] if r["method"] == "tls-alpn-01"]
    assert records and records[-1]["brMethod"] == "3.2.2.4.20" and records[-1]["result"] == "pass"
    assert (await sub.wait_order(reply.headers["Location"]))["status"] == "ready"


@pytest.mark.parametrize(
    ("timeout", "attempt_timeout", "problem", "detail"),
    # attempt-timeout: the whole check's timeout is far above the attempt's, so name
    # resolution and the TCP connect on a loaded machine cannot end the check first (it
    # still ends when its one attempt does, after 1 s); whole-check-timeout: the other way.
    [(10.0, 1.0, "tls", "TLS handshake with"), (0.2, 5.0, "connection", "timeout after 0.2")],
    ids=["attempt-timeout", "whole-check-timeout"],
)
async def test_alpn_silent_server_times_out(
    srv: ChallengeTestServer, timeout: float, attempt_timeout: float, problem: str, detail: str
) -> None:
    """A server that accepts and never answers the ClientHello: the attempt's timeout (a
    failed handshake, ``tls``) or the whole check's (``connection``) ends it, with a record;
    the event loop is never blocked."""
    hold = asyncio.Event()

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        quick = validator(srv, port, timeout=timeout, attempt_timeout=attempt_timeout)
        result = await quick.check(NAME, KEY_AUTH)
    finally:
        hold.set()
        server.close()
        await server.wait_closed()
    assert result.problem is not None and result.problem.type == ERR + problem, result.problem
    assert detail in result.problem.detail
    assert result.records and result.records[-1].result == "fail"


def test_client_context_is_made_once_per_process() -> None:
    """Issue 20: a remote VA builds its validators per request; the TLS settings are shared."""
    context = client_context()
    assert client_context() is context
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
