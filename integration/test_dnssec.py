"""DNSSEC through a real validating resolver (BR §3.2.2.4 and §3.2.2.8.1, since 2026-03-15).

The test signs a small zone ``dnssec.test.`` with dnspython (ECDSAP256SHA256), serves it from
a tiny authoritative server on 127.0.0.1, and starts Debian's Unbound on another 127.0.0.1
port with that zone as a stub and the zone's key as trust anchor.  The VA's DNS client then
asks Unbound, as production asks our own resolver:

* ``good.dnssec.test``: everything signed; answers carry AD and dns-01 passes with
  ``require_dnssec=True``;
* ``broken.dnssec.test``: every signature at the name altered; Unbound answers SERVFAIL, so
  dns-01 fails with ``dns`` and CAA is refused even though its record names us;
* ``insecure.dnssec.test``: an insecure delegation -- the signed parent has NS records and,
  proven by its signed NSEC, no DS -- to an unsigned child zone served by the same server.
  Unbound answers without AD; the client proves Unbound validates (AD on the parent's DNSKEY)
  and accepts the answer as DNSSEC-insecure: dns-01 passes and CAA there names us;
* the authoritative server asked directly (it never sets AD): nothing is accepted with
  ``require_dnssec=True``, since that "resolver" does not validate.

Without Unbound the test tries ``apt-get install -y unbound`` (when root); if that fails it is
skipped with the reason, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.RRSIG
import dns.rrset
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.va.caa_lookup import CaaChecker
from acme_ca.va.dns01 import Dns01Validator, dns01_txt_value
from acme_ca.va.records import dns_record
from acme_ca.va.resolver import DnsClient, DnsFailure, ResolverSettings

pytestmark = pytest.mark.integration

ACME = "urn:ietf:params:acme:error:"
ORIGIN = dns.name.from_text("dnssec.test.")
INSECURE_ORIGIN = dns.name.from_text("insecure.dnssec.test.")
KEY_AUTH = "tPUZNY4ONIk6LxErRFEjVw.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
ACCOUNT = "https://acme.jprs.test/acme/acct/1"
UNBOUND_CANDIDATES = ("/usr/sbin/unbound", "unbound")
STARTUP_TIMEOUT = 20.0
APT_TIMEOUT = 600

ZONE_TEXT = f"""
@ 3600 IN SOA ns hostmaster 1 3600 600 86400 60
@ 3600 IN NS ns
@ 3600 IN CAA 0 issue "jprs.jp"
ns 3600 IN A 127.0.0.1
good 3600 IN A 127.0.0.1
_acme-challenge.good 60 IN TXT "{dns01_txt_value(KEY_AUTH)}"
broken 3600 IN A 127.0.0.1
broken 3600 IN CAA 0 issue "jprs.jp"
_acme-challenge.broken 60 IN TXT "{dns01_txt_value(KEY_AUTH)}"
insecure 3600 IN NS ns
"""
INSECURE_ZONE_TEXT = f"""
@ 3600 IN SOA ns.dnssec.test. hostmaster.dnssec.test. 1 3600 600 86400 60
@ 3600 IN NS ns.dnssec.test.
@ 3600 IN A 127.0.0.1
@ 3600 IN CAA 0 issue "jprs.jp"
_acme-challenge 60 IN TXT "{dns01_txt_value(KEY_AUTH)}"
"""
BROKEN_NAMES = ("broken.dnssec.test.", "_acme-challenge.broken.dnssec.test.")


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI: CI must prove DNSSEC validation works."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"unbound is required under CI=true: {reason}")
    pytest.skip(reason)


# --- the signed zone ----------------------------------------------------------------------------


def _corrupt(rrsig: dns.rdata.Rdata) -> dns.rdata.Rdata:
    """The same RRSIG with one signature byte flipped: well-formed, cryptographically bogus."""
    assert isinstance(rrsig, dns.rdtypes.ANY.RRSIG.RRSIG)
    signature = bytearray(rrsig.signature)
    signature[len(signature) // 2] ^= 0xFF
    return rrsig.replace(signature=bytes(signature))


@dataclass(frozen=True)
class SignedZone:
    zone: dns.zone.Zone
    trust_anchor: str
    """Unbound's ``trust-anchor:`` value: the zone's DNSKEY in presentation format."""
    insecure: dns.zone.Zone
    """The unsigned child zone the signed one delegates to without DS."""


def signed_zone() -> SignedZone:
    """Sign the zone with one ECDSA P-256 key (flags 257), then break the broken names.

    dnspython signs neither the delegation's NS set nor anything below it, and gives the cut
    an NSEC (types NS, RRSIG, NSEC) that proves the missing DS.
    """
    zone = dns.zone.from_text(ZONE_TEXT, origin=ORIGIN, relativize=False)
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(
        key.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257
    )
    now = dt.datetime.now(dt.UTC)
    dns.dnssec.sign_zone(
        zone,
        keys=[(key, dnskey)],
        inception=now - dt.timedelta(hours=1),
        expiration=now + dt.timedelta(days=2),
    )
    with zone.writer() as txn:
        for text in BROKEN_NAMES:
            name = dns.name.from_text(text)
            node = zone.get_node(name)
            assert node is not None
            for rdataset in list(node.rdatasets):
                if rdataset.rdtype != dns.rdatatype.RRSIG:
                    continue
                rrsigs = [_corrupt(r) for r in rdataset]
                txn.replace(name, dns.rrset.from_rdata_list(name, rdataset.ttl, rrsigs))
    insecure = dns.zone.from_text(INSECURE_ZONE_TEXT, origin=INSECURE_ORIGIN, relativize=False)
    return SignedZone(zone, f"{ORIGIN.to_text()} DNSKEY {dnskey.to_text()}", insecure)


# --- a tiny authoritative server ----------------------------------------------------------------


def _with_sigs(
    zone: dns.zone.Zone, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, dnssec: bool
) -> list[dns.rrset.RRset]:
    """The RRset and, when the query had DO, the RRSIGs covering it."""
    found = zone.get_rrset(name, rdtype)
    if found is None:
        return []
    out = [found]
    if dnssec:
        sigs = zone.get_rrset(name, dns.rdatatype.RRSIG, rdtype)
        if sigs is not None:
            out.append(sigs)
    return out


def origin(zone: dns.zone.Zone) -> dns.name.Name:
    assert zone.origin is not None
    return zone.origin


def zone_for(
    zones: Sequence[dns.zone.Zone], qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.zone.Zone | None:
    """The closest enclosing zone served; DS at a child's apex is the parent's to answer."""
    enclosing = sorted(
        (z for z in zones if qname.is_subdomain(origin(z))),
        key=lambda z: len(origin(z)),
        reverse=True,
    )
    if not enclosing:
        return None
    if rdtype == dns.rdatatype.DS and qname == origin(enclosing[0]) and len(enclosing) > 1:
        return enclosing[1]
    return enclosing[0]


def answer(zones: Sequence[dns.zone.Zone], wire: bytes) -> bytes | None:
    """Answer one query authoritatively: data, NODATA or NXDOMAIN, with NSEC proofs.

    Serves every zone in ``zones`` (the signed parent and its unsigned child); an unsigned
    zone has no RRSIG or NSEC records, so its answers carry none.
    """
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    reply.flags &= ~dns.flags.RA
    if len(query.question) != 1:
        reply.set_rcode(dns.rcode.FORMERR)
        return reply.to_wire()
    question = query.question[0]
    qname, rdtype = question.name, question.rdtype
    dnssec = bool(query.ednsflags & dns.flags.DO)
    zone = zone_for(zones, qname, rdtype)
    if zone is None:
        reply.set_rcode(dns.rcode.REFUSED)
        return reply.to_wire()
    node = zone.get_node(qname)
    if node is not None and node.get_rdataset(dns.rdataclass.IN, rdtype) is not None:
        reply.answer.extend(_with_sigs(zone, qname, rdtype, dnssec))
    else:
        reply.authority.extend(_with_sigs(zone, origin(zone), dns.rdatatype.SOA, dnssec))
        if node is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            # A small zone: every NSEC proves whatever it can; the resolver picks.
            if dnssec:
                for name in list(zone.nodes):
                    reply.authority.extend(_with_sigs(zone, name, dns.rdatatype.NSEC, True))
        elif dnssec:
            reply.authority.extend(_with_sigs(zone, qname, dns.rdatatype.NSEC, True))
    return reply.to_wire(max_size=65535)


class AuthoritativeServer:
    """UDP and TCP on one 127.0.0.1 port, in threads, so it outlives any event loop."""

    def __init__(self, zones: Sequence[dns.zone.Zone]) -> None:
        zone_ref = tuple(zones)

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = answer(zone_ref, data)
                if reply is None:
                    return
                if len(reply) > 1232:
                    truncated = dns.message.from_wire(reply)
                    truncated.answer.clear()
                    truncated.authority.clear()
                    truncated.flags |= dns.flags.TC
                    reply = truncated.to_wire()
                sock.sendto(reply, self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    size = self.rfile.read(2)
                    if len(size) < 2:
                        return
                    reply = answer(zone_ref, self.rfile.read(int.from_bytes(size, "big")))
                    if reply is None:
                        return
                    self.wfile.write(len(reply).to_bytes(2, "big") + reply)

        self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
        self.port: int = self.udp.server_address[1]
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        self.tcp.daemon_threads = True
        self.udp.daemon_threads = True
        self._threads = [
            threading.Thread(target=s.serve_forever, daemon=True) for s in (self.udp, self.tcp)
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


# --- Unbound ------------------------------------------------------------------------------------


def find_unbound() -> str | None:
    for candidate in UNBOUND_CANDIDATES:
        path = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
        if path:
            return path
    return None


def install_unbound() -> str | None:
    """Debian's package, as the brief for this check requires; only as root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "install", "-y", "--no-install-recommends", "unbound"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "unbound"],
    ):
        done = subprocess.run(
            command, env=env, capture_output=True, timeout=APT_TIMEOUT, check=False
        )
        if command[1] == "install" and done.returncode == 0:
            break
    return find_unbound()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (a race we accept in tests)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def unbound_config(directory: Path, port: int, auth_port: int, trust_anchor: str) -> str:
    return f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    chroot: ""
    username: ""
    directory: "{directory}"
    pidfile: "{directory}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor: "{trust_anchor}"
    val-permissive-mode: no
    qname-minimisation: no
    harden-dnssec-stripped: yes
    local-zone: "test." nodefault
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
    val-bogus-ttl: 1

