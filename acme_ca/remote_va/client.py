"""The primary's mutual-TLS client to remote VAs: the :class:`RemoteTransport` of ``va/mpic``.

Each remote gets its own kept-alive connection pool (one :class:`aiohttp.ClientSession` per
perspective): a check goes over an idle mutual-TLS connection to that remote when there is
one, so the handshake -- certificate verification and key exchange on both sides, which
dominated the CPU of these small requests (issue 20) -- is paid once per connection, not
once per check.  Only the transport is reused: every request carries a fresh nonce, and the
remote runs its full check for it from scratch, so nothing a reply says is reused.  One slow
remote holds nothing another needs, since the pools are separate and unbounded.  The
remote's certificate must chain to ``mpic_server_ca`` and name the perspective id
(``server_hostname``), whatever host the URL names.  The per-remote timeout is applied by
the caller (:class:`acme_ca.va.mpic.MpicValidator`).
"""

from __future__ import annotations

import json
import ssl
from typing import Any, Final

import aiohttp

from acme_ca.acme.jsontypes import JsonObject
from acme_ca.va.mpic import CHECK_PATH, RemoteUnavailable
from acme_ca.va.perspectives import Perspective

MAX_REPLY_BYTES: Final = 256 * 1024
"""A reply is a CheckResult with a few dozen records; anything larger is refused unread."""
USER_AGENT: Final = "acme_ca-primary-va/1 (mpic)"
KEEPALIVE_SECONDS: Final = 15.0
"""An idle connection to a remote is closed after this long; well below the remote's own
idle timeout (aiohttp's 75 s), so the remote rarely closes a connection we are about to use."""


class MtlsTransport:
    """POSTs a check to ``<url>/acme-ca/mpic/v1/check`` with the primary's client certificate."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._sessions: dict[tuple[str, str], aiohttp.ClientSession] = {}

    def _session(self, perspective: Perspective) -> aiohttp.ClientSession:
        """This remote's pool, made on first use (inside the running loop)."""
        key = (perspective.id, perspective.url)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._context, limit=0, keepalive_timeout=KEEPALIVE_SECONDS
            )
            session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
            self._sessions[key] = session
        return session

    async def check(self, perspective: Perspective, request: JsonObject) -> Any:
        try:
            try:
                body = await self._post(perspective, request)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):
                    raise
                # A kept-alive connection the remote had just closed: once more, on a new one
                # (the check is a pure read; the same nonce is answered either way).
                body = await self._post(perspective, request)
        except aiohttp.ClientSSLError as exc:
            raise RemoteUnavailable(f"TLS failure: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise RemoteUnavailable(f"{type(exc).__name__}: {exc}") from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise RemoteUnavailable(f"reply is not JSON: {exc}") from exc

    async def _post(self, perspective: Perspective, request: JsonObject) -> bytes:
        async with self._session(perspective).post(
            perspective.url + CHECK_PATH,
            json=request,
            server_hostname=perspective.id,
            allow_redirects=False,
        ) as response:
            body = await _read_limited(response)
            if response.status != 200:
                raise RemoteUnavailable(
                    f"HTTP {response.status}: {body[:120].decode('utf-8', 'replace')}"
                )
            return body

    async def aclose(self) -> None:
        """Close every remote's pooled connections."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16384):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise RemoteUnavailable(f"reply larger than {MAX_REPLY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
