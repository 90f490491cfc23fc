"""The DNS client's DNSSEC verdicts: secure, insecure (proven-validating resolver), unchecked.

A fake transport stands in for the resolver so each reply's AD bit can be chosen: with
``require_dnssec`` an answer without AD is usable only as ``insecure``, after a DNSKEY query
for an ancestor came back with AD from the same resolver (BR §3.2.2.4, §3.2.2.8.1).  The
real resolver behaviour is in ``integration/test_dnssec.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from acme_ca.clock import FixedClock
from acme_ca.va.records import dns_record
from acme_ca.va.resolver import (
    VALIDATION_PROOF_TTL,
    DnsClient,
    DnsFailure,
    Nameserver,
    ResolverSettings,
)

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Canned:
    """One resolver reply: rcode, AD bit and answer RRsets in presentation format."""

    rcode: int = dns.rcode.NOERROR
    ad: bool = False
    answer: tuple[str, ...] = ()


Handler = Callable[[str, str, str], Canned | None]
"""(server, qname without final dot, type) → reply; None means a timeout."""


class FakeClient(DnsClient):
    """A :class:`DnsClient` whose network is ``handler``; every question is logged."""

    def __init__(
        self,
        handler: Handler,
        *,
        nameservers: tuple[str, ...] = ("127.0.0.1:53",),
        require_dnssec: bool = True,
        clock: FixedClock | None = None,
    ) -> None:
        super().__init__(
            ResolverSettings(nameservers, attempts=1, require_dnssec=require_dnssec),
            clock=clock or FixedClock(T0),
        )
        self.handler = handler
        self.asked: list[tuple[str, str, str]] = []

    async def _send(self, query: dns.message.Message, ns: Nameserver) -> dns.message.Message:
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True) or "."
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.asked.append((str(ns), name, rdtype))
        canned = self.handler(str(ns), name, rdtype)
        if canned is None:
            raise dns.exception.Timeout
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.Rcode(canned.rcode))
        if canned.ad:
            reply.flags |= dns.flags.AD
        for text in canned.answer:
            owner, ttl, rdclass, rdtype, data = text.split(" ", 4)
            reply.answer.append(dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, data))
        return reply

    def probes(self) -> list[str]:
        return [name for _, name, rdtype in self.asked if rdtype == "DNSKEY"]


TXT = '_acme-challenge.www.example.com. 60 IN TXT "token"'


def zones(secure: set[str], validating: set[str]) -> Handler:
    """Answers TXT with AD when its name is in ``secure``; DNSKEY with AD for ``validating``."""

    def handler(server: str, name: str, rdtype: str) -> Canned:
        if rdtype == "DNSKEY":
            return Canned(ad=name in validating)
        if rdtype == "TXT":
            return Canned(ad=name in secure, answer=(f'{name}. 60 IN TXT "token"',))
        return Canned()

    return handler


# --- secure, insecure, unproven -----------------------------------------------------------------


async def test_br_dcv_1_ad_answer_is_secure_without_probes() -> None:
    client = FakeClient(zones({"_acme-challenge.www.example.com"}, set()))
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.ok and answer.authenticated
    assert answer.dnssec == "secure"
    assert answer.validated_ancestor is None
    assert client.probes() == []


async def test_br_dcv_1_no_ad_below_validated_ancestor_is_insecure() -> None:
    """Closest ancestor first; the first authenticated DNSKEY answer is the proof."""
    client = FakeClient(zones(set(), {"com", "."}))
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.ok, answer
    assert answer.authenticated is False
    assert answer.dnssec == "insecure"
    assert answer.validated_ancestor == "com."
    assert [r.to_text() for r in answer.records] == ['"token"']
    assert client.probes() == ["www.example.com", "example.com", "com"]


async def test_br_dcv_1_root_is_the_last_ancestor_tried() -> None:
    client = FakeClient(zones(set(), {"."}))
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.dnssec == "insecure" and answer.validated_ancestor == "."
    assert client.probes() == ["www.example.com", "example.com", "com", "."]


async def test_br_dcv_1_non_validating_resolver_refused() -> None:
    """No AD anywhere: the resolver does not validate, so nothing it says is usable."""
    client = FakeClient(zones(set(), set()))
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.failure is DnsFailure.UNAUTHENTICATED
    assert answer.records == () and answer.dnssec is None
    assert answer.error is not None
    assert "does not appear to validate DNSSEC" in answer.error
    assert "127.0.0.1:53" in answer.error
    assert client.probes() == ["www.example.com", "example.com", "com", "."]


async def test_br_dcv_1_probe_failures_are_no_proof() -> None:
    """SERVFAIL, REFUSED or timeouts on the DNSKEY queries prove nothing."""

    def handler(server: str, name: str, rdtype: str) -> Canned | None:
        if rdtype == "TXT":
            return Canned(answer=(TXT,))
        if name == "com":
            return None
        return Canned(rcode=dns.rcode.SERVFAIL if name == "." else dns.rcode.REFUSED)

    answer = await FakeClient(handler).query("_acme-challenge.www.example.com", "TXT")
    assert answer.failure is DnsFailure.UNAUTHENTICATED


async def test_br_dcv_1_authenticated_nxdomain_on_ancestor_is_proof() -> None:
    """A validated denial of existence carries AD as well: it proves validation."""

    def handler(server: str, name: str, rdtype: str) -> Canned:
        if rdtype == "TXT":
            return Canned(answer=(TXT,))
        if name == "example.com":
            return Canned(rcode=dns.rcode.NXDOMAIN, ad=True)
        return Canned()

    answer = await FakeClient(handler).query("_acme-challenge.www.example.com", "TXT")
    assert answer.dnssec == "insecure" and answer.validated_ancestor == "example.com."


async def test_caa_11_servfail_stays_failure_without_probes() -> None:
    """Bogus data comes back from a validating resolver as SERVFAIL: never usable."""
    client = FakeClient(lambda server, name, rdtype: Canned(rcode=dns.rcode.SERVFAIL))
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.failure is DnsFailure.SERVFAIL
    assert client.probes() == []


async def test_insecure_empty_answer_is_usable() -> None:
    """NXDOMAIN/NODATA from an insecure zone is an empty, usable answer (CAA climbs on it)."""

    def handler(server: str, name: str, rdtype: str) -> Canned:
        if rdtype == "CAA":
            return Canned(rcode=dns.rcode.NXDOMAIN)
        return Canned(ad=name == "com")

    answer = await FakeClient(handler).query("www.example.com", "CAA")
    assert answer.ok and answer.records == ()
    assert answer.rcode == "NXDOMAIN" and answer.dnssec == "insecure"


async def test_dnssec_off_marks_unchecked_without_probes() -> None:
    client = FakeClient(zones({"_acme-challenge.www.example.com"}, set()), require_dnssec=False)
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.ok and answer.dnssec == "unchecked"
    assert answer.authenticated is True  # the AD bit is still reported
    client = FakeClient(zones(set(), set()), require_dnssec=False)
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.ok and answer.dnssec == "unchecked"
    assert client.probes() == []


# --- the proof cache ----------------------------------------------------------------------------


async def test_proof_cached_per_client_for_its_ttl() -> None:
    clock = FixedClock(T0)
    client = FakeClient(zones(set(), {"com"}), clock=clock)
    first = await client.query("_acme-challenge.www.example.com", "TXT")
    assert first.dnssec == "insecure"
    assert len(client.probes()) == 3
    client.asked.clear()
    # Another name below the proven ancestor: no extra query.
    second = await client.query("_acme-challenge.other.com", "TXT")
    assert second.dnssec == "insecure" and second.validated_ancestor == "com."
    assert client.probes() == []
    clock.advance(VALIDATION_PROOF_TTL - timedelta(seconds=1))
    await client.query("_acme-challenge.www.example.com", "TXT")
    assert client.probes() == []
    clock.advance(timedelta(seconds=1))
    third = await client.query("_acme-challenge.www.example.com", "TXT")
    assert third.dnssec == "insecure"
    assert client.probes() == ["www.example.com", "example.com", "com"]


async def test_proof_does_not_cover_other_trees() -> None:
    """A proof for ``com`` says nothing about ``net``: that name is probed on its own."""
    client = FakeClient(zones(set(), {"com"}))
    await client.query("_acme-challenge.www.example.com", "TXT")
    client.asked.clear()
    answer = await client.query("_acme-challenge.example.net", "TXT")
    assert answer.failure is DnsFailure.UNAUTHENTICATED
    assert client.probes() == ["example.net", "net", "."]


async def test_proof_is_per_resolver() -> None:
    """A validating resolver's proof never vouches for the answer of another resolver."""
    validating, plain = "127.0.0.1:53", "127.0.0.2:53"

    def handler(server: str, name: str, rdtype: str) -> Canned | None:
        if rdtype == "TXT":
            # The validating resolver times out; the plain one answers without AD.
            return None if server == validating else Canned(answer=(TXT,))
        return Canned(ad=server == validating)

    client = FakeClient(handler, nameservers=(validating, plain))
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.server == plain
    assert answer.failure is DnsFailure.UNAUTHENTICATED
    assert {server for server, _, rdtype in client.asked if rdtype == "DNSKEY"} == {plain}


