"""The http-01 responder: key authorizations and redirects from the :class:`ChallengeStore`.

Every request is recorded before it is answered, so a test can see what the VA fetched
(Host header, path, User-Agent) even when the answer was a 404 or a redirect.
"""

from __future__ import annotations

from aiohttp import web

from acme_ca.testsrv.store import ChallengeStore, HttpRequestEvent

WELL_KNOWN_PREFIX = "/.well-known/acme-challenge/"
"""RFC 8555 §8.3: where the VA looks for a token's key authorization."""

STORE = web.AppKey("testsrv_http01_store", ChallengeStore)


async def _respond(request: web.Request) -> web.Response:
    """Redirect if one is set for the exact path, else serve the token's content, else 404."""
    store = request.app[STORE]
    store.record_http(
        HttpRequestEvent(
            url=request.path_qs,
            host=request.host,
            method=request.method,
            user_agent=request.headers.get("User-Agent", ""),
            time=store.clock.now(),
        )
    )
    target = store.redirect_target(request.path)
    if target is not None:
        # 302, as Pebble sends, so the VA's redirect handling is exercised the same way.
        return web.Response(status=302, headers={"Location": target})
    if request.path.startswith(WELL_KNOWN_PREFIX):
        content = store.http01_content(request.path.removeprefix(WELL_KNOWN_PREFIX))
        if content is not None:
            return web.Response(text=content, content_type="text/plain")
    return web.Response(status=404, text="no such challenge token\n")


def make_http01_app(store: ChallengeStore) -> web.Application:
    """Every method on every path reaches one handler, as in Pebble, so all of it is recorded."""
    app = web.Application()
    app[STORE] = store
    app.router.add_route("*", "/{tail:.*}", _respond)
    return app
