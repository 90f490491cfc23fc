"""Headers RFC 8555 puts on responses: Replay-Nonce (§6.5), Link rel=index (§7.1), no caching.

Replay-Nonce goes on every response to a POST and on every error, so a client that got
``badNonce`` (or any other problem) can retry at once.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from acme_ca.wfe import urls
from acme_ca.wfe.services import front_end


@web.middleware
async def protocol_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    fe = front_end(request)
    if (
        request.method == "POST" or response.status >= 400
    ) and "Replay-Nonce" not in response.headers:
        response.headers["Replay-Nonce"] = fe.nonces.issue()
    if request.path != urls.DIRECTORY:
        response.headers.add("Link", f'<{fe.urls.absolute(urls.DIRECTORY)}>;rel="index"')
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def setup_protocol_headers(app: web.Application) -> None:
    app.middlewares.append(protocol_headers_middleware)
