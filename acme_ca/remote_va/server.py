"""``acme-ca remote-va``: one remote network perspective (BR 3.2.2.9).

An HTTPS server with mutual TLS: only a client whose certificate chains to
``remote_va_client_ca`` and carries clientAuth (the primary's, from ``acme-ca mpic-certs``)
completes the handshake.  It has one endpoint, ``POST /acme-ca/mpic/v1/check``, which runs
the same checks as the primary (every method of :mod:`acme_ca.va.registry` and
:class:`CaaChecker`) through this perspective's own resolver (``dns_resolver``) and answers
the :class:`CheckResult` JSON with its perspective id, RIR and the request's nonce.  Every
request builds its checks afresh (a new DNS client), so no answer is reused between requests;
only the idle TCP connections to the resolver are (:func:`remote_authority_factory`).

The process around this app (:mod:`acme_ca.main.remote_va`) listens on ``remote_va_listen``,
or -- systemd socket activation -- on the listening socket passed as fd 3 with
``LISTEN_FDS=1`` (and ``LISTEN_PID``, if set, equal to our pid).
The integration tests use the latter to run a remote inside its own network namespace while
its listener lives in the primary's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import structlog
from aiohttp import web

from acme_ca import metrics
from acme_ca.remote_va.settings import RemoteIdentity
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.mpic import CHECK_PATH, RemoteRequest, remote_reply, run_remote_check
from acme_ca.va.records import FormatError

MAX_REQUEST_BYTES: Final = 16 * 1024

log = structlog.get_logger(component="acme_ca.remote_va")


IDENTITY = web.AppKey("remote_va_identity", RemoteIdentity)
CheckFactory = Callable[[], ValidationAuthority]
CHECKS: web.AppKey[CheckFactory] = web.AppKey("remote_va_checks")


def _peer_name(request: web.Request) -> str | None:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


async def _check(request: web.Request) -> web.Response:
    identity = request.app[IDENTITY]
    started = time.monotonic()
    try:
        body = await request.json()
        check = RemoteRequest.from_json(body)
    except (ValueError, FormatError) as exc:
        log.warning("remote_va.bad_request", error=str(exc), client=_peer_name(request))
        return web.json_response({"error": f"bad request: {exc}"}, status=400)
    authority = request.app[CHECKS]()  # fresh per request: nothing learnt is reused
    try:
        result = await run_remote_check(authority, check)
    finally:
        await authority.aclose()
    metrics.observe_validation(
        check.kind, identity.perspective_id, check.method, result, time.monotonic() - started
    )
    log.info(
        "remote_va.checked",
        perspective=identity.perspective_id,
        rir=identity.rir,
        kind=check.kind,
        method=check.method,
        identifier=check.identifier,
        nonce=check.nonce,
        ok=result.ok,
        observed=result.observed,
        problem=result.problem.short_type if result.problem is not None else None,
        client=_peer_name(request),
        elapsed_ms=round((time.monotonic() - started) * 1000),
    )
    return web.json_response(
        remote_reply(identity.perspective_id, identity.rir, check.nonce, result)
    )


def make_remote_va_app(
    identity: RemoteIdentity, checks: Callable[[], ValidationAuthority]
) -> web.Application:
    """The remote VA's application; ``checks`` builds a fresh authority per request."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[IDENTITY] = identity
    app[CHECKS] = checks
    app.router.add_post(CHECK_PATH, _check)
    return app
