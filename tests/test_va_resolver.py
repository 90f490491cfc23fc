"""The DNS client's DNSSEC verdicts: secure, insecure (proven-validating resolver), unchecked.

A fake transport stands in for the resolver so each reply's AD bit can be chosen: with
``require_dnssec`` an answer without AD is usable only as ``insecure``, after a DNSKEY query
for an ancestor came back with AD from the same resolver (BR §3.2.2.4, §3.2.2.8.1).  The
real resolver behaviour is in ``integration/test_dnssec.py``.

The last part runs the TCP transport over real sockets on 127.0.0.1: connections to the
resolver are reused (RFC 7766) and discarded on a timeout, an error or a close by the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
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
from acme_ca.testsrv.dns import DnsServer
from acme_ca.testsrv.store import ChallengeStore
from acme_ca.va.dns_tcp import TcpPool
from acme_ca.va.records import dns_record
from acme_ca.va.resolver import (
    TCP_IDLE_TIMEOUT,
    TCP_POOL_SIZE,
    VALIDATION_PROOF_TTL,
    DnsClient,
    DnsFailure,
    Nameserver,
    ResolverSettings,
)
from tests.support.dns_replies import signed_nodata

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


# --- TCP connection reuse (RFC 7766 §6.2.1), over real sockets ----------------------------------


class CountingDnsServer(DnsServer):
    """The challenge test server's DNS server, counting the TCP connections it accepts."""

    def __init__(self, store: ChallengeStore) -> None:
        super().__init__(store, host="127.0.0.1", port=0)
        self.accepted = 0

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await super()._serve_tcp(reader, writer)


