"""The management API: pebble-challtestsrv's paths and JSON bodies, plus the CA's roots.

Tests and ACME clients written against Pebble drive this server unchanged: every verb is a
POST with a JSON object, answered 200 with an empty body, or 400 when the body cannot be
used. Field names match case-insensitively because Go's ``encoding/json`` does, and clients
rely on it (``targetURL``, ``Host``). Our additions: ``flags`` on CAA policies,
``/set-nxdomain`` and ``/clear-nxdomain``, and Pebble's own management endpoints
(``GET /roots/<n>``, ``/intermediates/<n>``, their keys and ``/cert-status-by-serial/``,
:mod:`acme_ca.testsrv.ca_endpoints`), which Pebble serves on its own management port.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping

import structlog
from aiohttp import web

from acme_ca.testsrv.ca_endpoints import CaEndpoints, PemProvider, add_ca_routes, static_pem
from acme_ca.testsrv.store import CaaPolicy, ChallengeStore, HistoryType, InvalidRecord

__all__ = ["PemProvider", "make_management_app", "static_pem"]

MAX_BODY_BYTES = 64 * 1024
"""Management bodies are a host and a few values; anything bigger is a mistake."""

STORE = web.AppKey("testsrv_management_store", ChallengeStore)

_HISTORY_TYPES: dict[str, HistoryType | None] = {"dns": "dns", "http": "http", "tlsalpn": None}
"""Pebble's clear-request-history types; we serve no TLS-ALPN, so clearing it is a no-op."""

_log = structlog.get_logger(component=__name__)
_OK = 200


class _Body:
    """A JSON object read the way Go's ``json.Unmarshal`` fills a struct Pebble declares."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self._data = data

    def _get(self, name: str) -> object:
        if name in self._data:
            return self._data[name]
        folded = name.casefold()
        for key, value in self._data.items():
            if key.casefold() == folded:
                return value
        return None

    def text(self, name: str, *, required: bool = True, empty: str | None = None) -> str:
        """A string member; missing or null reads as "", which required members reject with
        pebble-challtestsrv's bare 400 (or its ``empty`` message where it sends one)."""
        value = self._get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise web.HTTPBadRequest(text=f"json: cannot unmarshal {name} into a string\n")
        if required and not value:
            raise _missing(empty)
        return value

    def texts(self, name: str) -> list[str]:
        value = self._get(name)
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise web.HTTPBadRequest(text=f"json: cannot unmarshal {name} into a list of strings\n")
        if not value:
            raise _missing(None)
        return value

    def policies(self) -> list[CaaPolicy]:
        value = self._get("policies")
        if value is None:
            value = []
        if not isinstance(value, list):
            raise web.HTTPBadRequest(text="json: cannot unmarshal policies into a list\n")
        if not value:
            raise _missing(None)
        policies = []
        for item in value:
            if not isinstance(item, dict):
                raise web.HTTPBadRequest(text="each policy must be an object\n")
            member = _Body(item)
            flags = member._get("flags")
            if flags is None:
                flags = 0
            if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags <= 255:
                raise web.HTTPBadRequest(text="flags must be an integer from 0 to 255\n")
            policies.append(
                CaaPolicy(
                    tag=member.text("tag"), value=member.text("value", required=False), flags=flags
                )
            )
        return policies


class _EmptyMember(Exception):
    """A required member is missing or empty: pebble-challtestsrv's bare ``WriteHeader(400)``
    (no body, no Content-Type), answered by the middleware."""


def _missing(message: str | None) -> Exception:
    """The bare 400, or ``http.Error``'s text where pebble-challtestsrv sends one (the
    history verbs)."""
    if message is None:
        return _EmptyMember()
    return web.HTTPBadRequest(text=message + "\n")


async def _body(request: web.Request) -> _Body:
    raw = await request.read()
    if not raw.strip():
        raise web.HTTPBadRequest(text="Expected JSON POST body, was empty\n")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}\n") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object\n")
    return _Body(data)


