"""A resolver's reply parsed as the VA reads it (acme_ca/va/dns_reply.py): header, question,
answer and EDNS kept byte for byte, the authority section and the rest of the additional one
cut; anything unexpected parsed whole, with dnspython's own errors."""

from __future__ import annotations

import random
import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from acme_ca.va.dns_reply import answer_part, parse_reply, query_wire
from tests.support.dns_replies import SIG, signed_nodata


def query(name: str = "www.example.com.", rdtype: str = "CAA") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=True, payload=1232)
    q.flags |= dns.flags.AD
    return q


def cname_answer(q: dns.message.Message) -> dns.message.Message:
    """An answer through a CNAME with RRSIGs, a referral-like authority and glue."""
    r = dns.message.make_response(q)
    r.answer.append(
        dns.rrset.from_text(q.question[0].name, 300, "IN", "CNAME", "target.example.net.")
    )
    r.answer.append(
        dns.rrset.from_text("target.example.net.", 300, "IN", "A", "192.0.2.7", "192.0.2.8")
    )
    r.answer.append(
        dns.rrset.from_text(
            "target.example.net.",
            300,
            "IN",
            "RRSIG",
            f"A 13 3 300 20261231000000 20261201000000 4711 example.net. {SIG}",
        )
    )
    r.authority.append(dns.rrset.from_text("example.net.", 300, "IN", "NS", "ns1.example.net."))
    r.additional.append(dns.rrset.from_text("ns1.example.net.", 300, "IN", "A", "192.0.2.53"))
    return r


def nxdomain(q: dns.message.Message) -> dns.message.Message:
    r = signed_nodata(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    return r


def same_reading(ours: dns.message.Message, whole: dns.message.Message) -> None:
    """Everything the VA reads is the same; what it does not read is gone."""
    assert ours.id == whole.id
    assert ours.flags == whole.flags
    assert ours.rcode() == whole.rcode()
    assert ours.question == whole.question
    assert ours.answer == whole.answer
    assert [x.ttl for x in ours.answer] == [x.ttl for x in whole.answer]
    assert (ours.edns, ours.ednsflags, ours.payload) == (whole.edns, whole.ednsflags, whole.payload)
    assert ours.authority == []


@pytest.mark.parametrize("reply", [signed_nodata, cname_answer, nxdomain])
def test_reply_read_without_its_authority_section(reply) -> None:  # type: ignore[no-untyped-def]
    q = query(rdtype="A" if reply is cname_answer else "CAA")
    wire = reply(q).to_wire()
    part = answer_part(wire)
    assert part is not None and len(part) < len(wire)
    same_reading(parse_reply(q, wire), dns.message.from_wire(wire))


def test_reply_without_edns_keeps_no_opt() -> None:
    plain = dns.message.make_query("www.example.com.", "CAA")
    r = dns.message.make_response(plain)
    r.authority.append(
        dns.rrset.from_text("example.com.", 60, "IN", "SOA", "ns. host. 1 3600 600 86400 60")
    )
    wire = r.to_wire()
    ours = parse_reply(plain, wire)
    same_reading(ours, dns.message.from_wire(wire))
    assert ours.edns == -1


def test_caa_11_extended_rcode_in_the_opt_record_survives() -> None:
    """BADVERS lives in the OPT record's extended-rcode bits: dropping OPT would turn it into
    NOERROR, an empty CAA answer, i.e. permission.  The OPT record is kept."""
    q = query()
    r = signed_nodata(q)
    r.flags &= ~dns.flags.AD
    r.set_rcode(dns.rcode.BADVERS)
    wire = r.to_wire()
    assert parse_reply(q, wire).rcode() == dns.rcode.BADVERS


def test_reply_to_another_query_is_refused() -> None:
    q = query()
    r = signed_nodata(q)
    r.id ^= 0x5A5A
    with pytest.raises(dns.query.BadResponse):
        parse_reply(q, r.to_wire())
    other = signed_nodata(query("other.example.com."))
    other.id = q.id
    with pytest.raises(dns.query.BadResponse):
        parse_reply(q, other.to_wire())


def _two_opts(wire: bytes) -> bytes:
    """``wire`` with its OPT record (the last one) appended a second time."""
    arcount = struct.unpack_from("!H", wire, 10)[0]
    opt = wire[-11:]  # root owner, TYPE 41, CLASS, TTL, RDLENGTH 0
    assert opt[0] == 0 and opt[1:3] == b"\x00\x29"
    return wire[:10] + struct.pack("!H", arcount + 1) + wire[12:] + opt


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda w: w + b"\x00", id="trailing junk"),
        pytest.param(lambda w: w[:-3], id="cut short"),
        pytest.param(lambda w: w[:11], id="short header"),
        pytest.param(_two_opts, id="two OPT records"),
    ],
)
def test_malformed_reply_raises_as_dnspython_does(mangle) -> None:  # type: ignore[no-untyped-def]
    q = query()
    wire = mangle(signed_nodata(q).to_wire())
    assert answer_part(wire) is None
    with pytest.raises(dns.exception.DNSException) as whole:
        dns.message.from_wire(wire)
    with pytest.raises(type(whole.value)):
        parse_reply(q, wire)


