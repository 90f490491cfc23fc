"""What every ACME error reply must be (RFC 8555 §6.7, RFC 7807): checked in one place."""

from __future__ import annotations

from typing import Any

from acme_ca.acme.problems import Problem
from acme_ca.va.records import CheckResult
from tests.support.jws import Reply

ERR = "urn:ietf:params:acme:error:"
"""The RFC 8555 §6.7 namespace of ACME problem types."""


def assert_problem(reply: Reply, status: int, kind: str) -> dict[str, Any]:
    """``reply`` is the problem document ``ERR + kind`` with HTTP ``status``, served as
    ``application/problem+json`` with a fresh nonce (ACME-NONCE-3); returns the document."""
    assert reply.status == status, reply.body
    assert reply.content_type == "application/problem+json", reply.content_type
    assert reply.body["type"] == ERR + kind, reply.body
    assert reply.body.get("status") == status, reply.body
    assert reply.headers.get("Replay-Nonce"), "errors carry a fresh nonce (ACME-NONCE-3)"
    return reply.body  # type: ignore[no-any-return]


def check_problem(result: CheckResult, kind: str) -> Problem:
    """``result`` (a validation method's or CAA's check) failed with the problem
    ``ERR + kind``; returns the problem for the test's assertions on its detail."""
    assert result.problem is not None, result
    assert result.problem.type == ERR + kind, result.problem
    return result.problem
