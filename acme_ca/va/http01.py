"""http-01 validation (RFC 8555 §8.3, BR §3.2.2.4.19, ACME-CHAL-5, BR-DCV-2/3).

We speak HTTP/1.1 over asyncio streams ourselves instead of using a client library: the VA
must decide every address it connects to (resolved by our resolver, checked by the injected
``address_policy`` so no answer can point us at an internal service), every redirect it
follows and every byte it reads.  (``va/`` may use aiohttp's client, only ``aiohttp.web`` is
forbidden; the contract in pyproject.toml says why this module keeps its own.)  The exchange
is deliberately small: one GET per connection, ``Connection: close``, a capped header block
and a capped body.

Every hop yields a :class:`ValidationRecord`; the result's ``observed`` is the body served
(trailing whitespace stripped), which remote perspectives must reproduce (BR §3.2.2.9).

The Authorization Domain Name is exactly the applied-for FQDN (BR 3.2.2.4 as amended by
SC-101: method 3.2.2.4.19 allows no wildcard, no pruning, no CNAME substitution): the first
request is ``http://<FQDN>/.well-known/acme-challenge/<token>`` with ``Host: <FQDN>``.  The
resolver may follow a CNAME to find the FQDN's addresses; that changes where we connect,
never which name is validated.  Only the redirects BR 3.2.2.4.19 allows lead elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Final
from urllib.parse import quote, urljoin, urlsplit

import structlog

from acme_ca.acme import problems
from acme_ca.acme.problems import Problem
from acme_ca.va.addresses import AddressCheck, AddressesRefused, host_port, unverified_tls_context
from acme_ca.va.methods import DcvMethod, WildcardNotAllowed, authorization_domain_name
from acme_ca.va.records import ChallengeRequest, CheckResult, ValidationRecord, truncate

METHOD: Final = DcvMethod(
    label="http-01",
    section="3.2.2.4.19",
    title="Agreed-Upon Change to Website - ACME",
    wildcard=False,
    prune=False,
    cname=False,
)
HTTP_PORT: Final = 80
HTTPS_PORT: Final = 443
MAX_REDIRECTS: Final = 10
"""Redirects followed before giving up (Boulder's limit); the first request is not one."""
BODY_SLACK: Final = 128
"""Bytes read beyond the expected key authorization; a longer body fails unread."""
MAX_HEADER_BYTES: Final = 16 * 1024
"""The status line and header block together; a longer head is a malformed response."""
MAX_HEADER_LINES: Final = 100
MAX_INTERIM_RESPONSES: Final = 5
"""1xx responses skipped before the final one."""
DEFAULT_TIMEOUT: Final = 10.0
"""Seconds for the whole check, every hop, DNS lookup and TLS handshake included."""
REDIRECT_STATUSES: Final = frozenset({301, 302, 307, 308})
"""BR §3.2.2.4.19: the only redirects that may be followed."""
TRAILING_WHITESPACE: Final = b" \t\r\n"
"""RFC 8555 §8.3: the client MAY send trailing whitespace; the VA ignores it."""
WELL_KNOWN_PATH: Final = "/.well-known/acme-challenge/"
USER_AGENT: Final = "acme_ca-va/1 (http-01)"

_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})+", re.ASCII)
_STATUS_LINE_RE: Final = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r?\n")
_CHUNK_SIZE_RE: Final = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?\r?\n")
#: Visible ASCII stays as sent; anything else in a path is percent-encoded before it is sent.
_PATH_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F))

_log = structlog.get_logger(component=__name__)


@dataclass(frozen=True)
class Target:
    """One URL the VA may fetch: scheme, host name and the port actually connected to."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    """Path and query, percent-encoded, as sent on the request line."""
    explicit_port: bool = False

    @property
    def host_header(self) -> str:
        """As the URL spelled it: a mapped test port stands for 80/443 only when implicit."""
        return f"{self.host}:{self.port}" if self.explicit_port else self.host


class TargetRefused(ValueError):
    """A URL the VA will not fetch; the message is the reason given to the client."""


def parse_target(url: str, *, http_port: int = HTTP_PORT, https_port: int = HTTPS_PORT) -> Target:
    """Check a URL against BR-DCV-3 and return where to connect; raises :class:`TargetRefused`.

    Only ``http``/``https``, only a host name (an IP literal is refused, as Boulder does), no
    user info, and only ports 80 and 443.  ``http_port`` and ``https_port`` are what 80 and
    443 mean on this VA: tests run their servers elsewhere and map them here.
    """
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"invalid URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused(f"scheme {parts.scheme!r} is not http or https")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("URL carries user information")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise TargetRefused("URL has no host")
    if _is_ip_literal(host):
        raise TargetRefused(f"host {host!r} is an IP address; only domain names are followed")
    if _HOSTNAME_RE.fullmatch(host) is None:
        raise TargetRefused(f"host {host!r} is not a valid domain name")
    if explicit_port is None:
        port = http_port if scheme == "http" else https_port
    elif explicit_port in (http_port, https_port):
        port = explicit_port
    else:
        raise TargetRefused(f"port {explicit_port} is not an authorized port (80 or 443)")
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        explicit_port=explicit_port is not None,
    )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _HopFailed(Exception):
    """Ends a check: the hop's problem and what is known of it so far."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass
