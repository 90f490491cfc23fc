"""newNonce (RFC 8555 §7.2): HEAD answers 200, GET 204, both with a fresh Replay-Nonce."""

from __future__ import annotations

from aiohttp import web

from acme_ca.wfe.services import front_end


def _nonce_response(request: web.Request, status: int) -> web.Response:
    response = web.Response(status=status)
    response.headers["Replay-Nonce"] = front_end(request).nonces.issue()
    response.headers["Cache-Control"] = "no-store"
    return response


async def head_new_nonce(request: web.Request) -> web.Response:
    response = _nonce_response(request, 200)
    # aiohttp leaves Content-Length off a bodiless HEAD answer, and HTTP clients that do not
    # special-case HEAD (aiohttp's own among them) then cannot tell where the answer ends
    # and close the connection: one TLS handshake per nonce.  The GET is 204 (no length).
    response.headers["Content-Length"] = "0"
    return response


async def get_new_nonce(request: web.Request) -> web.Response:
    return _nonce_response(request, 204)
