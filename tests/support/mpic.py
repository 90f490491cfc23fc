"""MPIC validator test doubles: a fake remote transport and canned perspective answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from acme_ca.clock import FixedClock
from acme_ca.va.mpic import (
    MpicValidator,
    remote_reply,
)
from acme_ca.va.perspectives import MpicSetup, Perspective
from acme_ca.va.records import ChallengeRequest, CheckResult, ValidationRecord

KEY_AUTH = "tok.thumb"


DEC_2026 = datetime(2026, 12, 20, tzinfo=UTC)


PERSPECTIVES = (
    Perspective("a1", "ARIN", "https://a1.example"),
    Perspective("a2", "ARIN", "https://a2.example"),
    Perspective("a3", "ARIN", "https://a3.example"),
    Perspective("a4", "ARIN", "https://a4.example"),
    Perspective("r1", "RIPE NCC", "https://r1.example"),
)


Behaviour = Callable[[Perspective, dict[str, Any]], Awaitable[Any]]


def record(perspective: str = "primary") -> ValidationRecord:
    return ValidationRecord(
        method="dns-01",
        hostname="example.com",
        query="_acme-challenge.example.com TXT",
        at=DEC_2026,
        perspective=perspective,
    )


class FakeLocal:
    always_valid = False

    def __init__(self, result: CheckResult) -> None:
        self.result = result
        self.closed = False

    async def validate(self, *args: object) -> CheckResult:
        return self.result

    async def recheck_caa(self, *args: object) -> CheckResult:
        return self.result

    async def aclose(self) -> None:
        self.closed = True


def agree(observed: str = KEY_AUTH, **overrides: Any) -> Behaviour:
    async def reply(p: Perspective, request: dict[str, Any]) -> Any:
        body = remote_reply(
            p.id, p.rir, request["nonce"], CheckResult.success((record(p.id),), observed)
        )
        body.update(overrides)
        return body

    return reply


def hang(cancelled: list[str]) -> Behaviour:
    async def reply(p: Perspective, request: dict[str, Any]) -> Any:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(p.id)
            raise

    return reply


class FakeTransport:
    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    async def check(self, perspective: Perspective, request: dict[str, Any]) -> Any:
        self.requests.append((perspective.id, request))
        behaviour = self.behaviours.get(perspective.id, agree())
        return await behaviour(perspective, request)

    async def aclose(self) -> None:
        self.closed = True


def validator(
    transport: FakeTransport,
    *,
    local: CheckResult | None = None,
    perspectives: tuple[Perspective, ...] = PERSPECTIVES,
    strict: bool = True,
    timeout: float = 5.0,
    grace: float = 0.25,
    at: datetime = DEC_2026,
) -> MpicValidator:
    setup = MpicSetup(
        perspectives=perspectives,
        strict=strict,
        source="test",
        timeout_seconds=timeout,
        grace_seconds=grace,
    )
    primary = local or CheckResult.success((record(),), KEY_AUTH)
    return MpicValidator(FakeLocal(primary), setup, transport, FixedClock(at))  # type: ignore[arg-type]


async def validate(v: MpicValidator) -> CheckResult:
    return await v.validate(
        ChallengeRequest("dns-01", "example.com", False, "tok", KEY_AUTH, "acct")
    )
