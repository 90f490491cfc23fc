"""Every ACME request stored as one compact row (``requests``), for ``acme-ca admin order``.

Runs inside ``request_log`` (which bound the request id) and outside the problem mapping
(whose ``X-Problem-Type`` it reads), so it sees the final status and problem. The account,
order, authorization, challenge and certificate ids come from the URL's path parameters
and from what the handler bound to the log context (``account_id`` by JWS verification,
``order_id`` by newOrder), so a handler that learns an id only while it runs ties the
request to it by binding it, as it already does for the log line.

The row goes to a :class:`RequestSink` (``db/requests.RequestRecorder`` in the app, wired
by ``main/app.py``), which queues it and writes batches off the response path: the cost
on the request is one tuple built and appended (docs/performance.md, "Stored requests").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from acme_ca.db.requests import RequestRow
from acme_ca.wfe.services import FRONT_END


class RequestSink(Protocol):
    def record(self, row: RequestRow) -> None: ...


REQUEST_SINK = web.AppKey("request_sink", RequestSink)
_PATH_IDS = ("account_id", "order_id", "authz_id", "challenge_id", "certificate_id")


def _ids(request: web.Request, bound: Mapping[str, object]) -> list[int | None]:
    match = request.match_info
    ids: list[int | None] = []
    for name in _PATH_IDS:
        value = bound.get(name)
        if value is None:
            value = match.get(name)  # the route's pattern allows digits only
        ids.append(None if value is None else int(str(value)))
    return ids


@web.middleware
async def request_store_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sink = request.app.get(REQUEST_SINK)
    if sink is None:
        return await handler(request)
    at = request.app[FRONT_END].clock.now()
    started = time.perf_counter()
    status = 500
    problem: str | None = None
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects the problem mapping lets through
        status = exc.status
        raise
    else:
        status = response.status
        problem = response.headers.get("X-Problem-Type")
        return response
    finally:
        bound = structlog.contextvars.get_contextvars()
        sink.record(
            RequestRow(
                at,
                request.method,
                request.path,
                status,
                problem,
                round((time.perf_counter() - started) * 1000, 2),
                request.headers.get("User-Agent", "")[:256],
                request.remote,
                str(bound.get("request_id", "")),
                *_ids(request, bound),
            )
        )


def setup_request_store(app: web.Application) -> None:
    app.middlewares.append(request_store_middleware)
