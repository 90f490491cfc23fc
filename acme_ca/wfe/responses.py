"""Building ACME JSON responses with their protocol headers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from acme_ca.acme.problems import PROBLEM_CONTENT_TYPE, Problem


def acme_json(
    body: Any,
    *,
    status: int = 200,
    location: str | None = None,
    links: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    response = web.json_response(body, status=status, dumps=_dumps)
    if location:
        response.headers["Location"] = location
    for link in links or ():
        response.headers.add("Link", link)
    for name, value in (headers or {}).items():
        response.headers.add(name, value)
    return response


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(
        status=problem.status, text=_dumps(problem.to_json()), content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in (headers or {}).items():
        response.headers.add(name, value)
    return response


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
