"""Pebble's management interface: the test CA's certificates, keys and certificate status.

Pebble serves these on its own HTTPS listener (``managementListenAddress``, 15000); test mode
serves them there too and, as before, on the challenge test server's management API (8055):

* ``GET /roots/N``, ``/intermediates/N``: PEM (``application/pem-certificate-chain``), with
  one ``Link: <…/roots/i>;rel="alternate"`` per other chain, as Pebble's ``handleCert``;
* ``GET /root-keys/N``, ``/intermediate-keys/N``: the private keys (``application/x-pem-file``),
  as Pebble hands out its throwaway keys; test mode's hierarchy is generated per home and never
  trusted anywhere;
* ``GET /cert-status-by-serial/SERIAL``: ``{"Status": "Valid"|"Revoked", "Serial",
  "Certificate", "Reason", "RevokedAt"}``; a serial that is not hex is 400, an unknown one 404,
  both with an empty body, as in Pebble.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

PemProvider = Callable[[int], Awaitable[bytes | None]]
"""Returns the n-th item as PEM, or None when there is no such item."""
CertStatusProvider = Callable[[int], Awaitable[dict[str, object] | None]]
"""Returns Pebble's status object for a serial, or None when no certificate has it."""

PEM_CHAIN_TYPE = "application/pem-certificate-chain"
PEM_KEY_TYPE = "application/x-pem-file"
_ATOI = re.compile(r"[+-]?[0-9]{1,18}")
_HEX = re.compile(r"[+-]?[0-9a-fA-F]+")
#: Longest serial accepted: 20 octets (RFC 5280 §4.1.2.2) in hex, with room for a sign octet.
_MAX_SERIAL_HEX = 42


@dataclass(frozen=True)
class CaEndpoints:
    """Where each endpoint's answers come from; a missing source answers 404."""

    roots: PemProvider | None = None
    intermediates: PemProvider | None = None
    root_keys: PemProvider | None = None
    intermediate_keys: PemProvider | None = None
    cert_status: CertStatusProvider | None = None


CA_ENDPOINTS = web.AppKey("testsrv_ca_endpoints", CaEndpoints)


def static_pem(*pems: bytes) -> PemProvider:
    """A provider for items known at start-up; index n is the n-th argument."""

    async def provide(index: int) -> bytes | None:
        return pems[index] if 0 <= index < len(pems) else None

    return provide


async def _chain_count(roots: PemProvider) -> int:
    count = 0
    while count < 64 and await roots(count) is not None:
        count += 1
    return count


def _served(
    provider_of: Callable[[CaEndpoints], PemProvider | None], prefix: str, content_type: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        endpoints = request.app[CA_ENDPOINTS]
        provider = provider_of(endpoints)
        text = request.match_info["index"]
        if not _ATOI.fullmatch(text):  # Go's strconv.Atoi fails: Pebble answers 404
            return web.Response(status=404)
        index = int(text)
        pem = await provider(index) if provider is not None and index >= 0 else None
        if pem is None:
            return web.Response(status=404)
        response = web.Response(body=pem, content_type=content_type, charset="utf-8")
        if endpoints.roots is not None:
            base = f"{request.scheme}://{request.host}{prefix}"
            for other in range(await _chain_count(endpoints.roots)):
                if other != index:
                    response.headers.add("Link", f'<{base}{other}>;rel="alternate"')
        return response

    return handler


async def _cert_status(request: web.Request) -> web.Response:
    provider = request.app[CA_ENDPOINTS].cert_status
    text = request.match_info["serial"]
    if not _HEX.fullmatch(text):  # Go's big.Int SetString(text, 16) fails: 400
        return web.Response(status=400)
    serial = int(text, 16)
    fits = serial >= 0 and len(text) <= _MAX_SERIAL_HEX
    status = await provider(serial) if provider is not None and fits else None
    if status is None:
        return web.Response(status=404)
    return web.Response(
        text=json.dumps(status, indent=3), content_type="application/json", charset="utf-8"
    )


def add_ca_routes(app: web.Application, endpoints: CaEndpoints) -> None:
    """Register the GET endpoints on ``app`` (the 8055 API or the 15000 listener)."""
    app[CA_ENDPOINTS] = endpoints
    routes = (
        ("/roots/", lambda e: e.roots, PEM_CHAIN_TYPE),
        ("/intermediates/", lambda e: e.intermediates, PEM_CHAIN_TYPE),
        ("/root-keys/", lambda e: e.root_keys, PEM_KEY_TYPE),
        ("/intermediate-keys/", lambda e: e.intermediate_keys, PEM_KEY_TYPE),
    )
    for prefix, provider_of, content_type in routes:
        app.router.add_get(prefix + "{index}", _served(provider_of, prefix, content_type))
    app.router.add_get("/cert-status-by-serial/{serial}", _cert_status)


def make_ca_management_app(endpoints: CaEndpoints) -> web.Application:
    """Pebble's management listener: only these endpoints."""
    app = web.Application()
    add_ca_routes(app, endpoints)
    return app
