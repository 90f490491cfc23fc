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

The authoritative server and Unbound's configuration come from ``integration/signed_dns.py``.
Without Unbound the test tries ``apt-get install -y unbound`` (when root); if that fails it is
skipped with the reason, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

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
from integration.signed_dns import (
    AuthoritativeServer,
    find_unbound,
    free_port,
    install_unbound,
    running_unbound,
    unbound_config,
)
from tests.support.problems import ERR
from tests.support.requirements import unavailable

pytestmark = pytest.mark.integration

ORIGIN = dns.name.from_text("dnssec.test.")
INSECURE_ORIGIN = dns.name.from_text("insecure.dnssec.test.")
KEY_AUTH = "tPUZNY4ONIk6LxErRFEjVw.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
ACCOUNT = "https://acme.jprs.test/acme/acct/1"

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


def unbound_unavailable(reason: str) -> NoReturn:
    """Skip locally, fail under CI (as any user): CI must prove DNSSEC validation works."""
    unavailable(f"unbound is required: {reason}", even_unprivileged=True)


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


@pytest.fixture(scope="module")
def zone() -> SignedZone:
    return signed_zone()


@pytest.fixture(scope="module")
def resolver(zone: SignedZone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resolver]:
    binary = find_unbound() or install_unbound()
    if binary is None:
        unbound_unavailable("unbound is not installed and `apt-get install -y unbound` failed")
    auth = AuthoritativeServer((zone.zone, zone.insecure))
    directory = tmp_path_factory.mktemp("unbound")
    port = free_port()
    stub = f"127.0.0.1@{auth.port}"
    # The child's NS (ns.dnssec.test) has no port; the stub sends Unbound to the same server.
    config = unbound_config(
        directory,
        port,
        [zone.trust_anchor],
        [(ORIGIN.to_text(), stub), (INSECURE_ORIGIN.to_text(), stub)],
    )
    try:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(running_unbound(binary, directory, config))
            except RuntimeError as exc:
                unbound_unavailable(str(exc))
            yield Resolver(port, directory / "unbound.log", auth.port)
    finally:
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
    assert result.problem.type == ERR + "dns"
    assert "servfail" in result.problem.detail


async def test_br_dcv_1_resolver_validates_even_when_not_required(resolver: Resolver) -> None:
    """The refusal comes from the resolver's validation, not only from our AD check."""
    client = DnsClient(resolver.settings(require_dnssec=False))
    result = await Dns01Validator(client).check("broken.dnssec.test", KEY_AUTH)
    assert result.problem is not None and result.problem.type == ERR + "dns"


async def test_caa_11_bogus_caa_refused(resolver: Resolver) -> None:
    """The broken name's CAA record names us, but a bogus answer is never permission."""
    checker = CaaChecker.from_dns(DnsClient(resolver.settings()))
    result = await checker.check(
        "broken.dnssec.test", wildcard=False, account_uri=ACCOUNT, validation_method="dns-01"
    )
    assert not result.ok and result.problem is not None
    assert result.problem.type == ERR + "caa"
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
    assert result.problem.type == ERR + "dns"
    assert "does not appear to validate DNSSEC" in result.problem.detail
    assert result.records[0].error is not None
    assert "dnssec" not in result.records[0].to_json()
    checker = CaaChecker.from_dns(client)
    caa = await checker.check(name, wildcard=False, account_uri=ACCOUNT, validation_method="dns-01")
    assert not caa.ok and caa.problem is not None and caa.problem.type == ERR + "caa"


async def test_br_dcv_1_non_validating_resolver_unchecked_when_off(resolver: Resolver) -> None:
    """``dnssec = "off"`` (tests only) takes the same answer and marks it unchecked."""
    client = DnsClient(resolver.settings(port=resolver.auth_port, require_dnssec=False))
    answer = await client.query("_acme-challenge.insecure.dnssec.test", "TXT")
    assert answer.ok and answer.dnssec == "unchecked"
    record = dns_record(
        answer, method="dns-01", hostname="insecure.dnssec.test", at=dt.datetime.now(dt.UTC)
    )
    assert record.to_json()["dnssec"] == "unchecked"
