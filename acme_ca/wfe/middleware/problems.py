"""The single mapping from failures to RFC 7807 problem documents.

``AcmeError`` carries its own problem; aiohttp's HTTP errors (unknown path, wrong method,
body too large) become ``malformed`` with their status; anything else is logged with its
traceback and answered with a generic ``serverInternal`` that reveals nothing.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError, Problem
from acme_ca.wfe.responses import problem_response

log = structlog.get_logger(component="acme_ca.wfe.problems")


def _http_problem(exc: web.HTTPException) -> Problem:
    if exc.status == 404:
        return problems.not_found("no such resource")
    if exc.status == 405:
        return problems.method_not_allowed(
            f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
        )
    if exc.status == 413:
        return problems.payload_too_large("request body is too large")
    if exc.status == 415:
        return problems.unsupported_media_type(exc.text or "unsupported media type")
    return problems.Problem(
        type=problems.ACME_ERROR_NS + "malformed", detail=exc.reason, status=exc.status
    )


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AcmeError as exc:
        response = problem_response(exc.problem, exc.headers)
        problem = exc.problem
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        problem = _http_problem(exc)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = problem_response(problem, headers)
    except Exception:
        log.exception("request.internal_error")
        problem = problems.server_internal("the server hit an internal error; it has been logged")
        response = problem_response(problem)
    response.headers["X-Problem-Type"] = problem.short_type
    return response


def setup_problems(app: web.Application) -> None:
    app.middlewares.append(problems_middleware)