@web.middleware
async def _invalid_records(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The store has the last word on values (IP versions, DNS names, CAA tags): 400."""
    try:
        return await handler(request)
    except _EmptyMember:
        return web.Response(status=400)
    except InvalidRecord as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from exc


def _done(event: str, **fields: object) -> web.Response:
    _log.info(event, **fields)
    return web.Response(status=_OK)


# DNS


async def _set_default_ipv4(request: web.Request) -> web.Response:
    ip = (await _body(request)).text("ip", required=False)
    request.app[STORE].set_default_ipv4(ip)
    return _done("testsrv.default_ipv4.set", ip=ip)


async def _set_default_ipv6(request: web.Request) -> web.Response:
    ip = (await _body(request)).text("ip", required=False)
    request.app[STORE].set_default_ipv6(ip)
    return _done("testsrv.default_ipv6.set", ip=ip)


async def _add_a(request: web.Request) -> web.Response:
    body = await _body(request)
    host, addresses = body.text("host"), body.texts("addresses")
    request.app[STORE].add_a(host, addresses)
    return _done("testsrv.a.added", host=host, addresses=addresses)


async def _clear_a(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].clear_a(host)
    return _done("testsrv.a.cleared", host=host)


async def _add_aaaa(request: web.Request) -> web.Response:
    body = await _body(request)
    host, addresses = body.text("host"), body.texts("addresses")
    request.app[STORE].add_aaaa(host, addresses)
    return _done("testsrv.aaaa.added", host=host, addresses=addresses)


async def _clear_aaaa(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].clear_aaaa(host)
    return _done("testsrv.aaaa.cleared", host=host)


async def _add_caa(request: web.Request) -> web.Response:
    body = await _body(request)
    host, policies = body.text("host"), body.policies()
    request.app[STORE].add_caa(host, policies)
    return _done("testsrv.caa.added", host=host, policies=[str(p) for p in policies])


async def _clear_caa(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].clear_caa(host)
    return _done("testsrv.caa.cleared", host=host)


async def _set_cname(request: web.Request) -> web.Response:
    body = await _body(request)
    host, target = body.text("host"), body.text("target")
    request.app[STORE].set_cname(host, target)
    return _done("testsrv.cname.set", host=host, target=target)


async def _clear_cname(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].clear_cname(host)
    return _done("testsrv.cname.cleared", host=host)


async def _set_txt(request: web.Request) -> web.Response:
    body = await _body(request)
    host, value = body.text("host"), body.text("value")
    request.app[STORE].set_txt(host, value)
    return _done("testsrv.txt.set", host=host, value=value)


async def _clear_txt(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].clear_txt(host)
    return _done("testsrv.txt.cleared", host=host)


async def _set_servfail(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].set_servfail(host)
    return _done("testsrv.servfail.set", host=host)


async def _clear_servfail(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].clear_servfail(host)
    return _done("testsrv.servfail.cleared", host=host)


async def _set_nxdomain(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].set_nxdomain(host)
    return _done("testsrv.nxdomain.set", host=host)


async def _clear_nxdomain(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].clear_nxdomain(host)
    return _done("testsrv.nxdomain.cleared", host=host)


# http-01


async def _add_http01(request: web.Request) -> web.Response:
    body = await _body(request)
    token, content = body.text("token"), body.text("content")
    request.app[STORE].add_http01(token, content)
    return _done("testsrv.http01.added", token=token)


async def _del_http01(request: web.Request) -> web.Response:
    token = (await _body(request)).text("token")
    request.app[STORE].del_http01(token)
    return _done("testsrv.http01.deleted", token=token)


async def _add_redirect(request: web.Request) -> web.Response:
    body = await _body(request)
    path, target = body.text("path"), body.text("targetURL")
    request.app[STORE].add_redirect(path, target)
    return _done("testsrv.redirect.added", path=path, target=target)


async def _del_redirect(request: web.Request) -> web.Response:
    path = (await _body(request)).text("path")
    request.app[STORE].del_redirect(path)
    return _done("testsrv.redirect.deleted", path=path)


# tls-alpn-01 (pebble-challtestsrv's /add-tlsalpn01 and /del-tlsalpn01)


async def _add_tlsalpn01(request: web.Request) -> web.Response:
    body = await _body(request)
    host, content = body.text("host"), body.text("content")
    request.app[STORE].add_tlsalpn01(host, content)
    return _done("testsrv.tlsalpn01.added", host=host)


async def _del_tlsalpn01(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host")
    request.app[STORE].del_tlsalpn01(host)
    return _done("testsrv.tlsalpn01.deleted", host=host)


_TLSALPN01_ROUTES = (
    ("/add-tlsalpn01", _add_tlsalpn01),
    ("/del-tlsalpn01", _del_tlsalpn01),
)


# Request history


_HISTORY_HOST_EMPTY = "host parameter of POST body must not be empty"


async def _http_history(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host", empty=_HISTORY_HOST_EMPTY)
    events = request.app[STORE].http_history(host)
    return web.json_response([e.to_json() for e in events])


async def _dns_history(request: web.Request) -> web.Response:
    host = (await _body(request)).text("host", empty=_HISTORY_HOST_EMPTY)
    events = request.app[STORE].dns_history(host)
    return web.json_response([e.to_json() for e in events])


async def _clear_history(request: web.Request) -> web.Response:
    body = await _body(request)
    host = body.text("host", empty="host parameter must not be empty")
    kind = body.text("type", required=False)
    if kind not in _HISTORY_TYPES:
        raise web.HTTPBadRequest(text=f"{json.dumps(kind)} event type unknown\n")
    history_type = _HISTORY_TYPES[kind]
    if history_type is not None:
        request.app[STORE].clear_history(host, history_type)
    return _done("testsrv.history.cleared", host=host, type=kind)


_DNS_ROUTES = (
    ("/set-default-ipv4", _set_default_ipv4),
    ("/set-default-ipv6", _set_default_ipv6),
    ("/add-a", _add_a),
    ("/clear-a", _clear_a),
    ("/add-aaaa", _add_aaaa),
    ("/clear-aaaa", _clear_aaaa),
    ("/add-caa", _add_caa),
    ("/clear-caa", _clear_caa),
    ("/set-cname", _set_cname),
    ("/clear-cname", _clear_cname),
    ("/set-txt", _set_txt),
    ("/clear-txt", _clear_txt),
    ("/set-servfail", _set_servfail),
    ("/clear-servfail", _clear_servfail),
    ("/set-nxdomain", _set_nxdomain),
    ("/clear-nxdomain", _clear_nxdomain),
)
_HTTP01_ROUTES = (
    ("/add-http01", _add_http01),
    ("/del-http01", _del_http01),
    ("/add-redirect", _add_redirect),
    ("/del-redirect", _del_redirect),
)
_HISTORY_ROUTES = (
    ("/http-request-history", _http_history),
    ("/dns-request-history", _dns_history),
    ("/clear-request-history", _clear_history),
)


def make_management_app(
    store: ChallengeStore,
    *,
    dns: bool = True,
    http01: bool = True,
    tlsalpn01: bool = False,
    roots: PemProvider | None = None,
    intermediates: PemProvider | None = None,
    ca: CaEndpoints | None = None,
) -> web.Application:
    """Like Pebble, a disabled challenge server's verbs are absent (404), not silently kept.
    ``ca`` (or just ``roots`` and ``intermediates``) feeds Pebble's management endpoints."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_invalid_records])
    app[STORE] = store
    routes = _HISTORY_ROUTES + (_DNS_ROUTES if dns else ()) + (_HTTP01_ROUTES if http01 else ())
    routes += _TLSALPN01_ROUTES if tlsalpn01 else ()
    for path, handler in routes:
        app.router.add_post(path, handler)
    add_ca_routes(app, ca or CaEndpoints(roots=roots, intermediates=intermediates))
    return app