class Responder:
    """A TCP DNS responder on 127.0.0.1 whose misbehaviour each test chooses.

    A questions get 192.0.2.1, other types an empty NOERROR, except: names in ``stall`` get no
    reply, names in ``cut`` get half of their reply and then the connection is closed, names
    in ``wrong_id`` get a reply whose id is not the query's, names in ``custom`` the reply its
    function makes of the query.  ``close_after_reply`` closes each
    connection after its first reply (a server closing idle connections); with
    ``close_when_reused`` a connection's second query is read and the connection closed
    unanswered (the server closed it just as the query was sent).  ``client_closes`` counts
    connections the client closed between messages.
    """

    def __init__(self) -> None:
        self.accepted = 0
        self.client_closes = 0
        self.asked: list[str] = []
        self.stall: set[str] = set()
        self.cut: set[str] = set()
        self.wrong_id: set[str] = set()
        self.custom: dict[str, Callable[[dns.message.Message], dns.message.Message]] = {}
        self.close_after_reply = False
        self.close_when_reused = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def nameserver(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        answered = 0
        try:
            while True:
                try:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    query = dns.message.from_wire(await reader.readexactly(size))
                except asyncio.IncompleteReadError:
                    self.client_closes += 1
                    return
                question = query.question[0]
                name = question.name.to_text(omit_final_dot=True)
                self.asked.append(name)
                if self.close_when_reused and answered:
                    return
                if name in self.stall:
                    continue
                reply = dns.message.make_response(query)
                if name in self.custom:
                    reply = self.custom[name](query)
                elif question.rdtype == dns.rdatatype.A:
                    reply.answer.append(
                        dns.rrset.from_text(question.name, 0, "IN", "A", "192.0.2.1")
                    )
                if name in self.wrong_id:
                    reply.id ^= 0x5A5A
                wire = reply.to_wire(prepend_length=True)
                if name in self.cut:
                    writer.write(wire[: len(wire) // 2])
                    await writer.drain()
                    return
                writer.write(wire)
                await writer.drain()
                answered += 1
                if self.close_after_reply:
                    return
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    server = Responder()
    await server.start()
    yield server
    await server.stop()


ClientFactory = Callable[..., DnsClient]


@pytest.fixture
async def tcp_client() -> AsyncIterator[ClientFactory]:
    """Builds TCP clients (one attempt, DNSSEC off) and closes them after the test."""
    made: list[DnsClient] = []

    def make(
        nameserver: str,
        *,
        timeout: float = 5.0,
        pool_size: int = TCP_POOL_SIZE,
        idle_timeout: float = TCP_IDLE_TIMEOUT,
    ) -> DnsClient:
        client = DnsClient(
            ResolverSettings((nameserver,), timeout=timeout, attempts=1, require_dnssec=False),
            tcp_pool_size=pool_size,
            tcp_idle_timeout=idle_timeout,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until the server has seen what the client did (bounded; nothing about timing)."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


def idle(client: DnsClient) -> int:
    return client.idle_connections(client.settings.parsed[0])


async def test_acme_chal_6_sequential_tcp_queries_share_one_connection(
    tcp_client: ClientFactory,
) -> None:
    """A CAA walk, A/AAAA and TXT one after another: one TCP connection to the resolver."""
    store = ChallengeStore()
    store.set_txt("_acme-challenge.www.example.com", "token")
    server = CountingDnsServer(store)
    await server.start()
    try:
        client = tcp_client(f"127.0.0.1:{server.port}")
        for name in ["www.example.com", "example.com", "com"]:
            caa = await client.query(name, "CAA")
            assert caa.ok and caa.records == (), caa
        a = await client.query("www.example.com", "A")
        assert [r.to_text() for r in a.records] == [store.default_ipv4]
        assert (await client.query("www.example.com", "AAAA")).ok
        txt = await client.query("_acme-challenge.www.example.com", "TXT")
        assert [r.to_text() for r in txt.records] == ['"token"']
        assert server.accepted == 1
        assert idle(client) == 1
    finally:
        await server.stop()


async def test_server_closing_idle_connections_does_not_fail_queries(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    """The server closes each connection after one reply: every query still succeeds."""
    responder.close_after_reply = True
    client = tcp_client(responder.nameserver)
    for _ in range(3):
        answer = await client.query("www.example.com", "A")
        assert answer.ok, answer
        assert [r.to_text() for r in answer.records] == ["192.0.2.1"]
    assert responder.accepted == 3


async def test_reused_connection_closed_before_reply_is_retried_on_a_fresh_one(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    """The server closes a connection on its second query: the query is sent once more."""
    responder.close_when_reused = True
    client = tcp_client(responder.nameserver)
    for _ in range(3):
        answer = await client.query("www.example.com", "A")
        assert answer.ok, answer
    # Queries 2 and 3 each met a closing connection and were asked again on a new one.
    assert responder.accepted == 3
    assert responder.asked == ["www.example.com"] * 5


async def test_timeout_discards_the_connection_without_retry(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    """A reused connection with no reply in time is closed; the spent budget allows no retry."""
    responder.stall.add("stall.example")
    client = tcp_client(responder.nameserver, timeout=0.5)
    assert (await client.query("www.example.com", "A")).ok
    assert idle(client) == 1
    answer = await client.query("stall.example", "A")
    assert answer.failure is DnsFailure.TIMEOUT
    assert idle(client) == 0
    await eventually(lambda: responder.client_closes == 1)
    assert responder.asked.count("stall.example") == 1
    assert responder.accepted == 1
    # The next query opens a new connection rather than read the late reply of the old one.
    assert (await client.query("www.example.com", "A")).ok
    assert responder.accepted == 2


async def test_reply_cut_short_fails_without_retry_and_is_not_reused(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    """Once a reply has begun, a failure is final: the query is not sent again."""
    responder.cut.add("cut.example")
    client = tcp_client(responder.nameserver)
    assert (await client.query("www.example.com", "A")).ok
    answer = await client.query("cut.example", "A")
    assert answer.failure is DnsFailure.ERROR
    assert answer.error is not None and "EOFError" in answer.error
    assert responder.asked == ["www.example.com", "cut.example"]
    assert responder.accepted == 1
    assert idle(client) == 0


async def test_reply_with_another_id_fails_and_discards_the_connection(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    """The reply must match the query (id, question); a mismatch is an error and closes the
    stream."""
    responder.wrong_id.add("mismatch.example")
    client = tcp_client(responder.nameserver)
    answer = await client.query("mismatch.example", "A")
    assert answer.failure is DnsFailure.ERROR
    assert answer.error is not None and "BadResponse" in answer.error
    assert idle(client) == 0
    await eventually(lambda: responder.client_closes == 1)
    assert (await client.query("www.example.com", "A")).ok
    assert responder.accepted == 2


async def test_caa_11_signed_nodata_is_read_without_its_proofs_and_badvers_stays_a_failure(
    responder: Responder,
) -> None:
    """Over the real TCP transport with DNSSEC required: a signed NODATA (AD, the SOA, NSEC3
    proofs and RRSIGs in the authority section, which the client does not parse) is a secure
    empty answer, the next query reuses the connection, and an extended rcode (BADVERS, in
    the OPT record) is still a failure rather than an empty answer, i.e. never CAA permission."""

    def badvers(query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.BADVERS)
        return reply

    responder.custom["signed.example.com"] = signed_nodata
    responder.custom["badvers.example.com"] = badvers
    client = DnsClient(ResolverSettings((responder.nameserver,), attempts=1, require_dnssec=True))
    try:
        answer = await client.query("signed.example.com", "CAA")
        assert answer.ok and answer.records == () and answer.rcode == "NOERROR"
        assert answer.dnssec == "secure"
        refused = await client.query("badvers.example.com", "CAA")
        assert not refused.ok and refused.failure is DnsFailure.ERROR
        assert refused.error is not None and "BADVERS" in refused.error
    finally:
        await client.aclose()
    assert responder.accepted == 1


async def test_pool_keeps_at_most_pool_size_idle_connections(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    """Concurrent queries each get a connection; only ``pool_size`` stay open afterwards."""
    client = tcp_client(responder.nameserver, pool_size=2)
    answers = await asyncio.gather(*(client.query(f"h{i}.example", "A") for i in range(4)))
    assert all(answer.ok for answer in answers)
    assert responder.accepted == 4
    assert idle(client) == 2
    await eventually(lambda: responder.client_closes == 2)


async def test_aclose_closes_idle_connections(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    client = tcp_client(responder.nameserver)
    assert (await client.query("www.example.com", "A")).ok
    await client.aclose()
    assert idle(client) == 0
    await eventually(lambda: responder.client_closes == 1)
    # Still usable, but nothing is kept open any more.
    assert (await client.query("www.example.com", "A")).ok
    assert idle(client) == 0
    await eventually(lambda: responder.client_closes == 2)


async def test_clients_sharing_tcp_pools_share_connections_not_answers(
    responder: Responder,
) -> None:
    """Issue 20: a remote VA's per-request clients reuse the resolver connection; closing one
    leaves the shared pool open, and each client still asks the resolver itself."""
    settings = ResolverSettings((responder.nameserver,), attempts=1, require_dnssec=False)
    pools = {ns: TcpPool(TCP_POOL_SIZE, TCP_IDLE_TIMEOUT) for ns in settings.parsed}
    try:
        for _ in range(3):
            client = DnsClient(settings, tcp_pools=pools)
            assert (await client.query("www.example.com", "A")).ok
            await client.aclose()
            assert idle(client) == 1
        assert responder.asked == ["www.example.com"] * 3
        assert responder.accepted == 1
        assert responder.client_closes == 0
    finally:
        for pool in pools.values():
            pool.close()
    await eventually(lambda: responder.client_closes == 1)


async def test_idle_connection_is_closed_after_idle_timeout(
    responder: Responder, tcp_client: ClientFactory
) -> None:
    """A client nobody closes holds no connection for long."""
    client = tcp_client(responder.nameserver, idle_timeout=0.05)
    assert (await client.query("www.example.com", "A")).ok
    await eventually(lambda: responder.client_closes == 1)
    assert idle(client) == 0
