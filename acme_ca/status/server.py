"""The plain-HTTP status listener (``status_listen``): CRLs, OCSP and CA certificates.

It holds no key: CRLs and OCSP responses are signed by the signing workers and read here from
the database, CA certificates come from issuers.toml (:func:`read_issuers_file`, which opens
no key).  Any number of ``acme-ca serve`` processes can serve the same repository.

=====================================  ===================================================
``GET /crl/<name>.crl``                the latest CRL of an issuing CA or root,
                                       ``application/pkix-crl``
``GET /issuer/<name>.cer``             a CA certificate, DER, ``application/pkix-cert``
``POST /ocsp/<issuer>``                OCSP, body ``application/ocsp-request``
``GET /ocsp/<issuer>/<base64 DER>``    OCSP, url-encoded base64 request (RFC 6960 A.1)
=====================================  ===================================================

The paths of the URLs configured in issuers.toml (``crl_url``, ``ocsp_url``,
``ca_issuers_url``) are served too, so a hand-written issuers.toml with other paths works.
Signed OCSP responses carry the RFC 5019 §6 caching headers; CRLs carry the same validators.
Plain HTTP on purpose: BR 7.1.2.7.7 / 7.1.2.11.2 want http:// status URLs, and responses are
signed.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import structlog
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca import metrics
from acme_ca.ca.issuers_file import IssuersFile, read_issuers_file
from acme_ca.clock import Clock, SystemClock
from acme_ca.db.status import StatusRepository
from acme_ca.status.ocsp import (
    MALFORMED_REQUEST,
    MAX_REQUEST_BYTES,
    OcspAnswer,
    OcspResponder,
    decode_get_request,
)

log = structlog.get_logger(component="acme_ca.status.server")

CRL_CONTENT_TYPE: Final = "application/pkix-crl"
CERT_CONTENT_TYPE: Final = "application/pkix-cert"
OCSP_RESPONSE_TYPE: Final = "application/ocsp-response"
#: Longest a cache may keep a signed OCSP response (capped by its nextUpdate): a revocation
#: reaches relying parties behind caches within the hour (CP 4.9.9, RFC 5019 §6.2).
OCSP_MAX_AGE_SECONDS: Final = 3600
#: The same for CRLs, which the CP wants republished immediately after a revocation.
CRL_MAX_AGE_SECONDS: Final = 300
CERT_MAX_AGE_SECONDS: Final = 86400
#: Database connections of the status listener.
POOL_SIZE: Final = 4


@dataclass(frozen=True)
class StatusRoutes:
    """Which path serves what; built once from issuers.toml."""

    crls: Mapping[str, str]  #: path → CRL issuer name
    certificates: Mapping[str, bytes]  #: path → DER
    ocsp: Mapping[str, str]  #: path (without the GET request part) → issuer name

    @classmethod
    def from_issuers_file(cls, parsed: IssuersFile) -> StatusRoutes:
        crls: dict[str, str] = {}
        certificates: dict[str, bytes] = {}
        ocsp: dict[str, str] = {}
        for name, issuer in parsed.issuers.items():
            der = issuer.certificate.public_bytes(Encoding.DER)
            for path in (f"/crl/{name}.crl", _path(issuer.crl_url)):
                _put(crls, path, name)
            for path in (f"/issuer/{name}.cer", _path(issuer.ca_issuers_url)):
                _put(certificates, path, der)
            for path in (f"/ocsp/{name}", _path(issuer.ocsp_url)):
                _put(ocsp, path.rstrip("/"), name)
        for name, root in parsed.roots.items():
            _put(certificates, f"/issuer/{name}.cer", root.certificate.public_bytes(Encoding.DER))
            for path in (f"/crl/{name}.crl", _path(root.crl_url)):
                _put(crls, path, name)
        return cls(crls, certificates, ocsp)


_V = TypeVar("_V")


def _put(table: dict[str, _V], path: str, value: _V) -> None:
    """Route ``path`` to ``value``; the first of two claims on one path wins, loudly."""
    if path and table.setdefault(path, value) != value:
        log.warning("status.path_conflict", path=path)


def _path(url: str | None) -> str:
    return urllib.parse.urlsplit(url).path if url else ""


@dataclass(frozen=True)
class StatusState:
    repository: StatusRepository
    responder: OcspResponder
    routes: StatusRoutes
    clock: Clock


STATUS_STATE: Final = web.AppKey("status_state", StatusState)


def create_status_app(pki_path: Path, dsn: str, *, clock: Clock | None = None) -> web.Application:
    """The status listener's application for the hierarchy of ``pki_path``/issuers.toml, on the
    database at ``dsn``."""
    clock = clock or SystemClock()
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)

    async def state_ctx(app: web.Application) -> AsyncIterator[None]:
        parsed = await asyncio.to_thread(read_issuers_file, pki_path, now=clock.now())
        repository = await StatusRepository.open(dsn, max_size=POOL_SIZE)
        unregister = metrics.register_pool("status", repository.pool)
        try:
            app[STATUS_STATE] = StatusState(
                repository=repository,
                responder=OcspResponder(
                    repository,
                    {name: entry.certificate for name, entry in parsed.issuers.items()},
                    clock,
                ),
                routes=StatusRoutes.from_issuers_file(parsed),
                clock=clock,
            )
            yield
        finally:
            unregister()
            await repository.close()

    app.cleanup_ctx.append(state_ctx)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def dispatch(request: web.Request) -> web.StreamResponse:
    state = request.app[STATUS_STATE]
    routes = state.routes
    path = request.path
    if request.method in ("GET", "HEAD"):
        if path in routes.crls:
            return await _crl(request, state, routes.crls[path])
        if path in routes.certificates:
            return _certificate(request, routes.certificates[path])
        raw = request.rel_url.raw_path
        for prefix, issuer in routes.ocsp.items():
            if raw.startswith(prefix + "/"):
                encoded = raw[len(prefix) + 1 :]
                return await _ocsp_get(request, state, issuer, encoded)
    elif request.method == "POST":
        post_issuer = routes.ocsp.get(path.rstrip("/"))
        if post_issuer is not None:
            body = await request.read()
            answer = await state.responder.answer(body)
            return await _ocsp_reply(request, state, post_issuer, answer)
    else:
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "POST"])
    raise web.HTTPNotFound(text="not found\n")


# --------------------------------------------------------------------------- responses


def http_date(at: datetime) -> str:
    return email.utils.format_datetime(at.astimezone(UTC), usegmt=True)


def _etag(der: bytes) -> str:
    return '"' + hashlib.sha256(der).hexdigest() + '"'


def _max_age(until: datetime, now: datetime, cap: int) -> int:
    return max(0, min(int((until - now).total_seconds()), cap))


def _not_modified(request: web.Request, etag: str) -> bool:
    wanted = request.headers.get("If-None-Match")
    if wanted is None:
        return False
    return any(tag.strip() in (etag, "*") for tag in wanted.split(","))


def _reply(
    request: web.Request, body: bytes, content_type: str, headers: dict[str, str]
) -> web.Response:
    etag = headers.get("ETag")
    if request.method in ("GET", "HEAD") and etag is not None and _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


async def _crl(request: web.Request, state: StatusState, issuer: str) -> web.Response:
    crl = await state.repository.latest_crl(issuer)
    if crl is None:
        raise web.HTTPNotFound(text=f"no CRL published for {issuer} yet\n")
    now = state.clock.now()
    headers = {
        "Last-Modified": http_date(crl.this_update),
        "ETag": _etag(crl.der),
        "Expires": http_date(crl.next_update),
        "Cache-Control": f"max-age={_max_age(crl.next_update, now, CRL_MAX_AGE_SECONDS)}, "
        "public, no-transform, must-revalidate",
    }
    return _reply(request, crl.der, CRL_CONTENT_TYPE, headers)


def _certificate(request: web.Request, der: bytes) -> web.Response:
    headers = {"ETag": _etag(der), "Cache-Control": f"max-age={CERT_MAX_AGE_SECONDS}, public"}
    return _reply(request, der, CERT_CONTENT_TYPE, headers)


async def _ocsp_get(
    request: web.Request, state: StatusState, issuer: str, encoded: str
) -> web.Response:
    try:
        der = decode_get_request(encoded)
    except ValueError:
        der = b""  # answered as malformedRequest
    return await _ocsp_reply(request, state, issuer, await state.responder.answer(der))


async def _ocsp_reply(
    request: web.Request, state: StatusState, path_issuer: str, answer: OcspAnswer
) -> web.Response:
    record = answer.record
    log.debug(
        "ocsp.request",
        method=request.method,
        path_issuer=path_issuer,
        issuer=record.issuer if record else None,
        serial=record.serial if record else None,
        status=record.status if record else None,
        error=answer.why,
    )
    if record is None:
        metrics.observe_ocsp("malformed" if answer.der == MALFORMED_REQUEST else "unauthorized")
        # Unsigned error statuses: never cached, so a response produced seconds later is seen.
        headers = {"Cache-Control": "no-cache, no-store, max-age=0"}
        return web.Response(body=answer.der, content_type=OCSP_RESPONSE_TYPE, headers=headers)
    now = state.clock.now()
    metrics.observe_ocsp(record.status, record.issuer, (now - record.this_update).total_seconds())
    headers = {
        "Last-Modified": http_date(record.produced_at),
        "ETag": _etag(record.der),
        "Expires": http_date(record.next_update),
        "Cache-Control": f"max-age={_max_age(record.next_update, now, OCSP_MAX_AGE_SECONDS)}, "
        "public, no-transform, must-revalidate",
    }
    return _reply(request, record.der, OCSP_RESPONSE_TYPE, headers)
