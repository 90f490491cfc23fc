"""One canonical log line per request, and the request id every event of it carries.

The id is also sent to the client as ``X-Request-ID`` so a support ticket can quote it.
"""

from __future__ import annotations

import secrets
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

REQUEST_ID_HEADER = "X-Request-ID"
log = structlog.get_logger(component="acme_ca.wfe.request")


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    request_id = secrets.token_hex(8)
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = request_id
    fields = {
        "method": request.method,
        "path": request.path,
        "status": response.status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "user_agent": request.headers.get("User-Agent", ""),
    }
    problem_type = response.headers.get("X-Problem-Type")
    if problem_type:
        fields["problem"] = problem_type
        del response.headers["X-Problem-Type"]
    log.info("request.done", **fields)
    return response


def setup_request_log(app: web.Application) -> None:
    app.middlewares.append(request_log_middleware)
