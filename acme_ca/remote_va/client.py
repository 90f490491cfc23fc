"""The primary's mutual-TLS client to remote VAs: the :class:`RemoteTransport` of ``va/mpic``.

Each request gets its own connection (a session per request, ``force_close``): nothing from
an earlier exchange -- connection, TLS session, reply -- is reused, and one slow remote
holds nothing another needs.  The remote's certificate must chain to ``mpic_server_ca`` and
name the perspective id (``server_hostname``), whatever host the URL names.  The per-remote
timeout is applied by the caller (:class:`acme_ca.va.mpic.MpicValidator`).
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


class MtlsTransport:
    """POSTs a check to ``<url>/acme-ca/mpic/v1/check`` with the primary's client certificate."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context

    async def check(self, perspective: Perspective, request: JsonObject) -> Any:
        connector = aiohttp.TCPConnector(ssl=self._context, force_close=True, limit=1)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, headers={"User-Agent": USER_AGENT}
                ) as session,
                session.post(
                    perspective.url + CHECK_PATH,
                    json=request,
                    server_hostname=perspective.id,
                    allow_redirects=False,
                ) as response,
            ):
                body = await _read_limited(response)
                if response.status != 200:
                    raise RemoteUnavailable(
                        f"HTTP {response.status}: {body[:120].decode('utf-8', 'replace')}"
                    )
        except aiohttp.ClientSSLError as exc:
            raise RemoteUnavailable(f"TLS failure: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise RemoteUnavailable(f"{type(exc).__name__}: {exc}") from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise RemoteUnavailable(f"reply is not JSON: {exc}") from exc


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16384):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise RemoteUnavailable(f"reply larger than {MAX_REPLY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
