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


_Handler = Callable[[web.Request], Awaitable[web.Response]]


def _one_member_verb(
    member: str, apply: Callable[[ChallengeStore, str], None], event: str, *, required: bool = True
) -> _Handler:
    """The verbs that take one string member (most clear/del verbs, servfail, nxdomain)."""

    async def handler(request: web.Request) -> web.Response:
        value = (await _body(request)).text(member, required=required)
        apply(request.app[STORE], value)
        return _done(event, **{member: value})

    return handler


def _addresses_verb(
    apply: Callable[[ChallengeStore, str, list[str]], None], event: str
) -> _Handler:
    """/add-a and /add-aaaa: a host and its addresses."""

    async def handler(request: web.Request) -> web.Response:
        body = await _body(request)
        host, addresses = body.text("host"), body.texts("addresses")
        apply(request.app[STORE], host, addresses)
        return _done(event, host=host, addresses=addresses)

    return handler


def _two_member_verb(
    key: str,
    member: str,
    apply: Callable[[ChallengeStore, str, str], None],
    event: str,
    *,
    logged_as: str | None,
) -> _Handler:
    """The verbs that take two string members (a key and its value); ``logged_as`` names the
    value in the event, or None where it is challenge content and stays out of the log."""

    async def handler(request: web.Request) -> web.Response:
        body = await _body(request)
        key_value, value = body.text(key), body.text(member)
        apply(request.app[STORE], key_value, value)
        fields: dict[str, object] = {key: key_value}
        if logged_as is not None:
            fields[logged_as] = value
        return _done(event, **fields)

    return handler


# DNS


async def _add_caa(request: web.Request) -> web.Response:
    body = await _body(request)
    host, policies = body.text("host"), body.policies()
    request.app[STORE].add_caa(host, policies)
    return _done("testsrv.caa.added", host=host, policies=[str(p) for p in policies])


# tls-alpn-01 (pebble-challtestsrv's /add-tlsalpn01 and /del-tlsalpn01)


_TLSALPN01_ROUTES = (
    (
        "/add-tlsalpn01",
        _two_member_verb(
            "host",
            "content",
            ChallengeStore.add_tlsalpn01,
            "testsrv.tlsalpn01.added",
            logged_as=None,
        ),
    ),
    (
        "/del-tlsalpn01",
        _one_member_verb("host", ChallengeStore.del_tlsalpn01, "testsrv.tlsalpn01.deleted"),
    ),
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
    (
        "/set-default-ipv4",
        _one_member_verb(
            "ip", ChallengeStore.set_default_ipv4, "testsrv.default_ipv4.set", required=False
        ),
    ),
    (
        "/set-default-ipv6",
        _one_member_verb(
            "ip", ChallengeStore.set_default_ipv6, "testsrv.default_ipv6.set", required=False
        ),
    ),
    ("/add-a", _addresses_verb(ChallengeStore.add_a, "testsrv.a.added")),
    ("/clear-a", _one_member_verb("host", ChallengeStore.clear_a, "testsrv.a.cleared")),
    ("/add-aaaa", _addresses_verb(ChallengeStore.add_aaaa, "testsrv.aaaa.added")),
    ("/clear-aaaa", _one_member_verb("host", ChallengeStore.clear_aaaa, "testsrv.aaaa.cleared")),
    ("/add-caa", _add_caa),
    ("/clear-caa", _one_member_verb("host", ChallengeStore.clear_caa, "testsrv.caa.cleared")),
    (
        "/set-cname",
        _two_member_verb(
            "host", "target", ChallengeStore.set_cname, "testsrv.cname.set", logged_as="target"
        ),
    ),
    ("/clear-cname", _one_member_verb("host", ChallengeStore.clear_cname, "testsrv.cname.cleared")),
    (
        "/set-txt",
        _two_member_verb(
            "host", "value", ChallengeStore.set_txt, "testsrv.txt.set", logged_as="value"
        ),
    ),
    ("/clear-txt", _one_member_verb("host", ChallengeStore.clear_txt, "testsrv.txt.cleared")),
    (
        "/set-servfail",
        _one_member_verb("host", ChallengeStore.set_servfail, "testsrv.servfail.set"),
    ),
    (
        "/clear-servfail",
        _one_member_verb("host", ChallengeStore.clear_servfail, "testsrv.servfail.cleared"),
    ),
    (
        "/set-nxdomain",
        _one_member_verb("host", ChallengeStore.set_nxdomain, "testsrv.nxdomain.set"),
    ),
    (
        "/clear-nxdomain",
        _one_member_verb("host", ChallengeStore.clear_nxdomain, "testsrv.nxdomain.cleared"),
    ),
)
_HTTP01_ROUTES = (
    (
        "/add-http01",
        _two_member_verb(
            "token", "content", ChallengeStore.add_http01, "testsrv.http01.added", logged_as=None
        ),
    ),
    ("/del-http01", _one_member_verb("token", ChallengeStore.del_http01, "testsrv.http01.deleted")),
    (
        "/add-redirect",
        _two_member_verb(
            "path",
            "targetURL",
            ChallengeStore.add_redirect,
            "testsrv.redirect.added",
            logged_as="target",
        ),
    ),
    (
        "/del-redirect",
        _one_member_verb("path", ChallengeStore.del_redirect, "testsrv.redirect.deleted"),
    ),
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
