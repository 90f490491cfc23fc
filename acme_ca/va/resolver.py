"""The VA's DNS client: asks our own validating resolver and reports its DNSSEC verdict.

The resolver does the recursion and the DNSSEC validation (ACME-CHAL-6, BR §3.2.2.4 and
§3.2.2.8.1); this client sends every query with EDNS and the DO bit, retries over TCP when an
answer is truncated (or always, when configured), follows the CNAME chain the resolver returns
and reads the AD bit.  It never raises for a DNS outcome: a :class:`DnsAnswer` says whether the
lookup failed and why, so every check can record the answer and refuse on failure.  NXDOMAIN
and NODATA are empty answers, not failures.

DNSSEC, with ``require_dnssec`` (production):

* **secure**: the reply carried AD -- the resolver validated it.
* **bogus**: a validating resolver answers SERVFAIL; that is a failure, always.
* **insecure**: no AD, which a validating resolver gives for data in an unsigned zone below a
  delegation without DS (most of the Internet).  Such an answer is usable only when the same
  resolver is *proven to validate* on the name's path: a DNSKEY query for one of the name's
  ancestors (closest first, up to the root) came back with AD.  A validating resolver that
  authenticated that part of the tree would have answered SERVFAIL for bogus data below it, so
  the missing AD means "proven insecure", not "unchecked".  The proof is cached per resolver
  and ancestor for :data:`VALIDATION_PROOF_TTL`.  No proof -- a resolver that does not
  validate at all -- is :attr:`DnsFailure.UNAUTHENTICATED`.

Without ``require_dnssec`` (``dnssec = "off"``, tests only) answers are used as they come and
marked **unchecked**.

TCP connections to a resolver are reused (RFC 7766 §6.2.1): each :class:`DnsClient` keeps up to
:data:`TCP_POOL_SIZE` idle connections per nameserver and sends each query over an idle one, one
query at a time.  A connection is closed on any error, timeout or cancellation, when the
resolver closed it, and after :data:`TCP_IDLE_TIMEOUT` unused, so a client that is never closed
holds nothing for long; :meth:`DnsClient.aclose` closes the idle ones at once.  The
connections and their pools are :mod:`acme_ca.va.dns_tcp`.  A reply is parsed as far as the
checks read it (header, question, answer, EDNS), not its authority section
(:mod:`acme_ca.va.dns_reply`).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final, Literal

import dns._asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import structlog

from acme_ca.clock import Clock, SystemClock
from acme_ca.va.dns_tcp import TcpConnection, TcpPool, exchange

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORT: Final = 53
EDNS_PAYLOAD: Final = 1232
"""The DNS Flag Day 2020 buffer size: large enough for most answers, small enough not to
fragment; anything larger comes back truncated and is asked again over TCP."""
MAX_CNAME_CHAIN: Final = 8
"""CNAME hops followed before giving up; a longer chain or a loop is a lookup failure."""
VALIDATION_PROOF_TTL: Final = timedelta(minutes=5)
"""How long an authenticated DNSKEY answer for an ancestor keeps proving that the resolver
validates below it, so each validation does not cost an extra query."""
TCP_POOL_SIZE: Final = 8
"""Idle TCP connections kept per nameserver; a busier moment opens more and closes the extra
ones when their query is done."""
TCP_IDLE_TIMEOUT: Final = 5.0
"""Seconds an idle TCP connection is kept before we close it; well below the idle timeouts of
resolvers (Unbound: 30 s), though a busy resolver may close it sooner, which costs one retry."""


DnssecStatus = Literal["secure", "insecure", "unchecked"]
"""The DNSSEC standing of a usable answer: ``secure`` (AD), ``insecure`` (no AD, from a
resolver proven to validate on the name's path) or ``unchecked`` (``require_dnssec`` off)."""

_log = structlog.get_logger(component=__name__)


class DnsFailure(enum.StrEnum):
    """Why a lookup produced no usable answer; each one fails the check that asked.

    ``UNAUTHENTICATED``: ``require_dnssec``, the reply lacked AD and the resolver could not
    be shown to validate DNSSEC on the name's path.  ``SERVFAIL`` includes bogus answers from
    a validating resolver.  ``ERROR``: any other rcode, a malformed reply, a CNAME loop or a
    network error.
    """

    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    UNAUTHENTICATED = "unauthenticated"
    ERROR = "error"


@dataclass(frozen=True)
class Nameserver:
    """One resolver address; ``host:port`` or ``[v6]:port`` in settings."""

    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        """Accept ``1.2.3.4``, ``1.2.3.4:53``, ``::1`` and ``[::1]:53``; IP literals only."""
        text = text.strip()
        host, port = text, DEFAULT_PORT
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"bad nameserver {text!r}")
            if rest:
                port = int(rest[1:])
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text)
        ipaddress.ip_address(host)  # a resolver named by hostname would need a resolver
        if not 0 < port < 65536:
            raise ValueError(f"bad nameserver port in {text!r}")
        return cls(host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ResolverSettings:
    """Where and how to ask; the defaults are the production ones (TCP, DNSSEC required).

    ``require_dnssec`` accepts an answer without the AD bit only as DNSSEC-insecure, when the
    resolver is proven to validate on the name's path (see the module docstring); it must
    point at a validating resolver we run, where a bogus answer comes back as SERVFAIL.
    """

    nameservers: tuple[str, ...]
    timeout: float = 5.0
    """Seconds for one query to one nameserver."""
    attempts: int = 2
    """Passes over the nameserver list before a timeout or SERVFAIL is final."""
    require_dnssec: bool = True
    tcp: bool = True
    """Query over TCP from the start (ACME-CHAL-6); UDP otherwise, with TCP on truncation."""
    parsed: tuple[Nameserver, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.nameservers:
            raise ValueError("at least one nameserver is required")
        if self.timeout <= 0 or self.attempts < 1:
            raise ValueError("timeout must be positive and attempts at least 1")
        object.__setattr__(self, "parsed", tuple(Nameserver.parse(ns) for ns in self.nameservers))


@dataclass(frozen=True)
class DnsAnswer:
    """One lookup as the checks see it: records of the asked type after the CNAME chain."""

    name: str
    rdtype: str
    records: tuple[dns.rdata.Rdata, ...] = ()
    chain: tuple[str, ...] = ()
    """CNAME targets followed, in order."""
    rcode: str | None = "NOERROR"
    """None when no reply came back at all."""
    authenticated: bool = False
    """True only when every reply in the chain carried AD."""
    dnssec: DnssecStatus | None = None
    """The DNSSEC standing of a usable answer; None when the lookup failed."""
    validated_ancestor: str | None = None
    """For an ``insecure`` answer: the ancestor whose authenticated DNSKEY answer showed the
    resolver validates above the final name (``.`` for the root)."""
    server: str | None = None
    failure: DnsFailure | None = None
    """None for a usable (possibly empty) answer."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def question(self) -> str:
        return f"{self.name} {self.rdtype}"

    def describe(self) -> str:
        """The answer for a record: rcode, chain and records in presentation format."""
        parts = [self.rcode or self.failure or "no reply"]
        parts.extend(f"CNAME {target}" for target in self.chain)
        parts.extend(r.to_text() for r in self.records)
        return "; ".join(parts)


class DnsLookupError(Exception):
    """Raised by :meth:`DnsClient.resolve_addresses`; carries the failed answer."""

    def __init__(self, answer: DnsAnswer) -> None:
        super().__init__(
            f"DNS lookup of {answer.question} failed ({answer.failure}): {answer.error or ''}"
        )
        self.answer = answer


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".")


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def _ancestors(name: dns.name.Name) -> list[dns.name.Name]:
    """The enclosing names of ``name``, closest first, the root last; not ``name`` itself."""
    out: list[dns.name.Name] = []
    while name != dns.name.root:
        name = name.parent()
        out.append(name)
    return out


@dataclass
class _Reply:
    """One reply in a lookup: who sent it, whether it had AD, the names it answered for."""

    server: str
    authenticated: bool
    names: list[dns.name.Name]


def _find(
    message: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    for rrset in message.answer:
        if rrset.name == name and rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN:
            return rrset
    return None


class DnsClient:
    """Queries the configured resolvers; one per VA, shared by every check.

    ``clock`` and ``proof_ttl`` govern the cache of "this resolver validates below this
    ancestor" proofs (see the module docstring).  ``tcp_pools`` (one per nameserver) lets
    short-lived clients share idle TCP connections to the resolver -- the transport only:
    answers and proofs stay with each client.
    """

    def __init__(
        self,
        settings: ResolverSettings,
        *,
        clock: Clock | None = None,
        proof_ttl: timedelta = VALIDATION_PROOF_TTL,
        tcp_pool_size: int = TCP_POOL_SIZE,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        tcp_pools: Mapping[Nameserver, TcpPool] | None = None,
    ) -> None:
        self.settings = settings
        self._clock: Clock = clock or SystemClock()
        self._proof_ttl = proof_ttl
        self._servers = {str(ns): ns for ns in settings.parsed}
        self._proofs: dict[tuple[str, dns.name.Name], datetime] = {}
        self._owns_pools = tcp_pools is None
        self._pools = (
            {ns: TcpPool(tcp_pool_size, tcp_idle_timeout) for ns in settings.parsed}
            if tcp_pools is None
            else {ns: tcp_pools[ns] for ns in settings.parsed}
        )

    async def aclose(self) -> None:
        """Close the idle TCP connections; any later connection is closed after its query.

        Pools passed in as ``tcp_pools`` belong to the caller and stay open.  Optional: idle
        connections close themselves after ``tcp_idle_timeout`` anyway.
        """
        if self._owns_pools:
            for pool in self._pools.values():
                pool.close()

    def idle_connections(self, ns: Nameserver) -> int:
        """How many idle TCP connections to ``ns`` are pooled (for tests and metrics)."""
        pool = self._pools.get(ns)
        return 0 if pool is None else len(pool)

    def describe(self) -> str:
        """The resolvers asked, for records that cannot name the one that answered."""
        return ",".join(str(ns) for ns in self.settings.parsed)

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Look up ``name``/``rdtype`` and follow CNAMEs; never raises for a DNS outcome."""
        wanted = dns.rdatatype.from_text(rdtype)
        type_text = dns.rdatatype.to_text(wanted)
        name = name.rstrip(".").lower()
        try:
            current = _absolute(name)
        except (ValueError, dns.exception.DNSException) as exc:
            return DnsAnswer(name, type_text, failure=DnsFailure.ERROR, error=str(exc))
        chain: list[str] = []
        seen = {current}
        authenticated = True
        replies: list[_Reply] = []
        # A recursive resolver returns the whole chain in one reply; if a reply stops at an
        # alias target it did not chase, that target is asked about in a new query.
        while True:
            reply, server, failure, error = await self._exchange(current, wanted)
            if reply is None:
                return DnsAnswer(
                    name,
                    type_text,
                    chain=tuple(chain),
                    rcode="SERVFAIL" if failure == DnsFailure.SERVFAIL else None,
                    server=server,
                    failure=failure,
                    error=error,
                )
            rcode = dns.rcode.to_text(reply.rcode())
            ad = bool(reply.flags & dns.flags.AD)
            authenticated = authenticated and ad
            assert server is not None  # a reply names its sender
            replies.append(_Reply(server, ad, [current]))
            advanced = False
            while True:
                found = _find(reply, current, wanted)
                if found is not None:
                    return await self._finish(
                        DnsAnswer(
                            name,
                            type_text,
                            records=tuple(found),
                            chain=tuple(chain),
                            rcode=rcode,
                            authenticated=authenticated,
                            server=server,
                        ),
                        replies,
                    )
                alias = _find(reply, current, dns.rdatatype.CNAME)
                if alias is None or wanted == dns.rdatatype.CNAME:
                    break
                target = alias[0].target
                if target in seen or len(chain) >= MAX_CNAME_CHAIN:
                    return DnsAnswer(
                        name,
                        type_text,
                        chain=tuple(chain),
                        rcode=rcode,
                        server=server,
                        failure=DnsFailure.ERROR,
                        error=f"CNAME chain loops or is longer than {MAX_CNAME_CHAIN} hops",
                    )
                seen.add(target)
                chain.append(_text(target))
                current = target
                replies[-1].names.append(target)
                advanced = True
            if not (advanced and rcode == "NOERROR"):
                # NXDOMAIN or NODATA for the end of the chain: an empty answer.
                return await self._finish(
                    DnsAnswer(
                        name,
                        type_text,
                        chain=tuple(chain),
                        rcode=rcode,
                        authenticated=authenticated,
                        server=server,
                    ),
                    replies,
                )

    async def _finish(self, answer: DnsAnswer, replies: list[_Reply]) -> DnsAnswer:
        """Give a usable answer its DNSSEC standing; refuse it if the resolver is unproven.

        Every name answered in a reply without AD (the queried name and the CNAME targets in
        that reply) needs an ancestor the same resolver authenticated; the last proof found
        (the one for the end of the chain when its reply lacked AD) is kept in the answer.
        """
        if not self.settings.require_dnssec:
            return replace(answer, dnssec="unchecked")
        if answer.authenticated:
            return replace(answer, dnssec="secure")
        proof: dns.name.Name | None = None
        for reply in replies:
            if reply.authenticated:
                continue
            for qname in reply.names:
                proof = await self._validating_ancestor(reply.server, qname)
                if proof is None:
                    tried = ", ".join(a.to_text() for a in _ancestors(qname)) or "none"
                    _log.warning(
                        "va.dns.resolver_not_validating",
                        server=reply.server,
                        name=_text(qname),
                        type=answer.rdtype,
                    )
                    return replace(
                        answer,
                        records=(),
                        failure=DnsFailure.UNAUTHENTICATED,
                        error=(
                            f"resolver {reply.server} does not appear to validate DNSSEC: "
                            f"no AD bit on the answer for {_text(qname)} nor on DNSKEY for "
                            f"any of its ancestors ({tried})"
                        ),
                    )
        assert proof is not None  # not authenticated, so some reply lacked AD
        return replace(answer, dnssec="insecure", validated_ancestor=proof.to_text())

    async def _validating_ancestor(self, server: str, name: dns.name.Name) -> dns.name.Name | None:
        """The closest ancestor of ``name`` below which ``server`` is proven to validate.

        A cached proof for any ancestor counts; otherwise DNSKEY is asked for each ancestor,
        closest first, until a reply (NOERROR or NXDOMAIN) carries AD.  None: no proof.
        """
        ancestors = _ancestors(name)
        now = self._clock.now()
        for ancestor in ancestors:
            expires = self._proofs.get((server, ancestor))
            if expires is not None and now < expires:
                return ancestor
        ns = self._servers.get(server)
        if ns is None:
            return None
        for ancestor in ancestors:
            reply, _, _, _ = await self._exchange(ancestor, dns.rdatatype.DNSKEY, (ns,))
            if reply is not None and reply.flags & dns.flags.AD:
                now = self._clock.now()
                self._proofs = {k: t for k, t in self._proofs.items() if now < t}
                self._proofs[(server, ancestor)] = now + self._proof_ttl
                _log.debug(
                    "va.dns.validation_proven",
                    server=server,
                    name=_text(name),
                    ancestor=ancestor.to_text(),
                )
                return ancestor
        return None

    async def _exchange(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        servers: tuple[Nameserver, ...] | None = None,
    ) -> tuple[dns.message.Message | None, str | None, DnsFailure | None, str | None]:
        """Ask each resolver in turn, ``attempts`` passes; ``(reply, server, failure, error)``.

        SERVFAIL and timeouts move on to the next try; NOERROR and NXDOMAIN are final.
        ``servers`` narrows the resolvers asked (a validation proof is per resolver).
        """
        failure, error, server = DnsFailure.ERROR, "no nameserver answered", None
        for _ in range(self.settings.attempts):
            for ns in servers or self.settings.parsed:
                server = str(ns)
                query = dns.message.make_query(
                    qname, rdtype, use_edns=0, want_dnssec=True, payload=EDNS_PAYLOAD
                )
                # RFC 6840 §5.7: ask for the AD bit explicitly, not only through DO.
                query.flags |= dns.flags.AD
                try:
                    reply = await self._send(query, ns)
                except dns.exception.Timeout:
                    failure, error = DnsFailure.TIMEOUT, f"timeout asking {server}"
                    continue
                except (OSError, EOFError, dns.exception.DNSException) as exc:
                    failure, error = DnsFailure.ERROR, f"{type(exc).__name__}: {exc}"
                    continue
                rcode = reply.rcode()
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return reply, server, None, None
                if rcode == dns.rcode.SERVFAIL:
                    failure, error = DnsFailure.SERVFAIL, f"SERVFAIL from {server}"
                else:
                    failure = DnsFailure.ERROR
                    error = f"{dns.rcode.to_text(rcode)} from {server}"
                _log.debug(
                    "va.dns.retry",
                    name=_text(qname),
                    type=dns.rdatatype.to_text(rdtype),
                    server=server,
                    failure=failure,
                )
        return None, server, failure, error

    async def _send(self, query: dns.message.Message, ns: Nameserver) -> dns.message.Message:
        timeout = self.settings.timeout
        if not self.settings.tcp:
            reply = await dns.asyncquery.udp(query, ns.host, timeout=timeout, port=ns.port)
            if not reply.flags & dns.flags.TC:
                return reply
            return await dns.asyncquery.tcp(query, ns.host, timeout=timeout, port=ns.port)
        return await self._send_tcp(query, ns, timeout)

    async def _send_tcp(
        self, query: dns.message.Message, ns: Nameserver, budget: float
    ) -> dns.message.Message:
        """One query over a pooled TCP connection, within ``budget`` seconds in all.

        An idle connection may have been closed by the resolver (RFC 7766 §6.2.3 lets it close
        idle connections at any time): if it fails before any byte of the reply arrived, the
        query is sent once more on a new connection, in what is left of ``budget``.  Any
        failure closes the connection; the reply's id and question must match the query's
        (``BadResponse`` otherwise), and a reply read in part leaves the stream mid-message,
        so such a connection is never reused.
        """
        pool = self._pools[ns]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        conn = pool.take()
        reused = conn is not None
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise dns.exception.Timeout
            if conn is None:
                conn = await TcpConnection.open(ns.host, ns.port, left)
                left = deadline - loop.time()
            try:
                reply = await exchange(conn, query, max(left, 0.0))
            except BaseException as exc:
                conn.shut()
                stale = reused and conn.received == 0 and isinstance(exc, (EOFError, OSError))
                if not stale:
                    raise
                _log.debug("va.dns.tcp_reconnect", server=str(ns), error=repr(exc))
                conn, reused = None, False
                continue
            pool.put(conn)
            return reply

    async def resolve_addresses(self, host: str) -> list[IPAddress]:
        """A and AAAA for ``host``, IPv6 first; either lookup failing fails the whole.

        An IP literal is returned as is.  Raises :class:`DnsLookupError`; use
        :meth:`lookup_addresses` to keep the answers for a record.
        """
        answers, addresses = await self.lookup_addresses(host)
        for answer in answers:
            if not answer.ok:
                raise DnsLookupError(answer)
        return addresses

    async def lookup_addresses(self, host: str) -> tuple[tuple[DnsAnswer, ...], list[IPAddress]]:
        """The AAAA and A answers and the addresses they hold (none if either failed)."""
        try:
            return (), [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        aaaa, a = await asyncio.gather(self.query(host, "AAAA"), self.query(host, "A"))
        if not (aaaa.ok and a.ok):
            return (aaaa, a), []
        addresses: list[IPAddress] = []
        for answer in (aaaa, a):
            for rdata in answer.records:
                addresses.append(ipaddress.ip_address(rdata.address))  # type: ignore[attr-defined]
        return (aaaa, a), addresses
