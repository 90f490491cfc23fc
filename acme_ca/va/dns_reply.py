"""The VA's DNS messages on the wire: its queries rendered directly, and a resolver's reply
parsed as far as the VA reads it (header, question, answer and EDNS).

A VA query is always the same shape: one question, EDNS version 0 with the DO bit and no
options, nothing else.  :func:`query_wire` writes it in a few lines (header, the name
uncompressed, type and class, the OPT record) where dnspython's renderer, built for every
message, was a fifth of the client's CPU; any other query goes to that renderer.  The test
suite holds the two byte for byte equal.

The VA's checks read a reply's header (id, flags with AD, rcode), its question (to match the
query), its answer section (the records and CNAMEs, with their RRSIGs) and its OPT record (the
extended rcode).  The authority section is never read, yet dnspython parses every record of it,
and with the DO bit a validating resolver puts the negative answer's proofs there: the SOA,
NSEC or NSEC3 records and their RRSIGs.  Parsing those is most of the cost of a NODATA reply
(467 against 47 us for a signed NODATA of 1.2 kB on the benchmark machine), and NODATA is
what most steps of a CAA climb get (RFC 8659 §3), on the primary and on every remote
perspective.

:func:`parse_reply` therefore hands dnspython only the part it needs: the same bytes at the
same offsets up to the end of the answer section (every compression pointer there points
backward, dnspython refuses any other, so nothing it can reach moves), then the OPT record,
whose owner is the root and whose options hold no names.  :func:`answer_part` walks the
sections that are cut record by record (names label by label, each record's RDLENGTH
within the message) and gives up -- the whole reply is then parsed as before, with
dnspython's errors -- on anything it does not expect: an unknown label type, a record running
past the end, bytes after the last record, more than one OPT, an OPT not owned by the root,
a TSIG or SIG(0).  What is not checked in the cut sections is their records' contents, which
nothing reads.
"""

from __future__ import annotations

import struct
from typing import Final

import dns.exception
import dns.message
import dns.query

_HEADER: Final = struct.Struct("!HHHHHH")
_RR_FIXED: Final = struct.Struct("!HHIH")  # TYPE, CLASS, TTL, RDLENGTH
_OPT: Final = 41
_TSIG: Final = 250
_SIG: Final = 24  # SIG(0) transaction signatures (RFC 2931) travel in the additional section


def _skip_name(wire: bytes, at: int) -> int | None:
    """The offset after the (possibly compressed) name at ``at``; None if malformed."""
    while True:
        if at >= len(wire):
            return None
        length = wire[at]
        if length == 0:
            return at + 1
        if length & 0xC0 == 0xC0:
            return at + 2 if at + 2 <= len(wire) else None
        if length & 0xC0:
            return None  # the obsolete extended and binary label types
        at += 1 + length


def _skip_record(wire: bytes, at: int) -> tuple[int, int] | None:
    """``(type, end)`` of the resource record at ``at``; None if malformed."""
    after_name = _skip_name(wire, at)
    if after_name is None or after_name + _RR_FIXED.size > len(wire):
        return None
    rdtype, _, _, rdlength = _RR_FIXED.unpack_from(wire, after_name)
    end = after_name + _RR_FIXED.size + rdlength
    return (rdtype, end) if end <= len(wire) else None


def _skip_records(wire: bytes, at: int, count: int) -> int | None:
    """The offset after ``count`` resource records from ``at``; None if malformed."""
    for _ in range(count):
        record = _skip_record(wire, at)
        if record is None:
            return None
        at = record[1]
    return at


def answer_part(wire: bytes) -> bytes | None:
    """``wire`` without its authority section and with only the OPT record of its additional
    section; None when the reply is not shaped as expected (see the module docstring)."""
    if len(wire) < _HEADER.size:
        return None
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    at = _HEADER.size
    for _ in range(qdcount):
        after = _skip_name(wire, at)
        if after is None or after + 4 > len(wire):
            return None
        at = after + 4
    answer_end = _skip_records(wire, at, ancount)
    after_authority = None if answer_end is None else _skip_records(wire, answer_end, nscount)
    if answer_end is None or after_authority is None:
        return None
    at = after_authority
    opt = b""
    for _ in range(arcount):
        record = _skip_record(wire, at)
        if record is None:
            return None
        rdtype, end = record
        if rdtype in (_TSIG, _SIG):
            return None
        if rdtype == _OPT:
            if opt or wire[at] != 0:
                return None
            opt = wire[at:end]
        at = end
    if at != len(wire):
        return None
    header = _HEADER.pack(msg_id, flags, qdcount, ancount, 0, 1 if opt else 0)
    return header + wire[_HEADER.size : answer_end] + opt


def query_wire(query: dns.message.Message) -> bytes:
    """``query.to_wire()``, written directly when ``query`` is the VA's usual shape."""
    opt = query.opt
    if (
        len(query.question) != 1
        or query.answer
        or query.authority
        or query.additional
        or query.tsig is not None
        or opt is None
        or len(opt) != 1
        or opt[0].options
        or query.pad
    ):
        return query.to_wire()
    question = query.question[0]
    name = question.name.to_wire()  # bytes: None only when writing to a file
    if name is None or not question.name.is_absolute():
        return query.to_wire()
    return b"".join(
        (
            _HEADER.pack(query.id, query.flags, 1, 0, 0, 1),
            name,
            struct.pack("!HH", question.rdtype, question.rdclass),
            b"\x00",
            _RR_FIXED.pack(_OPT, opt.rdclass, opt.ttl, 0),
        )
    )


def parse_reply(query: dns.message.Message, wire: bytes) -> dns.message.Message:
    """The reply to ``query`` in ``wire``, parsed as the VA reads it (module docstring).

    Raises what ``dns.message.from_wire`` raises for a malformed reply, and
    ``dns.query.BadResponse`` for one that does not answer ``query`` (its id or question).
    """
    part = answer_part(wire)
    reply = None
    if part is not None:
        try:
            reply = dns.message.from_wire(part)
        except (dns.exception.DNSException, ValueError):
            reply = None  # parsed whole below, for dnspython's own error
    if reply is None:
        reply = dns.message.from_wire(wire)
    if not query.is_response(reply):
        raise dns.query.BadResponse
    return reply
