"""The challenge test server's shared state: DNS data, http-01 responses and request history.

One :class:`ChallengeStore` backs the DNS server, the http-01 responder and the management
API, so a record set through the API is what the next query sees. Everything runs on one
event loop, so plain dicts need no lock. Values are checked here, once, so the servers can
trust what they read and the management API can turn :class:`InvalidRecord` into a 400.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from acme_ca.clock import Clock, SystemClock

DEFAULT_IPV4 = "127.0.0.1"
"""Answer for A queries on names without their own A records, as Pebble's default."""

CAA_CRITICAL = 0x80
"""The issuer-critical bit of the CAA flags octet (RFC 8659 §4.1)."""

Transport = Literal["udp", "tcp"]
HistoryType = Literal["dns", "http"]


class InvalidRecord(ValueError):
    """A host, address or record value that cannot be served; the API answers 400."""


@dataclass(frozen=True)
class CaaPolicy:
    """One CAA record: Pebble's ``tag``/``value`` plus our ``flags`` (128 = critical)."""

    tag: str
    value: str
    flags: int = 0

    @property
    def critical(self) -> bool:
        return bool(self.flags & CAA_CRITICAL)

    def to_rdata(self) -> dns.rdata.Rdata:
        """The wire form; building it is also how a policy is validated (alphanumeric tag)."""
        tag, value = self.tag.encode(), self.value.encode()
        if not 0 <= self.flags <= 255 or not 0 < len(tag) < 256:
            raise InvalidRecord(f"bad CAA policy {self.tag!r}: flags or tag out of range")
        wire = bytes([self.flags, len(tag)]) + tag + value
        try:
            return dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.CAA, wire, 0, len(wire))
        except (ValueError, dns.exception.DNSException) as exc:
            raise InvalidRecord(f"bad CAA policy {self.tag!r}: {exc}") from exc


@dataclass(frozen=True)
class DnsQueryEvent:
    """One DNS question as received: tests check what the VA really asked, and how."""

    name: str
    qtype: int
    qclass: int
    transport: Transport
    time: datetime

    def to_json(self) -> dict[str, object]:
        """Pebble's event shape (``Question``, ``UserAgent``) plus our transport and time."""
        return {
            "Question": {"Name": self.name, "Qtype": self.qtype, "Qclass": self.qclass},
            "UserAgent": "",
            "Transport": self.transport,
            "Time": self.time.isoformat(),
        }


@dataclass(frozen=True)
class HttpRequestEvent:
    """One request to the http-01 responder, keyed in the history by its Host header."""

    url: str
    host: str
    method: str
    user_agent: str
    time: datetime
    https: bool = False
    server_name: str = ""

    def to_json(self) -> dict[str, object]:
        """Pebble's event shape (``HTTPS`` and the SNI ``ServerName`` from the https-01
        listener) plus our method and time."""
        return {
            "URL": self.url,
            "Host": self.host,
            "HTTPS": self.https,
            "ServerName": self.server_name,
            "UserAgent": self.user_agent,
            "Method": self.method,
            "Time": self.time.isoformat(),
        }


def dns_name(host: str | dns.name.Name) -> dns.name.Name:
    """Parse a host given with or without its trailing dot; Names compare case-insensitively."""
    if isinstance(host, dns.name.Name):
        return host
    text = host.strip()
    if not text or text == ".":
        raise InvalidRecord("host must not be empty")
    try:
        return dns.name.from_text(text)
    except (ValueError, dns.exception.DNSException) as exc:
        raise InvalidRecord(f"bad host {host!r}: {exc}") from exc


def history_key(host: str | dns.name.Name) -> str:
    """The history index: lower case, no trailing dot, so ``Example.COM.`` finds ``example.com``."""
    if isinstance(host, dns.name.Name):
        host = host.to_text(omit_final_dot=True)
    return host.strip().rstrip(".").lower()


