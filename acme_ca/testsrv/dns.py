"""A DNS server answering from the :class:`ChallengeStore`, over UDP and TCP on one port.

It stands in for the recursive resolver the VA is pointed at, so it follows CNAME chains
the way a resolver would and sets RA as well as AA. Any name gets the default A answer,
so the CA can look up hosts nobody configured; TXT, CAA and AAAA answer only what was set.
Records carry TTL 0 because tests change them between queries and nothing should cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass, field
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import structlog

from acme_ca.testsrv.store import ChallengeStore, DnsQueryEvent, Transport

RECORD_TTL = 0
MAX_CNAME_CHAIN = 8
"""Longer chains (and loops) get SERVFAIL, as a resolver gives up on them."""
TXT_STRING_MAX = 255
"""RFC 1035 <character-string> limit; longer TXT values are split across strings."""
UDP_PAYLOAD_FLOOR = 512
TCP_IDLE_TIMEOUT = 10.0
"""Seconds a TCP client may sit silent before we close the connection."""
BIND_ATTEMPTS = 5
"""Tries to find an ephemeral port free for both UDP and TCP."""

_HEADER_LEN = 12
_SOA_OWNER = dns.name.from_text("challtestsrv.invalid.")
_NEGATIVE_SOA = dns.rdata.from_text(
    dns.rdataclass.IN,
    dns.rdatatype.SOA,
    "ns.challtestsrv.invalid. master.challtestsrv.invalid. 1 1 1 1 0",
)

_log = structlog.get_logger(component=__name__)


@dataclass
class Resolution:
    """What the store says about one question: the rcode and the answer RRsets in order."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)


def _rrset(name: dns.name.Name, rdatas: list[dns.rdata.Rdata]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdatas[0].rdtype)
    rrset.update_ttl(RECORD_TTL)
    for rdata in rdatas:
        rrset.add(rdata)
    return rrset


def _is_ip_literal(name: dns.name.Name) -> bool:
    """Pebble gives no default answer for names that are IP addresses; neither do we."""
    try:
        ipaddress.ip_address(name.to_text(omit_final_dot=True))
    except ValueError:
        return False
    return True


def _split_txt(value: str) -> list[bytes]:
    data = value.encode()
    return [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)]


def _records(store: ChallengeStore, name: dns.name.Name, rdtype: int) -> list[dns.rdata.Rdata]:
    """The name's own records of one type, with the A/AAAA default where Pebble applies it."""
    if rdtype == dns.rdatatype.A:
        addresses = store.a_addresses(name)
        if not addresses and store.default_ipv4 and not _is_ip_literal(name):
            addresses = (store.default_ipv4,)
        return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, a) for a in addresses]
    if rdtype == dns.rdatatype.AAAA:
        addresses = store.aaaa_addresses(name)
        if not addresses and store.default_ipv6 and not _is_ip_literal(name):
            addresses = (store.default_ipv6,)
        return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.AAAA, a) for a in addresses]
    if rdtype == dns.rdatatype.TXT:
        return [
            dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, _split_txt(v))
            for v in store.txt_values(name)
        ]
    if rdtype == dns.rdatatype.CAA:
        return [policy.to_rdata() for policy in store.caa_policies(name)]
    return []


def resolve(store: ChallengeStore, qname: dns.name.Name, rdtype: int) -> Resolution:
    """Answer one question as a recursive resolver would, CNAME chain included."""
    result = Resolution()
    name = qname
    seen = {qname}
    for _ in range(MAX_CNAME_CHAIN + 1):
        if store.is_servfail(name):
            return Resolution(dns.rcode.SERVFAIL)
        if store.is_nxdomain(name):
            result.rcode = dns.rcode.NXDOMAIN
            return result
        target = store.cname(name)
        if target is not None:
            cname = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME, target.to_text())
            result.answer.append(_rrset(name, [cname]))
            if rdtype == dns.rdatatype.CNAME:
                return result
            if target in seen:
                return Resolution(dns.rcode.SERVFAIL)
            seen.add(target)
            name = target
            continue
        records = _records(store, name, rdtype)
        if records:
            result.answer.append(_rrset(name, records))
        return result
    return Resolution(dns.rcode.SERVFAIL)