class _Hop:
    """What one request learned; becomes a :class:`ValidationRecord` however it ended."""

    url: str
    hostname: str
    at: datetime
    addresses: tuple[str, ...] = ()
    server: str | None = None
    status: int | None = None
    location: str | None = None
    body: bytes | None = None
    notes: list[str] = field(default_factory=list)

    def record(self, error: str | None = None) -> ValidationRecord:
        response = None
        if self.status is not None:
            response = f"HTTP {self.status}"
            if self.location is not None:
                response += f" Location: {self.location}"
            if self.body is not None:
                response += f" body: {self.body.decode('utf-8', 'replace')!r}"
            response = truncate(response)
        if self.notes:
            error = "; ".join([*self.notes, error] if error else self.notes)
        return ValidationRecord(
            method=METHOD.label,
            hostname=self.hostname,
            query=self.url,
            at=self.at,
            server=self.server,
            addresses=self.addresses,
            response=response,
            error=error,
        )


@dataclass(frozen=True)
class _Response:
    status: int
    location: str | None
    body: bytes


@dataclass(frozen=True)
class _Head:
    status: int
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None


@dataclass(eq=False, kw_only=True)
class Http01Validator(AddressCheck):
    """Fetches ``/.well-known/acme-challenge/<token>`` as RFC 8555 §8.3 and BR-DCV-3 allow.

    ``address_policy`` decides which resolved addresses may be connected to; the default is
    :func:`public_address_policy`, and tests pass one that also allows loopback.
    ``https_port`` is what 443 means for a redirect to https; ``max_body`` caps the body
    read, None meaning the expected length plus :data:`BODY_SLACK`.
    """

    method: ClassVar[DcvMethod] = METHOD
    port: int = HTTP_PORT
    https_port: int = HTTPS_PORT
    timeout: float = DEFAULT_TIMEOUT
    max_redirects: int = MAX_REDIRECTS
    max_body: int | None = None

    def challenge_url(self, identifier: str, token: str) -> str:
        """The first URL fetched; the configured port stands in for 80."""
        netloc = identifier if self.port == HTTP_PORT else f"{identifier}:{self.port}"
        return f"http://{netloc}{WELL_KNOWN_PATH}{token}"

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        """The registry's entry point (:class:`acme_ca.va.registry.MethodCheck`)."""
        return await self.check(
            request.identifier,
            request.token,
            request.key_authorization,
            wildcard=request.wildcard,
        )

    async def check(
        self, identifier: str, token: str, key_authorization: str, *, wildcard: bool = False
    ) -> CheckResult:
        """Fetch the token from the FQDN itself, follow allowed redirects, compare the body."""
        try:
            adn = authorization_domain_name(METHOD, identifier, wildcard)
        except WildcardNotAllowed as exc:
            return CheckResult.failure(problems.unauthorized(f"{exc} (BR-DCV-5)"), ())
        if _TOKEN_RE.fullmatch(token) is None:
            return CheckResult.failure(problems.malformed("token is not base64url"), ())
        expected = key_authorization.encode("ascii")
        cap = self.max_body if self.max_body is not None else len(expected) + BODY_SLACK
        url = self.challenge_url(adn, token)
        records: list[ValidationRecord] = []
        hop: _Hop | None = None
        seen: set[str] = set()
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    hop = _Hop(url=url, hostname=urlsplit(url).hostname or "", at=self._now())
                    seen.add(url)
                    target = self._target(url, first=not records)
                    hop.hostname = target.host
                    response = await self._fetch(target, hop, cap)
                    if response.location is None:
                        problem = _judge(url, response, expected, cap)
                        records.append(hop.record(problem.detail if problem else None))
                        if problem is not None:
                            return self._fail(
                                problem, records, response.body, adn, key_authorization
                            )
                        return CheckResult.success(
                            self._stamp(records, adn, key_authorization, ok=True),
                            key_authorization,
                        )
                    url = self._next_url(url, response.location, len(records) + 1, seen)
                    records.append(hop.record())
                    hop = None
        except _HopFailed as failed:
            problem = failed.problem
        except TimeoutError:
            problem = problems.connection(f"Fetching {url}: timeout after {self.timeout:g} seconds")
        if hop is not None:
            records.append(hop.record(problem.detail))
        return self._fail(
            problem, records, hop.body if hop is not None else None, adn, key_authorization
        )

    def _now(self) -> datetime:
        return self.clock.now()

    def _target(self, url: str, *, first: bool) -> Target:
        try:
            return parse_target(url, http_port=self.port, https_port=self.https_port)
        except TargetRefused as exc:
            what = "challenge URL" if first else "redirect target"
            raise _HopFailed(problems.connection(f"Invalid {what} {url!r}: {exc}")) from exc

    def _next_url(self, url: str, location: str, redirects: int, seen: set[str]) -> str:
        """The target of redirect number ``redirects``, refused past the limit or on a loop."""
        if redirects > self.max_redirects:
            raise _HopFailed(
                problems.connection(
                    f"Too many redirects: more than {self.max_redirects} from {url} (BR-DCV-3)"
                )
            )
        target = urljoin(url, location.strip())
        if target in seen:
            raise _HopFailed(problems.connection(f"Redirect loop detected at {target}"))
        return target

    def _fail(
        self,
        problem: Problem,
        records: list[ValidationRecord],
        body: bytes | None,
        adn: str,
        key_authorization: str,
    ) -> CheckResult:
        observed = None
        if body is not None:
            observed = body.rstrip(TRAILING_WHITESPACE).decode("utf-8", "replace")
        _log.info(
            "va.http01.failed",
            url=records[-1].query if records else None,
            problem=problem.short_type,
            detail=problem.detail,
        )
        return CheckResult.failure(
            problem, self._stamp(records, adn, key_authorization, ok=False), observed
        )

    async def _connect(
        self, target: Target, hop: _Hop
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the first allowed IPv6 address, falling back to the first IPv4 one."""
        try:
            resolved = await self._resolve(target.host)
        except AddressesRefused as exc:
            hop.addresses = tuple(str(a) for a in exc.addresses)
            if exc.note:
                hop.notes.append(exc.note)
            raise _HopFailed(exc.problem) from None
        hop.addresses = tuple(str(a) for a in resolved.addresses)
        if resolved.note:
            hop.notes.append(resolved.note)
        errors: list[str] = []
        for address in resolved.candidates():
            hop.server = host_port(address, target.port)
            try:
                return await asyncio.open_connection(
                    str(address),
                    target.port,
                    ssl=unverified_tls_context() if target.scheme == "https" else None,
                    server_hostname=target.host if target.scheme == "https" else None,
                    limit=MAX_HEADER_BYTES,
                )
            except ssl.SSLError as exc:
                raise _HopFailed(
                    problems.tls(f"Fetching {target.url}: TLS error with {hop.server}: {exc}")
                ) from exc
            except OSError as exc:
                errors.append(f"{hop.server}: {exc.strerror or exc}")
        raise _HopFailed(
            problems.connection(f"Fetching {target.url}: connection failed: {'; '.join(errors)}")
        )

    async def _fetch(self, target: Target, hop: _Hop, cap: int) -> _Response:
        """One GET, reading at most ``cap + 1`` body bytes; also noted on ``hop``."""
        reader, writer = await self._connect(target, hop)
        try:
            request = (
                f"GET {target.path} HTTP/1.1\r\n"
                f"Host: {target.host_header}\r\n"
                f"User-Agent: {USER_AGENT}\r\n"
                "Accept: */*\r\n"
                "Accept-Encoding: identity\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(request.encode("ascii"))
            await writer.drain()
            head = await _read_head(reader, target.url)
            hop.status = head.status
            _log.debug("va.http01.hop", url=target.url, server=hop.server, status=head.status)
            if head.status in REDIRECT_STATUSES:
                location = head.get("location")
                if not location:
                    raise _HopFailed(
                        problems.connection(f"Redirect from {target.url} without a Location")
                    )
                hop.location = location
                return _Response(head.status, location, b"")
            hop.body = await _read_body(reader, head, cap, target.url)
        except ssl.SSLError as exc:
            raise _HopFailed(
                problems.tls(f"Fetching {target.url}: TLS error with {hop.server}: {exc}")
            ) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise _HopFailed(
                problems.connection(f"Fetching {target.url}: connection error: {exc}")
            ) from exc
        else:
            return _Response(head.status, None, hop.body)
        finally:
            writer.transport.abort()


def _judge(url: str, response: _Response, expected: bytes, cap: int) -> Problem | None:
    """BR-DCV-2: a 2xx whose body, less trailing whitespace, is the key authorization."""
    body = response.body
    problem: Problem | None = None
    if not 200 <= response.status < 300:
        problem = problems.unauthorized(
            f"Invalid response from {url}: HTTP {response.status}"
            f" {body[:64].decode('utf-8', 'replace')!r}"
        )
    elif len(body) > cap:
        problem = problems.incorrect_response(
            f"Response body from {url} is larger than {cap} bytes"
        )
    elif (seen := body.rstrip(TRAILING_WHITESPACE)) != expected:
        problem = problems.incorrect_response(
            "The key authorization file from the server did not match this challenge: "
            f"expected {expected.decode()!r} (got {seen[:128].decode('utf-8', 'replace')!r})"
        )
    return problem


def _malformed(url: str, why: str) -> _HopFailed:
    return _HopFailed(problems.connection(f"Fetching {url}: malformed HTTP response: {why}"))


async def _read_line(reader: asyncio.StreamReader, url: str) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise _malformed(url, "header line too long") from exc


async def _read_head(reader: asyncio.StreamReader, url: str) -> _Head:
    """Status line and headers of the final response, skipping interim 1xx responses."""
    for _ in range(MAX_INTERIM_RESPONSES + 1):
        line = await _read_line(reader, url)
        match = _STATUS_LINE_RE.fullmatch(line)
        if match is None:
            raise _malformed(url, f"bad status line {line[:64]!r}")
        status = int(match[1])
        size = len(line)
        headers: list[tuple[str, str]] = []
        while True:
            line = await _read_line(reader, url)
            size += len(line)
            if size > MAX_HEADER_BYTES or len(headers) >= MAX_HEADER_LINES:
                raise _malformed(url, "header block too large")
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise _malformed(url, f"bad header line {line[:64]!r}")
            headers.append((name.lower(), value.strip()))
        if not 100 <= status < 200 or status == 101:
            return _Head(status, tuple(headers))
    raise _malformed(url, "too many interim responses")


async def _read_body(reader: asyncio.StreamReader, head: _Head, cap: int, url: str) -> bytes:
    """At most ``cap + 1`` bytes of the body: enough to know it is too long, never more."""
    limit = cap + 1
    encoding = (head.get("transfer-encoding") or "").lower()
    if encoding:
        if encoding.split(",")[-1].strip() != "chunked":
            raise _malformed(url, f"unsupported transfer-encoding {encoding!r}")
        return await _read_chunked(reader, limit, url)
    length_text = head.get("content-length")
    if length_text is not None:
        if not length_text.isdigit():
            raise _malformed(url, f"bad content-length {length_text!r}")
        return await reader.readexactly(min(int(length_text), limit))
    return await _read_to_eof(reader, limit)


async def _read_to_eof(reader: asyncio.StreamReader, limit: int) -> bytes:
    """A body delimited by the connection closing, cut at ``limit`` bytes."""
    body = bytearray()
    while len(body) < limit:
        data = await reader.read(limit - len(body))
        if not data:
            break
        body += data
    return bytes(body)


async def _read_chunked(reader: asyncio.StreamReader, limit: int, url: str) -> bytes:
    body = bytearray()
    while len(body) < limit:
        line = await _read_line(reader, url)
        match = _CHUNK_SIZE_RE.fullmatch(line)
        if match is None:
            raise _malformed(url, f"bad chunk size line {line[:32]!r}")
        size = int(match[1], 16)
        if size == 0:
            break
        body += await reader.readexactly(min(size, limit - len(body)))
        if len(body) >= limit:
            break
        if await _read_line(reader, url) not in (b"\r\n", b"\n"):
            raise _malformed(url, "chunk not followed by CRLF")
    return bytes(body)
