"""The primary's corroboration (``va/mpic.py``) with a fake local VA and a fake transport: who
is asked, when waiting stops, how each reply is judged and what is recorded."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from acme_ca.acme import problems
from acme_ca.va.mpic import (
    NOT_AWAITED,
    MpicValidator,
    RemoteRequest,
    RemoteUnavailable,
    remote_reply,
)
from acme_ca.va.perspectives import Perspective
from acme_ca.va.records import ChallengeRequest, CheckResult, ValidationRecord
from tests.support.mpic import (
    KEY_AUTH,
    PERSPECTIVES,
    Behaviour,
    FakeTransport,
    agree,
    hang,
    record,
    validate,
    validator,
)


def fail(problem: Any) -> Behaviour:
    async def reply(p: Perspective, request: dict[str, Any]) -> Any:
        return remote_reply(p.id, p.rir, request["nonce"], CheckResult.failure(problem, ()))

    return reply


def unavailable(reason: str) -> Behaviour:
    async def reply(p: Perspective, request: dict[str, Any]) -> Any:
        raise RemoteUnavailable(reason)

    return reply


def quorum(result: CheckResult) -> str | None:
    return result.records[-1].quorum


def summaries(result: CheckResult) -> dict[str, ValidationRecord]:
    return {
        r.perspective: r for r in result.records if r.corroborated is not None and r.quorum is None
    }


async def test_primary_failure_asks_no_remote() -> None:
    transport = FakeTransport({})
    failed = CheckResult.failure(problems.incorrect_response("wrong TXT"), (record(),))
    result = await validate(validator(transport, local=failed))
    assert result is failed
    assert transport.requests == []


async def test_all_agree() -> None:
    transport = FakeTransport({})
    result = await validate(validator(transport))
    assert result.ok and quorum(result) == "5/5"
    assert {pid for pid, _ in transport.requests} == {p.id for p in PERSPECTIVES}
    assert all(r.corroborated for r in summaries(result).values())
    # each remote's own records are kept, labelled with its id and RIR
    own = [r for r in result.records if r.query.startswith("_acme-challenge") and r.rir]
    assert {(r.perspective, r.rir) for r in own} == {(p.id, p.rir) for p in PERSPECTIVES}


@pytest.mark.parametrize(
    ("behaviours", "ok", "quorum_text", "problem_type"),
    [
        ({"a1": agree("other")}, True, "4/5", None),
        ({"a1": fail(problems.caa("CAA forbids"))}, True, "4/5", None),
        ({"a1": agree("x"), "a2": agree("y")}, False, "3/5", "unauthorized"),
        ({"a1": fail(problems.caa("no")), "a2": fail(problems.caa("no"))}, False, "3/5", "caa"),
        ({"r1": agree("other")}, False, "4/5", "unauthorized"),
        ({"r1": unavailable("connection refused")}, False, "4/5", "unauthorized"),
        (
            {"a1": unavailable("refused"), "a2": unavailable("refused")},
            False,
            "3/5",
            "unauthorized",
        ),
    ],
    ids=[
        "one-wrong-value",
        "one-caa-denied",
        "two-wrong",
        "two-caa-denied",
        "only-arin-corroborates",
        "ripe-down",
        "two-down",
    ],
)
async def test_quorum_outcomes(
    behaviours: dict[str, Behaviour], ok: bool, quorum_text: str, problem_type: str | None
) -> None:
    result = await validate(validator(FakeTransport(behaviours)))
    assert result.ok is ok and quorum(result) == quorum_text
    if problem_type is not None:
        assert result.problem is not None
        assert result.problem.short_type == problem_type
        assert "multi-perspective corroboration failed" in result.problem.detail


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"perspective": "imposter"}, "reply names perspective 'imposter', configured 'a1'"),
        ({"rir": "APNIC"}, "reply names RIR 'APNIC', configured 'ARIN'"),
        ({"rir": "IANA"}, "reply names RIR 'IANA'"),
        ({"nonce": "old"}, "reply is not for this request"),
        ({"ok": "yes"}, "malformed reply"),
        ({"records": [{"method": "carrier-pigeon"}]}, "malformed reply"),
    ],
    ids=["wrong-id", "wrong-rir", "unknown-rir", "stale-nonce", "bad-ok", "bad-record"],
)
async def test_reply_identity_is_checked(overrides: dict[str, Any], reason: str) -> None:
    result = await validate(validator(FakeTransport({"a1": agree(**overrides)})))
    summary = summaries(result)["a1"]
    assert summary.corroborated is False
    assert summary.error is not None and reason in summary.error
    assert result.ok and quorum(result) == "4/5"


async def test_slow_remote_is_cut_off_once_decided() -> None:
    cancelled: list[str] = []
    transport = FakeTransport({"a4": hang(cancelled)})
    started = time.monotonic()
    result = await validate(validator(transport, timeout=30))
    assert time.monotonic() - started < 2
    assert cancelled == ["a4"]
    assert result.ok and quorum(result) == "4/5"
    assert summaries(result)["a4"].error == NOT_AWAITED


async def test_failure_is_decided_early_too() -> None:
    cancelled: list[str] = []
    transport = FakeTransport(
        {"a1": agree("x"), "a2": agree("y"), **{p: hang(cancelled) for p in ("a3", "a4", "r1")}}
    )
    result = await validate(validator(transport, timeout=30))
    assert not result.ok and quorum(result) == "0/5"
    assert sorted(cancelled) == ["a3", "a4", "r1"]


async def test_only_ripe_pending_keeps_waiting_until_timeout() -> None:
    cancelled: list[str] = []
    result = await validate(validator(FakeTransport({"r1": hang(cancelled)}), timeout=0.3))
    assert not result.ok and quorum(result) == "4/5"
    assert summaries(result)["r1"].error == "no reply within 0.3 s"


async def test_every_call_asks_every_remote_afresh() -> None:
    transport = FakeTransport({})
    v = validator(transport)
    await validate(v)
    await validate(v)
    assert len(transport.requests) == 2 * len(PERSPECTIVES)
    nonces = {request["nonce"] for _, request in transport.requests}
    assert len(nonces) == 2  # one per attempt, shared by that attempt's remotes


async def test_request_carries_the_primary_inputs() -> None:
    transport = FakeTransport({})
    await validate(validator(transport))
    request = RemoteRequest.from_json(transport.requests[0][1])
    assert (request.kind, request.method, request.identifier, request.key_authorization) == (
        "dcv",
        "dns-01",
        "example.com",
        KEY_AUTH,
    )


async def test_recheck_caa_is_corroborated() -> None:
    denied = fail(problems.caa("issue ;"))
    allowed = {p.id: agree("allowed") for p in PERSPECTIVES}
    transport = FakeTransport({**allowed, "a1": denied, "a2": denied})
    v = validator(transport, local=CheckResult.success((record(),), "allowed"))
    result = await v.recheck_caa("example.com", False, "acct", "dns-01")
    assert not result.ok and result.problem is not None and result.problem.short_type == "caa"
    assert quorum(result) == "3/5"
    assert transport.requests[0][1]["kind"] == "caa"
    ok = await validator(
        FakeTransport(allowed), local=CheckResult.success((), "allowed")
    ).recheck_caa("example.com", False, "acct", "dns-01")
    assert ok.ok and quorum(ok) == "5/5"


async def test_too_few_remotes_for_the_date_fails_without_asking() -> None:
    transport = FakeTransport({})
    result = await validate(validator(transport, perspectives=PERSPECTIVES[1:]))
    assert not result.ok and transport.requests == []
    assert result.problem is not None and result.problem.short_type == "serverInternal"
    assert "requires at least 5 from 2026-12-15" in result.problem.detail


async def test_advisory_phase_records_but_does_not_block() -> None:
    transport = FakeTransport({"a1": agree("x"), "a2": agree("y")})
    v = validator(transport, perspectives=PERSPECTIVES[:2], at=datetime(2025, 5, 1, tzinfo=UTC))
    result = await validate(v)
    assert result.ok and quorum(result) == "0/2"
    assert "advisory" in (result.records[-1].error or "")


async def test_test_configuration_waives_the_count() -> None:
    result = await validate(
        validator(FakeTransport({}), perspectives=PERSPECTIVES[3:], strict=False)
    )
    assert result.ok and quorum(result) == "2/2"


def late(seconds: float) -> Behaviour:
    async def reply(p: Perspective, request: dict[str, Any]) -> Any:
        await asyncio.sleep(seconds)
        return await agree()(p, request)

    return reply


async def test_prompt_stragglers_are_still_recorded() -> None:
    # Decided after four replies; the fifth, 50 ms later, arrives within the grace.
    result = await validate(validator(FakeTransport({"a4": late(0.05)})))
    assert result.ok and quorum(result) == "5/5"


async def test_mpic_grace_milliseconds_sets_how_long_stragglers_may_answer() -> None:
    """``mpic_grace_milliseconds``: the same straggler (0.3 s after the others) is recorded
    with a grace of 2 s and cut off with none; the decision is the same either way."""
    waited = await validate(validator(FakeTransport({"a4": late(0.3)}), grace=2.0))
    assert waited.ok and quorum(waited) == "5/5"
    cut = await validate(validator(FakeTransport({"a4": late(0.3)}), grace=0.0))
    assert cut.ok and quorum(cut) == "4/5"
    assert summaries(cut)["a4"].error == NOT_AWAITED


# --- what the records say (BR 5.4.1 items 7-8, with SC-099) ----------------------------------


async def test_br_5_4_1_each_perspective_result_beside_corroboration() -> None:
    """A remote that fails says ``fail``; one that passes with another value says ``pass``
    but did not corroborate; one that never answered has no result.  The quorum record says
    whether corroboration held.  The replies' records lack the SC-099 fields (an older remote
    VA); the summaries are built from the request, so they name them all the same."""
    transport = FakeTransport(
        {
            "a1": fail(problems.incorrect_response("no TXT")),
            "a2": agree("other"),
            "a3": unavailable("connection refused"),
        }
    )
    result = await validate_wildcard(validator(transport))
    found = {pid: (r.result, r.corroborated) for pid, r in summaries(result).items()}
    assert found == {
        "a1": ("fail", False),
        "a2": ("pass", False),
        "a3": (None, False),
        "a4": ("pass", True),
        "r1": ("pass", True),
    }
    last = result.records[-1]
    assert (last.quorum, last.result, last.corroborated) == ("2/5", "fail", False)
    for rec in [*summaries(result).values(), last]:
        assert (rec.identifier, rec.adn, rec.method, rec.br_method, rec.value) == (
            "*.example.com",
            "example.com",
            "dns-01",
            "3.2.2.4.7",
            KEY_AUTH,
        )


async def test_br_5_4_1_caa_recheck_records_name_the_identifier_only() -> None:
    """A CAA recheck is no domain validation: its records name the applied-for name and the
    result, but no ADN, BR method or value."""
    allowed = {p.id: agree("allowed") for p in PERSPECTIVES}
    v = validator(FakeTransport(allowed), local=CheckResult.success((), "allowed"))
    result = await v.recheck_caa("example.com", True, "acct", "dns-01")
    last = result.records[-1]
    assert (last.method, last.identifier, last.result, last.quorum) == (
        "caa",
        "*.example.com",
        "pass",
        "5/5",
    )
    assert (last.adn, last.br_method, last.value) == (None, None, None)


async def validate_wildcard(v: MpicValidator) -> CheckResult:
    return await v.validate(
        ChallengeRequest("dns-01", "example.com", True, "tok", KEY_AUTH, "acct")
    )


async def test_aclose_releases_the_transport_and_the_local_checks() -> None:
    transport = FakeTransport({})
    v = validator(transport)
    await v.aclose()
    assert transport.closed
    assert v._local.closed  # type: ignore[attr-defined]