def _without_port(host_header: str) -> str:
    """Pebble keys http history by the Host header minus any port (``[::1]:80`` -> ``::1``)."""
    host = host_header.strip()
    if host.startswith("[") and "]" in host:
        return host[1 : host.index("]")]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def _address(text: str, version: Literal[4, 6]) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise InvalidRecord(f"bad IPv{version} address {text!r}") from exc
    if address.version != version:
        raise InvalidRecord(f"{text!r} is not an IPv{version} address")
    return str(address)


def _add_addresses(
    table: dict[dns.name.Name, list[str]],
    version: Literal[4, 6],
    host: str | dns.name.Name,
    addresses: Iterable[str],
) -> None:
    """Pebble's add-a / add-aaaa: every address checked first, then appended to the host's."""
    checked = [_address(a, version) for a in addresses]
    if not checked:
        raise InvalidRecord("addresses must not be empty")
    table.setdefault(dns_name(host), []).extend(checked)


class ChallengeStore:
    """Records to serve and requests seen, shared by the DNS, http-01 and management servers."""

    def __init__(
        self,
        *,
        default_ipv4: str | None = DEFAULT_IPV4,
        default_ipv6: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._default_ipv4: str | None = None
        self._default_ipv6: str | None = None
        self.set_default_ipv4(default_ipv4)
        self.set_default_ipv6(default_ipv6)
        self._a: dict[dns.name.Name, list[str]] = {}
        self._aaaa: dict[dns.name.Name, list[str]] = {}
        self._txt: dict[dns.name.Name, list[str]] = {}
        self._caa: dict[dns.name.Name, list[CaaPolicy]] = {}
        self._cname: dict[dns.name.Name, dns.name.Name] = {}
        self._servfail: set[dns.name.Name] = set()
        self._nxdomain: set[dns.name.Name] = set()
        self._http01: dict[str, str] = {}
        self._redirects: dict[str, str] = {}
        self._tlsalpn01: dict[str, str] = {}
        self._dns_history: dict[str, list[DnsQueryEvent]] = {}
        self._http_history: dict[str, list[HttpRequestEvent]] = {}

    # Default addresses: "" or None turns the default off, as in Pebble.

    @property
    def default_ipv4(self) -> str | None:
        return self._default_ipv4

    @property
    def default_ipv6(self) -> str | None:
        return self._default_ipv6

    def set_default_ipv4(self, ip: str | None) -> None:
        self._default_ipv4 = _address(ip, 4) if ip else None

    def set_default_ipv6(self, ip: str | None) -> None:
        self._default_ipv6 = _address(ip, 6) if ip else None

    # A / AAAA: adding appends to what the host already has.

    def add_a(self, host: str | dns.name.Name, addresses: Iterable[str]) -> None:
        _add_addresses(self._a, 4, host, addresses)

    def clear_a(self, host: str | dns.name.Name) -> None:
        self._a.pop(dns_name(host), None)

    def a_addresses(self, host: str | dns.name.Name) -> tuple[str, ...]:
        """Only the host's own addresses; the DNS server decides when the default applies."""
        return tuple(self._a.get(dns_name(host), ()))

    def add_aaaa(self, host: str | dns.name.Name, addresses: Iterable[str]) -> None:
        _add_addresses(self._aaaa, 6, host, addresses)

    def clear_aaaa(self, host: str | dns.name.Name) -> None:
        self._aaaa.pop(dns_name(host), None)

    def aaaa_addresses(self, host: str | dns.name.Name) -> tuple[str, ...]:
        return tuple(self._aaaa.get(dns_name(host), ()))

    # TXT: Pebble's set-txt appends, so a name can carry several dns-01 values at once.

    def set_txt(self, host: str | dns.name.Name, value: str) -> None:
        if not value:
            raise InvalidRecord("value must not be empty")
        self._txt.setdefault(dns_name(host), []).append(value)

    def clear_txt(self, host: str | dns.name.Name) -> None:
        self._txt.pop(dns_name(host), None)

    def txt_values(self, host: str | dns.name.Name) -> tuple[str, ...]:
        return tuple(self._txt.get(dns_name(host), ()))

    # CAA

    def add_caa(self, host: str | dns.name.Name, policies: Iterable[CaaPolicy]) -> None:
        checked = list(policies)
        if not checked:
            raise InvalidRecord("policies must not be empty")
        for policy in checked:
            policy.to_rdata()
        self._caa.setdefault(dns_name(host), []).extend(checked)

    def clear_caa(self, host: str | dns.name.Name) -> None:
        self._caa.pop(dns_name(host), None)

    def caa_policies(self, host: str | dns.name.Name) -> tuple[CaaPolicy, ...]:
        return tuple(self._caa.get(dns_name(host), ()))

    # CNAME: one target per name; setting again replaces it.

    def set_cname(self, host: str | dns.name.Name, target: str | dns.name.Name) -> None:
        self._cname[dns_name(host)] = dns_name(target)

    def clear_cname(self, host: str | dns.name.Name) -> None:
        self._cname.pop(dns_name(host), None)

    def cname(self, host: str | dns.name.Name) -> dns.name.Name | None:
        return self._cname.get(dns_name(host))

    # Injected failures: SERVFAIL (Pebble) and NXDOMAIN (ours), per exact name.

    def set_servfail(self, host: str | dns.name.Name) -> None:
        self._servfail.add(dns_name(host))

    def clear_servfail(self, host: str | dns.name.Name) -> None:
        self._servfail.discard(dns_name(host))

    def is_servfail(self, host: str | dns.name.Name) -> bool:
        return dns_name(host) in self._servfail

    def set_nxdomain(self, host: str | dns.name.Name) -> None:
        self._nxdomain.add(dns_name(host))

    def clear_nxdomain(self, host: str | dns.name.Name) -> None:
        self._nxdomain.discard(dns_name(host))

    def is_nxdomain(self, host: str | dns.name.Name) -> bool:
        return dns_name(host) in self._nxdomain

    # tls-alpn-01: the key authorization each host's challenge certificate carries (Pebble
    # keys it by host as given; we fold case and a trailing dot, as SNI names compare).

    def add_tlsalpn01(self, host: str, content: str) -> None:
        if not host or not content:
            raise InvalidRecord("host and content must not be empty")
        self._tlsalpn01[host.rstrip(".").lower()] = content

    def del_tlsalpn01(self, host: str) -> None:
        self._tlsalpn01.pop(host.rstrip(".").lower(), None)

    def tlsalpn01_content(self, host: str) -> str | None:
        return self._tlsalpn01.get(host.rstrip(".").lower())

    # http-01 responses and redirects

    def add_http01(self, token: str, content: str) -> None:
        if not token or not content:
            raise InvalidRecord("token and content must not be empty")
        self._http01[token] = content

    def del_http01(self, token: str) -> None:
        self._http01.pop(token, None)

    def http01_content(self, token: str) -> str | None:
        return self._http01.get(token)

    def add_redirect(self, path: str, target_url: str) -> None:
        if not path or not target_url:
            raise InvalidRecord("path and targetURL must not be empty")
        self._redirects[path] = target_url

    def del_redirect(self, path: str) -> None:
        self._redirects.pop(path, None)

    def redirect_target(self, path: str) -> str | None:
        return self._redirects.get(path)

    # Request history, per host and kind, in arrival order.

    def record_dns(self, event: DnsQueryEvent) -> None:
        self._dns_history.setdefault(history_key(event.name), []).append(event)

    def record_http(self, event: HttpRequestEvent) -> None:
        key = history_key(_without_port(event.host))
        self._http_history.setdefault(key, []).append(event)

    def dns_history(self, host: str) -> tuple[DnsQueryEvent, ...]:
        return tuple(self._dns_history.get(history_key(host), ()))

    def http_history(self, host: str) -> tuple[HttpRequestEvent, ...]:
        return tuple(self._http_history.get(history_key(host), ()))

    def clear_history(self, host: str, kind: HistoryType) -> None:
        history = self._dns_history if kind == "dns" else self._http_history
        history.pop(history_key(host), None)