remote-control:
    control-enable: no

stub-zone:
    name: "{ORIGIN.to_text()}"
    stub-addr: 127.0.0.1@{auth_port}

# The child's NS (ns.dnssec.test) has no port; the stub sends Unbound to the same server.
stub-zone:
    name: "{INSECURE_ORIGIN.to_text()}"
    stub-addr: 127.0.0.1@{auth_port}
"""


@dataclass(frozen=True)
class Resolver:
    port: int
    log: Path
    auth_port: int
    """The authoritative server's port: a DNS server that does not validate."""

    def settings(
        self, *, require_dnssec: bool = True, tcp: bool = True, port: int | None = None
    ) -> ResolverSettings:
        return ResolverSettings(
            (f"127.0.0.1:{port or self.port}",),
            timeout=5.0,
            attempts=1,
            require_dnssec=require_dnssec,
            tcp=tcp,
        )


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    query = dns.message.make_query("dnssec.test.", "SOA")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            unavailable(f"unbound exited with {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(dns.exception.DNSException, OSError):
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            return
        time.sleep(0.1)
    unavailable(f"unbound did not answer on port {port}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def zone() -> SignedZone:
    return signed_zone()


@pytest.fixture(scope="module")
def resolver(zone: SignedZone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resolver]:
    binary = find_unbound() or install_unbound()
    if binary is None:
        unavailable("unbound is not installed and `apt-get install -y unbound` failed")
        return
    auth = AuthoritativeServer((zone.zone, zone.insecure))
    directory = tmp_path_factory.mktemp("unbound")
    port = free_port()
    config = directory / "unbound.conf"
    config.write_text(unbound_config(directory, port, auth.port, zone.trust_anchor))
    log = directory / "unbound.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, "-d", "-c", str(config)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(process, port, log)
        yield Resolver(port, log, auth.port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        auth.close()


# --- the cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [True, False], ids=["tcp", "udp"])
async def test_br_dcv_1_signed_txt_validates(resolver: Resolver, tcp: bool) -> None:
    client = DnsClient(resolver.settings(tcp=tcp))
    answer = await client.query("_acme-challenge.good.dnssec.test", "TXT")
    assert answer.ok, (answer, resolver.log.read_text()[-2000:])
    assert answer.authenticated is True
    assert answer.dnssec == "secure"
    result = await Dns01Validator(client).check("good.dnssec.test", KEY_AUTH)
    assert result.ok, result.problem
    assert result.records[0].authenticated is True
    assert result.records[0].to_json()["dnssec"] == "secure"
    assert result.observed == dns01_txt_value(KEY_AUTH)


async def test_br_dcv_1_broken_rrsig_is_servfail(resolver: Resolver) -> None:
    client = DnsClient(resolver.settings())
    answer = await client.query("_acme-challenge.broken.dnssec.test", "TXT")
    assert answer.failure is DnsFailure.SERVFAIL, answer
    result = await Dns01Validator(client).check("broken.dnssec.test", KEY_AUTH)
    assert not result.ok and result.problem is not None
    assert result.problem.type == ACME + "dns"
    assert "servfail" in result.problem.detail


async def test_br_dcv_1_resolver_validates_even_when_not_required(resolver: Resolver) -> None:
    """The refusal comes from the resolver's validation, not only from our AD check."""
    client = DnsClient(resolver.settings(require_dnssec=False))
    result = await Dns01Validator(client).check("broken.dnssec.test", KEY_AUTH)
    assert result.problem is not None and result.problem.type == ACME + "dns"


async def test_caa_11_bogus_caa_refused(resolver: Resolver) -> None:
    """The broken name's CAA record names us, but a bogus answer is never permission."""
    checker = CaaChecker.from_dns(DnsClient(resolver.settings()))
    result = await checker.check(
        "broken.dnssec.test", wildcard=False, account_uri=ACCOUNT, validation_method="dns-01"
    )
    assert not result.ok and result.problem is not None
    assert result.problem.type == ACME + "caa"
    assert result.problem.status == 403
    assert result.records[0].error is not None


async def test_caa_signed_climb_allowed(resolver: Resolver) -> None:
    """Authenticated NODATA at the name, then the signed issue property at the apex."""
    checker = CaaChecker.from_dns(DnsClient(resolver.settings()))
    result = await checker.check(
        "good.dnssec.test", wildcard=False, account_uri=ACCOUNT, validation_method="dns-01"
    )
    assert result.ok, (result.problem, resolver.log.read_text()[-2000:])
    assert [r.query for r in result.records] == ["good.dnssec.test CAA", "dnssec.test CAA"]
    assert all(r.authenticated for r in result.records)


async def test_br_dcv_1_insecure_delegation_accepted(resolver: Resolver) -> None:
    """No DS under a signed parent: Unbound proves the child insecure and gives no AD.

    The client accepts that only after seeing AD on the parent's DNSKEY from Unbound, and
    says so in the record.
    """
    client = DnsClient(resolver.settings())
    ds = await DnsClient(resolver.settings(require_dnssec=False)).query(
        "insecure.dnssec.test", "DS"
    )
    assert ds.ok and ds.records == () and ds.authenticated is True, ds  # signed NSEC: no DS
    answer = await client.query("_acme-challenge.insecure.dnssec.test", "TXT")
    assert answer.ok, (answer, resolver.log.read_text()[-2000:])
    assert answer.authenticated is False
    assert answer.dnssec == "insecure"
    assert answer.validated_ancestor == "dnssec.test."
    result = await Dns01Validator(client).check("insecure.dnssec.test", KEY_AUTH)
    assert result.ok, result.problem
    assert result.observed == dns01_txt_value(KEY_AUTH)
    record = result.records[0].to_json()
    assert record["authenticated"] is False
    assert record["dnssec"] == "insecure"


async def test_caa_11_insecure_caa_allowed(resolver: Resolver) -> None:
    """The insecure zone's own ``issue "jprs.jp"`` is permission: proven insecure, not bogus."""
    client = DnsClient(resolver.settings())
    checker = CaaChecker.from_dns(client)
    result = await checker.check(
        "insecure.dnssec.test", wildcard=False, account_uri=ACCOUNT, validation_method="dns-01"
    )
    assert result.ok, (result.problem, resolver.log.read_text()[-2000:])
    assert [r.query for r in result.records] == ["insecure.dnssec.test CAA"]
    assert result.records[0].authenticated is False
    caa = await client.query("insecure.dnssec.test", "CAA")
    assert caa.dnssec == "insecure"
    assert [r.to_text() for r in caa.records] == ['0 issue "jprs.jp"']


@pytest.mark.parametrize("name", ["good.dnssec.test", "insecure.dnssec.test"])
async def test_br_dcv_1_non_validating_resolver_refused(resolver: Resolver, name: str) -> None:
    """The authoritative server never sets AD: it does not validate, so nothing it says counts.

    Even the signed zone's data fails: without a validator nobody checked the signatures.
    """
    client = DnsClient(resolver.settings(port=resolver.auth_port))
    answer = await client.query(f"_acme-challenge.{name}", "TXT")
    assert answer.failure is DnsFailure.UNAUTHENTICATED, answer
    result = await Dns01Validator(client).check(name, KEY_AUTH)
    assert not result.ok and result.problem is not None
    assert result.problem.type == ACME + "dns"
    assert "does not appear to validate DNSSEC" in result.problem.detail
    assert result.records[0].error is not None
    assert "dnssec" not in result.records[0].to_json()
    checker = CaaChecker.from_dns(client)
    caa = await checker.check(name, wildcard=False, account_uri=ACCOUNT, validation_method="dns-01")
    assert not caa.ok and caa.problem is not None and caa.problem.type == ACME + "caa"


async def test_br_dcv_1_non_validating_resolver_unchecked_when_off(resolver: Resolver) -> None:
    """``dnssec = "off"`` (tests only) takes the same answer and marks it unchecked."""
    client = DnsClient(resolver.settings(port=resolver.auth_port, require_dnssec=False))
    answer = await client.query("_acme-challenge.insecure.dnssec.test", "TXT")
    assert answer.ok and answer.dnssec == "unchecked"
    record = dns_record(
        answer, method="dns-01", hostname="insecure.dnssec.test", at=dt.datetime.now(dt.UTC)
    )
    assert record.to_json()["dnssec"] == "unchecked"