def test_transaction_signatures_are_left_to_dnspython() -> None:
    """A TSIG (or SIG(0)) in the additional section: the whole reply goes to dnspython, which
    refuses it (no key)."""
    q = query()
    wire = bytearray(signed_nodata(q).to_wire())
    tsig = b"\x00" + struct.pack("!HHIH", 250, 255, 0, 0)
    wire[10:12] = struct.pack("!H", struct.unpack_from("!H", wire, 10)[0] + 1)
    assert answer_part(bytes(wire) + tsig) is None


def test_mangled_replies_never_read_differently() -> None:
    """Random byte changes: whenever both readings succeed, the VA reads the same thing.

    (A change confined to the contents of an authority record is read by us and refused by
    dnspython's whole parse: those records are not read, by design.)"""
    rng = random.Random(8659)
    q = query()
    base = signed_nodata(q).to_wire()
    compared = 0
    for _ in range(3000):
        wire = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            wire[rng.randrange(len(wire))] = rng.randrange(256)
        try:
            whole = dns.message.from_wire(bytes(wire))
        except Exception:
            continue
        try:
            ours = parse_reply(q, bytes(wire))
        except (dns.exception.DNSException, dns.query.BadResponse):
            continue
        assert ours.answer == whole.answer and ours.rcode() == whole.rcode()
        assert ours.flags == whole.flags and ours.question == whole.question
        compared += 1
    assert compared > 100


@pytest.mark.parametrize("name", ["www.example.com.", ".", "_acme-challenge.a.b.example.org."])
@pytest.mark.parametrize("rdtype", ["CAA", "A", "AAAA", "TXT", "DNSKEY", "CNAME"])
def test_query_wire_is_dnspythons_byte_for_byte(name: str, rdtype: str) -> None:
    q = query(name, rdtype)
    assert query_wire(q) == q.to_wire()


def test_other_queries_go_to_dnspythons_renderer() -> None:
    """Not the VA's usual shape (an EDNS option, no EDNS, two questions): rendered by
    dnspython, so still byte for byte what it would send."""
    with_option = dns.message.make_query(
        "www.example.com.",
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"x")],
    )
    no_edns = dns.message.make_query("www.example.com.", "A")
    two = dns.message.make_query("www.example.com.", "A", use_edns=0)
    two.find_rrset(
        two.question,
        dns.name.from_text("b.example."),
        dns.rdataclass.IN,
        dns.rdatatype.A,
        create=True,
    )
    for q in (with_option, no_edns, two):
        assert query_wire(q) == q.to_wire()
