"""The http-01 responder: key authorizations and redirects from the :class:`ChallengeStore`.

Every request is recorded before it is answered, so a test can see what the VA fetched
(Host header, path, User-Agent) even when the answer was a redirect or empty.  The same app
serves pebble-challtestsrv's https-01 listener (http-01 answers over TLS, for redirect tests)
when started with :func:`https01_ssl_context`.  As in pebble-challtestsrv, an unknown token
is answered 200 with an empty body, and redirects are served over plain HTTP only.
"""

from __future__ import annotations

import ssl
import tempfile
import weakref
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web

from acme_ca.localca import LocalCa, cert_pem, key_pem, local_name
from acme_ca.testsrv.store import ChallengeStore, HttpRequestEvent

WELL_KNOWN_PREFIX = "/.well-known/acme-challenge/"
"""RFC 8555 §8.3: where the VA looks for a token's key authorization."""

STORE = web.AppKey("testsrv_http01_store", ChallengeStore)

#: The SNI name each TLS connection asked for (``ServerName`` in the request history).
_SERVER_NAMES: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()


def _server_name(request: web.Request) -> tuple[bool, str]:
    """Whether the request came over TLS, and the SNI name it sent ("" if none)."""
    if request.transport is None:
        return False, ""
    ssl_object = request.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return False, ""
    return True, _SERVER_NAMES.get(ssl_object, "")


async def _respond(request: web.Request) -> web.Response:
    """Redirect (plain HTTP only) if one is set for the exact path, else the token's
    content, else 200 with an empty body, as pebble-challtestsrv answers."""
    store = request.app[STORE]
    https, server_name = _server_name(request)
    store.record_http(
        HttpRequestEvent(
            url=request.path_qs,
            host=request.host,
            method=request.method,
            user_agent=request.headers.get("User-Agent", ""),
            time=store.clock.now(),
            https=https,
            server_name=server_name,
        )
    )
    target = store.redirect_target(request.path)
    if target is not None and not https:
        # 302, as Pebble sends, so the VA's redirect handling is exercised the same way.
        return web.Response(status=302, headers={"Location": target})
    if request.path.startswith(WELL_KNOWN_PREFIX):
        content = store.http01_content(request.path.removeprefix(WELL_KNOWN_PREFIX))
        if content is not None:
            return web.Response(text=content, content_type="text/plain")
    return web.Response(status=200)


def https01_ssl_context(now: datetime) -> ssl.SSLContext:
    """A throwaway self-signed certificate, as pebble-challtestsrv's https-01 listener uses:
    the VA does not check certificates of https redirect targets (RFC 8555 §8.3)."""
    ca = LocalCa.create(local_name("challenge test server"), now=now, lifetime=timedelta(days=365))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="acme-ca-https01-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(cert_pem(ca.cert))
        key.write_bytes(key_pem(ca.key))
        context.load_cert_chain(cert, key)

    def remember_sni(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name:
            _SERVER_NAMES[ssl_object] = name

    context.sni_callback = remember_sni
    return context


def make_http01_app(store: ChallengeStore) -> web.Application:
    """Every method on every path reaches one handler, as in Pebble, so all of it is recorded."""
    app = web.Application()
    app[STORE] = store
    app.router.add_route("*", "/{tail:.*}", _respond)
    return app
