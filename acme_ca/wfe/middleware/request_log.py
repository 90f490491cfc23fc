"""One canonical log line per request, and the request id every event of it carries.

The id is also sent to the client as ``X-Request-ID`` so a support ticket can quote it.  The
same place records the request's metrics (:mod:`acme_ca.metrics`): latency and count by
endpoint -- the route's template, never the path, so ids do not multiply the series --,
method and status, and the problem type sent.
"""

from __future__ import annotations

import secrets
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from acme_ca import metrics

REQUEST_ID_HEADER = "X-Request-ID"
log = structlog.get_logger(component="acme_ca.wfe.request")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def endpoint_of(request: web.Request) -> str:
    """The matched route's template (``/acme/order/{id}``), or ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    request_id = secrets.token_hex(8)
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    endpoint = endpoint_of(request)
    in_flight = metrics.IN_FLIGHT_REQUESTS.labels(endpoint)
    in_flight.inc()
    try:
        response = await handler(request)
    finally:
        in_flight.dec()
    seconds = time.perf_counter() - started
    response.headers[REQUEST_ID_HEADER] = request_id
    fields = {
        "method": request.method,
        "path": request.path,
        "status": response.status,
        "duration_ms": round(seconds * 1000, 2),
        "user_agent": request.headers.get("User-Agent", ""),
    }
    problem_type = response.headers.get("X-Problem-Type")
    if problem_type:
        fields["problem"] = problem_type
        del response.headers["X-Problem-Type"]
    method = request.method if request.method in _METHODS else "other"
    metrics.observe_request(endpoint, method, response.status, seconds, problem_type)
    log.info("request.done", **fields)
    return response


def setup_request_log(app: web.Application) -> None:
    app.middlewares.append(request_log_middleware)