# --- CNAME chains -------------------------------------------------------------------------------


async def test_every_unauthenticated_name_in_the_chain_needs_a_proof() -> None:
    """The alias and its target sit in different trees: both must be below proven ancestors."""
    alias = "_acme-challenge.www.example.com. 60 IN CNAME token.dns-host.net."
    target = 'token.dns-host.net. 60 IN TXT "token"'

    def handler(validating: set[str]) -> Handler:
        def inner(server: str, name: str, rdtype: str) -> Canned:
            if rdtype == "TXT":
                return Canned(answer=(alias, target))
            return Canned(ad=name in validating)

        return inner

    refused = await FakeClient(handler({"com"})).query("_acme-challenge.www.example.com", "TXT")
    assert refused.failure is DnsFailure.UNAUTHENTICATED
    assert refused.error is not None and "token.dns-host.net" in refused.error
    client = FakeClient(handler({"com", "net"}))
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.ok and answer.dnssec == "insecure"
    assert answer.chain == ("token.dns-host.net",)
    assert answer.validated_ancestor == "net."
    assert client.probes() == ["www.example.com", "example.com", "com", "dns-host.net", "net"]


async def test_authenticated_hop_needs_no_proof() -> None:
    """A chain asked over two queries: only the reply without AD is probed for."""

    def handler(server: str, name: str, rdtype: str) -> Canned:
        if rdtype == "TXT" and name == "_acme-challenge.www.example.com":
            return Canned(ad=True, answer=("_acme-challenge.www.example.com. 60 IN CNAME t.org.",))
        if rdtype == "TXT":
            return Canned(answer=('t.org. 60 IN TXT "token"',))
        return Canned(ad=name == "org")

    client = FakeClient(handler)
    answer = await client.query("_acme-challenge.www.example.com", "TXT")
    assert answer.ok and answer.dnssec == "insecure" and answer.authenticated is False
    assert client.probes() == ["org"]


# --- records ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validating", "secure", "status"),
    [(set(), {"_acme-challenge.www.example.com"}, "secure"), ({"com"}, set(), "insecure")],
)
async def test_br_dcv_1_record_shows_dnssec_status(
    validating: set[str], secure: set[str], status: str
) -> None:
    answer = await FakeClient(zones(secure, validating)).query(
        "_acme-challenge.www.example.com", "TXT"
    )
    record = dns_record(answer, method="dns-01", hostname="www.example.com", at=T0)
    assert record.dnssec == status
    body = record.to_json()
    assert body["dnssec"] == status
    assert body["authenticated"] is (status == "secure")


async def test_failed_lookup_record_has_no_dnssec_status() -> None:
    answer = await FakeClient(zones(set(), set())).query("_acme-challenge.www.example.com", "TXT")
    record = dns_record(answer, method="dns-01", hostname="www.example.com", at=T0)
    assert record.dnssec is None and "dnssec" not in record.to_json()
    assert record.error is not None and "unauthenticated" in record.error