def _error_reply(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A header-only reply to a query we cannot parse; junk shorter than a header is dropped."""
    if len(wire) < _HEADER_LEN:
        return None
    reply = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    reply.flags = dns.flags.QR
    reply.set_rcode(rcode)
    return reply.to_wire()


def answer_query(store: ChallengeStore, wire: bytes, transport: Transport) -> bytes | None:
    """Parse one query, record it in the history and build the reply; None means stay silent."""
    try:
        query = dns.message.from_wire(wire)
    except (ValueError, dns.exception.DNSException):
        return _error_reply(wire, dns.rcode.FORMERR)
    if query.flags & dns.flags.QR:
        return None
    reply = dns.message.make_response(query, recursion_available=True)
    reply.flags |= dns.flags.AA
    if query.opcode() != dns.opcode.QUERY:
        reply.set_rcode(dns.rcode.NOTIMP)
    elif len(query.question) != 1:
        reply.set_rcode(dns.rcode.FORMERR)
    else:
        question = query.question[0]
        store.record_dns(
            DnsQueryEvent(
                name=question.name.to_text(),
                qtype=question.rdtype,
                qclass=question.rdclass,
                transport=transport,
                time=store.clock.now(),
            )
        )
        _log.debug(
            "testsrv.dns.query",
            name=question.name.to_text(),
            type=dns.rdatatype.to_text(question.rdtype),
            transport=transport,
        )
        if question.rdclass != dns.rdataclass.IN:
            reply.set_rcode(dns.rcode.REFUSED)
        else:
            result = resolve(store, question.name, question.rdtype)
            reply.set_rcode(result.rcode)
            reply.answer.extend(result.answer)
            if not result.answer and result.rcode != dns.rcode.SERVFAIL:
                reply.authority.append(_rrset(_SOA_OWNER, [_NEGATIVE_SOA]))
    # Records go out in the order they were added, as pebble-challtestsrv sends them
    # (dnspython shuffles an RRset's records unless told not to).
    if transport == "tcp":
        return reply.to_wire(max_size=65535, want_shuffle=False)
    limit = max(UDP_PAYLOAD_FLOOR, query.payload) if query.edns >= 0 else UDP_PAYLOAD_FLOOR
    # Too big for the client's buffer: send TC so it retries over TCP, as real servers do.
    return reply.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)


class _UdpProtocol(asyncio.DatagramProtocol):
    """One datagram in, at most one datagram out."""

    def __init__(self, store: ChallengeStore) -> None:
        self._store = store
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport is not a registered DatagramTransport subclass.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = answer_query(self._store, data, "udp")
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        _log.warning("testsrv.dns.udp_error", error=str(exc))


class DnsServer:
    """UDP and TCP listeners on the same host:port, so one resolver setting reaches both."""

    def __init__(self, store: ChallengeStore, host: str = "127.0.0.1", port: int = 8053) -> None:
        self._store = store
        self._host = host
        self._requested_port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port, also when 0 (ephemeral) was asked for."""
        if self._port is None:
            raise RuntimeError("DNS server is not running")
        return self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        attempts = BIND_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(attempts):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self._store), local_addr=(self._host, self._requested_port)
            )
            port: int = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self._host, port)
            except OSError:
                udp.close()
                # An ephemeral UDP port may be taken for TCP; pick another pair.
                if attempt + 1 == attempts:
                    raise
                continue
            self._udp = udp
            self._port = port
            _log.info("testsrv.dns.started", host=self._host, port=port)
            return

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._connections):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        self._port = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """RFC 7766 framing: each message is preceded by its two-byte length."""
        self._connections.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        size = int.from_bytes(await reader.readexactly(2), "big")
                        wire = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                reply = answer_query(self._store, wire, "tcp")
                if reply is None:
                    return
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
