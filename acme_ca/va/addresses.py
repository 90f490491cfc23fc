"""Where a check may connect: the resolved addresses of a name, filtered by the address policy
(BR-DCV-6, ACME-CHAL-5 SSRF).  Shared by every method that connects to the applicant's host
(http-01 and its redirects, tls-alpn-01), so they refuse the same addresses.

The policy is injected (Boulder's ``isReservedIPFunc``): production uses
:func:`public_address_policy`; tests pass one that also allows loopback.  Both methods are an
:class:`AddressCheck`: one constructor, one way of stamping their records.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Final

from acme_ca.acme import problems
from acme_ca.acme.problems import Problem
from acme_ca.va.methods import DcvMethod, applied_for
from acme_ca.va.records import (
    PRIMARY_PERSPECTIVE,
    PerspectiveCheck,
    ValidationRecord,
    dcv_records,
)
from acme_ca.va.resolver import DnsAnswer, DnsClient, IPAddress

AddressPolicy = Callable[[IPAddress], bool]
"""True when the VA may connect to the address."""

_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


def public_address_policy(address: IPAddress) -> bool:
    """The production policy: only globally routable unicast (BR-DCV-6, ACME-CHAL-5 SSRF).

    ``is_global`` already excludes private, loopback, link-local, reserved, unspecified,
    documentation, benchmarking and CGNAT space; multicast is refused separately, and an
    IPv6 address that embeds an IPv4 one (mapped, 6to4, NAT64, Teredo) is judged by the
    embedded address so no IPv6 spelling reaches an internal IPv4 host.
    """
    if address.is_multicast or not address.is_global or address in _CGNAT:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return public_address_policy(embedded)
    return True


@dataclass(frozen=True)
class Resolved:
    """A name's addresses: all that resolved, those the policy allows, those it refused."""

    addresses: tuple[IPAddress, ...]
    allowed: tuple[IPAddress, ...]

    @property
    def refused(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.addresses if a not in self.allowed)

    @property
    def note(self) -> str | None:
        """For the record: which addresses the policy refused, if any."""
        return "refused by address policy: " + ", ".join(self.refused) if self.refused else None

    def candidates(self) -> list[IPAddress]:
        """Where to connect, in order: the first allowed IPv6 address, then the first IPv4
        one (RFC 8555 §8.3 practice, as Boulder: IPv6 first, one IPv4 fallback)."""
        firsts = [next((a for a in self.allowed if a.version == v), None) for v in (6, 4)]
        return [a for a in firsts if a is not None]


class AddressesRefused(Exception):
    """No address to connect to: the lookup failed, found nothing, or all were refused."""

    def __init__(
        self, problem: Problem, addresses: Sequence[IPAddress] = (), note: str | None = None
    ) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.addresses = tuple(addresses)
        self.note = note


async def resolve_allowed(dns: DnsClient, host: str, policy: AddressPolicy) -> Resolved:
    """Resolve ``host`` (A and AAAA) and keep what ``policy`` allows; raises
    :class:`AddressesRefused` with a ``dns`` problem when there is nothing to connect to."""
    answers, addresses = await dns.lookup_addresses(host)
    failed: DnsAnswer | None = next((a for a in answers if not a.ok), None)
    if failed is not None:
        raise AddressesRefused(
            problems.dns(
                f"DNS problem: {failed.failure} looking up {failed.rdtype} for {host}"
                + (f": {failed.error}" if failed.error else "")
            ),
            addresses,
        )
    if not addresses:
        raise AddressesRefused(problems.dns(f"No IP addresses found for {host}"))
    resolved = Resolved(tuple(addresses), tuple(a for a in addresses if policy(a)))
    if not resolved.allowed:
        raise AddressesRefused(
            problems.dns(
                f"No valid IP addresses found for {host}: "
                f"{', '.join(resolved.refused)} refused (reserved or internal addresses)"
            ),
            addresses,
            resolved.note,
        )
    return resolved


def host_port(address: IPAddress, port: int) -> str:
    """``address:port``, IPv6 in brackets, as records name the server connected to."""
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@functools.cache
def unverified_tls_context(alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """TLS 1.2+ without certificate or host name checks, offering ``alpn``: an http-01
    redirect to https is not checked (RFC 8555 §8.3 practice), and tls-alpn-01 judges its
    self-signed certificate itself.

    One per process and ALPN list: it holds settings only (a client context keeps no sessions
    unless asked), and making one per validator was a visible share of a remote VA's CPU
    (issue 20)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@dataclass(eq=False, kw_only=True)
class AddressCheck(PerspectiveCheck):
    """A method that connects to ``port`` of the addresses of the name that
    ``address_policy`` allows, within ``timeout`` seconds for the whole check (http-01,
    tls-alpn-01).  Each method sets :attr:`method` and defaults for ``port`` and ``timeout``."""

    method: ClassVar[DcvMethod]
    port: int
    address_policy: AddressPolicy = public_address_policy
    timeout: float

    async def _resolve(self, host: str) -> Resolved:
        """``host``'s addresses as :func:`resolve_allowed` keeps them for this check."""
        return await resolve_allowed(self.dns, host, self.address_policy)

    def _stamp(
        self, records: Sequence[ValidationRecord], adn: str, value: str, *, ok: bool
    ) -> tuple[ValidationRecord, ...]:
        """Put this check's perspective and what was validated (SC-099) on every record."""
        if self.perspective != PRIMARY_PERSPECTIVE:
            records = [replace(r, perspective=self.perspective) for r in records]
        return dcv_records(
            records,
            method=self.method,
            identifier=applied_for(adn, wildcard=False),
            adn=adn,
            value=value,
            ok=ok,
        )
