"""Multi-perspective issuance corroboration: the primary's side (BR 3.2.2.9, CAA-15).

:class:`MpicValidator` is the :class:`~acme_ca.ra.challenges.Validator` the RA gets when
remote perspectives are configured.  It wraps the local :class:`ValidationAuthority`:

1. the primary validates first (method, then CAA); if that fails, no remote is asked;
2. on success every remote is asked at once, each with the per-remote timeout, to run the
   same checks from its own network with its own resolver;
3. each reply is judged: the remote corroborates when it answers as the configured
   perspective id and RIR, for this request (a fresh nonce per request, so no earlier reply
   can be replayed), with ``ok`` and an ``observed`` value its method's
   :class:`~acme_ca.va.registry.Corroboration` agrees with -- the same key authorization
   (http-01), TXT digest (dns-01), acmeIdentifier digest (tls-alpn-01)... -- and CAA
   permission (``allowed``; the bytes of the CAA answer need not match, CAA-15).  Anything
   else -- no answer, a timeout, a TLS failure, another id or RIR, a malformed reply -- is a
   non-corroboration;
4. after each reply the pure rules of :mod:`acme_ca.va.quorum` are applied for the date of
   the check; as soon as the outcome cannot change, the remotes still pending get a short
   grace (``mpic_grace_milliseconds``, 250 ms unless set) and are then cancelled and
   recorded as "not awaited" -- a slow or hung remote never holds up a decided validation;
5. everything is recorded: each remote's own records, one summary record per remote (id,
   RIR, result) and one quorum record (``"4/5"``) -- appended to the :class:`CheckResult`
   the RA stores -- and one ``va.mpic.quorum`` log event with the same facts.

:meth:`MpicValidator.recheck_caa` does the same for the CAA recheck before issuance.

Nothing is cached: every call asks every remote again with a new nonce.  The transport is
injected (:class:`RemoteTransport`; the aiohttp client with the mutual-TLS certificate lives
in :mod:`acme_ca.remote_va.client`, since ``va/`` holds no HTTP code), which also lets the
unit tests drive this class with fakes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import structlog

from acme_ca.acme import problems
from acme_ca.acme.jsontypes import JsonObject, JsonValue
from acme_ca.acme.problems import Problem
from acme_ca.clock import Clock
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.caa_lookup import OBSERVED_ALLOWED
from acme_ca.va.methods import applied_for, authorization_domain_name
from acme_ca.va.perspectives import MpicSetup, Perspective
from acme_ca.va.quorum import (
    QuorumDecision,
    QuorumRule,
    UnknownRir,
    Verdict,
    canonical_rir,
    decide,
    rule_for,
)
from acme_ca.va.records import (
    PRIMARY_PERSPECTIVE,
    ChallengeRequest,
    CheckResult,
    FormatError,
    Method,
    ValidationRecord,
    truncate,
)
from acme_ca.va.registry import METHODS

CHECK_PATH: Final = "/acme-ca/mpic/v1/check"
"""The one endpoint of a remote VA."""
NOT_AWAITED: Final = "not awaited: the outcome was already decided"
"""The result of a remote cancelled once the outcome was decided and its grace
(:attr:`MpicSetup.grace_seconds`) had passed."""
CORROBORATED: Final = "corroborated"

Kind = Literal["dcv", "caa"]

_log = structlog.get_logger(component=__name__)


class RemoteUnavailable(Exception):
    """The transport got no usable reply; the message says why (refused, TLS, HTTP status)."""


class RemoteTransport(Protocol):
    """Sends one request to one remote and returns its decoded JSON reply."""

    async def check(self, perspective: Perspective, request: JsonObject) -> Any:
        """Raise :class:`RemoteUnavailable` (or time out) when there is no reply to judge."""
        ...

    async def aclose(self) -> None:
        """Release what the transport keeps open (pooled connections to the remotes)."""
        ...


@dataclass(frozen=True)
class RemoteRequest:
    """What the primary asks a remote: the same inputs as the primary's own check."""

    kind: Kind
    identifier: str
    wildcard: bool
    account_uri: str
    method: str
    """dcv: the challenge type; caa: the validation method CAA ``validationmethods`` sees."""
    nonce: str
    token: str | None = None
    key_authorization: str | None = None

    @classmethod
    def dcv(cls, request: ChallengeRequest, nonce: str) -> RemoteRequest:
        """Ask a remote to repeat the primary's check of ``request``."""
        return cls(
            kind="dcv",
            identifier=request.identifier,
            wildcard=request.wildcard,
            account_uri=request.account_uri,
            method=request.challenge_type,
            nonce=nonce,
            token=request.token,
            key_authorization=request.key_authorization,
        )

    def challenge(self) -> ChallengeRequest:
        """The challenge a ``dcv`` request asks the remote to validate."""
        assert self.kind == "dcv" and self.token is not None
        assert self.key_authorization is not None
        return ChallengeRequest(
            challenge_type=self.method,
            identifier=self.identifier,
            wildcard=self.wildcard,
            token=self.token,
            key_authorization=self.key_authorization,
            account_uri=self.account_uri,
        )

    def to_json(self) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
            "kind": self.kind,
            "identifier": self.identifier,
            "wildcard": self.wildcard,
            "account_uri": self.account_uri,
            "method": self.method,
            "nonce": self.nonce,
        }
        if self.kind == "dcv":
            body["token"] = self.token
            body["key_authorization"] = self.key_authorization
        return body

    @classmethod
    def from_json(cls, body: Any) -> RemoteRequest:
        """Parse a request at the remote; ValueError names what is wrong."""
        if not isinstance(body, dict):
            raise FormatError("request must be a JSON object")
        kind = body.get("kind")
        if kind not in ("dcv", "caa"):
            raise FormatError("kind must be 'dcv' or 'caa'")
        strings = ("identifier", "account_uri", "method", "nonce")
        for key in strings:
            if not isinstance(body.get(key), str) or not body[key]:
                raise FormatError(f"{key} must be a non-empty string")
        if not isinstance(body.get("wildcard"), bool):
            raise FormatError("wildcard must be a boolean")
        if body["method"] not in METHODS:
            raise FormatError(f"method must be one of {', '.join(METHODS)}")
        token = key_authorization = None
        if kind == "dcv":
            token, key_authorization = body.get("token"), body.get("key_authorization")
            if not isinstance(token, str) or not isinstance(key_authorization, str):
                raise FormatError("dcv needs token and key_authorization strings")
        return cls(
            kind=kind,
            identifier=body["identifier"],
            wildcard=body["wildcard"],
            account_uri=body["account_uri"],
            method=body["method"],
            nonce=body["nonce"],
            token=token,
            key_authorization=key_authorization,
        )


async def run_remote_check(va: ValidationAuthority, request: RemoteRequest) -> CheckResult:
    """The remote's side: the very checks the primary ran, from this perspective."""
    if request.kind == "caa":
        return await va.recheck_caa(
            request.identifier, request.wildcard, request.account_uri, request.method
        )
    return await va.validate(request.challenge())


def remote_reply(
    perspective_id: str, rir: str, nonce: str, result: CheckResult
) -> dict[str, JsonValue]:
    """The remote's answer: the CheckResult JSON with who answered and for which request."""
    return {"perspective": perspective_id, "rir": rir, "nonce": nonce, **result.to_json()}


@dataclass(frozen=True)
class RemoteOutcome:
    """How one remote answered, judged against the configuration and the primary."""

    perspective: Perspective
    corroborated: bool
    reason: str
    result: CheckResult | None = None

    @property
    def problem_type(self) -> str | None:
        if self.result is None or self.result.problem is None:
            return None
        return self.result.problem.type


def judge_reply(
    perspective: Perspective, request: RemoteRequest, reply: Any, primary_observed: str | None
) -> RemoteOutcome:
    """Does ``reply`` corroborate the primary?  Identity first, then the result."""
    try:
        result = CheckResult.from_json(reply)
    except (ValueError, TypeError) as exc:
        return RemoteOutcome(perspective, False, f"malformed reply: {exc}")
    claimed_id, claimed_rir = reply.get("perspective"), reply.get("rir")
    if claimed_id != perspective.id:
        return RemoteOutcome(
            perspective,
            False,
            f"reply names perspective {claimed_id!r}, configured {perspective.id!r}",
            result,
        )
    try:
        rir = canonical_rir(claimed_rir) if isinstance(claimed_rir, str) else None
    except UnknownRir:
        rir = None
    if rir != perspective.rir:
        return RemoteOutcome(
            perspective,
            False,
            f"reply names RIR {claimed_rir!r}, configured {perspective.rir!r}",
            result,
        )
    if reply.get("nonce") != request.nonce:
        return RemoteOutcome(perspective, False, "reply is not for this request (nonce)", result)
    if not result.ok:
        assert result.problem is not None
        return RemoteOutcome(
            perspective,
            False,
            f"{result.problem.short_type}: {truncate(result.problem.detail, 160)}",
            result,
        )
    if request.kind == "caa":
        expected: str | None = OBSERVED_ALLOWED
        agrees = result.observed == expected
    else:
        # The method's own corroboration rule (va/registry.py): what the remote must agree on.
        expected = primary_observed
        agrees = METHODS[request.method].corroboration.agree(primary_observed, result.observed)
    if not agrees:
        return RemoteOutcome(
            perspective,
            False,
            f"observed {truncate(str(result.observed), 64)!r}, the primary "
            f"{truncate(str(expected), 64)!r}",
            result,
        )
    return RemoteOutcome(perspective, True, CORROBORATED, result)


def decided_adn(result: CheckResult) -> str | None:
    """The ADN of the record that decided a passing check (the last one with ``result``)."""
    return next((r.adn for r in reversed(result.records) if r.result == "pass"), None)


class MpicValidator:
    """The primary VA with corroboration by the remote perspectives of ``setup``."""

    def __init__(
        self,
        local: ValidationAuthority,
        setup: MpicSetup,
        transport: RemoteTransport,
        clock: Clock,
        *,
        nonce: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    ) -> None:
        if not setup.perspectives:
            raise ValueError("MpicValidator needs at least one remote perspective")
        self._local = local
        self._setup = setup
        self._transport = transport
        self._clock = clock
        self._nonce = nonce
        self.perspectives = setup.perspectives

    async def aclose(self) -> None:
        """Release the local checks' and the transport's open connections."""
        try:
            await self._transport.aclose()
        finally:
            await self._local.aclose()

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        """The primary's validation, then (only if it passed) the remotes' corroboration."""
        local = await self._local.validate(request)
        if not local.ok or self._local.always_valid:
            _log.info(
                "va.mpic.remotes_not_asked",
                identifier=request.identifier,
                type=request.challenge_type,
                reason="always_valid test mode" if local.ok else "the primary's check failed",
            )
            return local
        return await self._corroborated(
            RemoteRequest.dcv(request, self._nonce()), local, request.challenge_type
        )

    async def recheck_caa(
        self, identifier: str, wildcard: bool, account_uri: str, validation_method: str
    ) -> CheckResult:
        """CAA again before issuance, corroborated the same way (CAA-15)."""
        local = await self._local.recheck_caa(identifier, wildcard, account_uri, validation_method)
        if not local.ok or self._local.always_valid:
            return local
        request = RemoteRequest(
            kind="caa",
            identifier=identifier,
            wildcard=wildcard,
            account_uri=account_uri,
            method=validation_method,
            nonce=self._nonce(),
        )
        return await self._corroborated(request, local, "caa")

    async def _corroborated(
        self, request: RemoteRequest, local: CheckResult, record_method: str
    ) -> CheckResult:
        started = time.monotonic()
        at = self._clock.now()
        remotes = self._setup.remotes
        rule = rule_for(at, remotes, strict=self._setup.strict)
        outcomes = await self._ask_all(request, local.observed, rule)
        # The remotes cut off were not needed: the answers received already decide.
        answered = {o.perspective.id: o.corroborated for o in outcomes if o.reason != NOT_AWAITED}
        decision = decide(rule, remotes, answered)
        assert decision.decided
        passed = decision.verdict is Verdict.PASS
        records = local.records + self._records(
            request, record_method, at, outcomes, decision, rule, local.observed, decided_adn(local)
        )
        (_log.info if passed else _log.warning)(
            "va.mpic.quorum",
            identifier=request.identifier,
            kind=request.kind,
            method=request.method,
            quorum=decision.quorum,
            ok=passed,
            binding=rule.binding,
            reason=decision.reason,
            phase=rule.phase.label,
            required=rule.required,
            min_rirs=rule.min_rirs,
            perspectives=[
                {"id": o.perspective.id, "rir": o.perspective.rir, "result": o.reason}
                for o in outcomes
            ],
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        if passed or not rule.binding:
            return CheckResult.success(records, local.observed)
        return CheckResult.failure(
            self._problem(request, outcomes, decision), records, local.observed
        )

    async def _ask_all(
        self, request: RemoteRequest, primary_observed: str | None, rule: QuorumRule
    ) -> list[RemoteOutcome]:
        """Ask every remote concurrently; stop waiting (cancel the rest) once decided."""
        remotes = self._setup.remotes
        results: dict[str, bool] = {}
        if decide(rule, remotes, results).decided:  # e.g. too few remotes for the date
            return [RemoteOutcome(p, False, NOT_AWAITED) for p in self.perspectives]
        tasks = {
            asyncio.create_task(self._ask(p, request, primary_observed), name=f"mpic-{p.id}"): p
            for p in self.perspectives
        }
        outcomes: dict[str, RemoteOutcome] = {}
        pending: set[asyncio.Task[RemoteOutcome]] = set(tasks)

        def collect(done: set[asyncio.Task[RemoteOutcome]]) -> None:
            for task in done:
                outcome = task.result()
                outcomes[outcome.perspective.id] = outcome
                results[outcome.perspective.id] = outcome.corroborated

        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                collect(done)
                if decide(rule, remotes, results).decided:
                    if pending:
                        done, pending = await asyncio.wait(
                            pending, timeout=self._setup.grace_seconds
                        )
                        collect(done)
                    break
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            p = tasks[task]
            outcomes[p.id] = RemoteOutcome(p, False, NOT_AWAITED)
        return [outcomes[p.id] for p in self.perspectives]

    async def _ask(
        self, perspective: Perspective, request: RemoteRequest, primary_observed: str | None
    ) -> RemoteOutcome:
        """One remote, within the per-remote timeout; never raises but for cancellation."""
        timeout = self._setup.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                reply = await self._transport.check(perspective, request.to_json())
        except TimeoutError:
            return RemoteOutcome(perspective, False, f"no reply within {timeout:g} s")
        except RemoteUnavailable as exc:
            return RemoteOutcome(perspective, False, f"unavailable: {exc}")
        except Exception as exc:
            _log.warning("va.mpic.remote_error", perspective=perspective.id, error=repr(exc))
            return RemoteOutcome(perspective, False, f"error: {truncate(repr(exc), 160)}")
        return judge_reply(perspective, request, reply, primary_observed)

    def _records(
        self,
        request: RemoteRequest,
        method: str,
        at: datetime,
        outcomes: list[RemoteOutcome],
        decision: QuorumDecision,
        rule: QuorumRule,
        value: str | None,
        adn: str | None = None,
    ) -> tuple[ValidationRecord, ...]:
        """The remotes' own records, a summary per remote and the quorum record.

        Summaries and the quorum record name what was validated (BR 5.4.1 with SC-099): the
        applied-for name, the ADN (dcv), the method by ACME label and BR section, the value
        every perspective had to observe; each summary the perspective's id and ``result``
        (its own pass/fail, absent with no usable reply) beside ``corroborated``; the quorum
        record ``quorum`` (BR 5.4.1 item 8).  Built here from the request, so the facts hold
        whatever version the remote runs."""
        record_method: Any = method
        hostname = request.identifier.removeprefix("*.").rstrip(".").lower()
        base = self._about(request, record_method, hostname, at, value, adn)
        query = f"corroborate {request.kind} {request.method} {hostname}"
        out: list[ValidationRecord] = []
        for o in outcomes:
            if o.result is not None:
                out.extend(
                    replace(r, perspective=o.perspective.id, rir=o.perspective.rir)
                    for r in o.result.records
                )
            out.append(
                replace(
                    base,
                    query=query,
                    perspective=o.perspective.id,
                    rir=o.perspective.rir,
                    response=o.reason if o.corroborated else None,
                    error=None if o.corroborated else o.reason,
                    corroborated=o.corroborated,
                    result=None if o.result is None else ("pass" if o.result.ok else "fail"),
                )
            )
        passed = decision.verdict is Verdict.PASS
        summary = (
            f"{decision.reason}; rule for {rule.phase.label}: {rule.required} of "
            f"{rule.remotes} remotes across {rule.min_rirs} RIR(s)"
            + ("" if rule.binding else " (advisory: not enforced)")
        )
        out.append(
            replace(
                base,
                query=f"multi-perspective corroboration (BR 3.2.2.9) of {request.kind}",
                perspective=PRIMARY_PERSPECTIVE,
                response=truncate(summary, 512) if passed else None,
                error=None if passed else truncate(summary, 512),
                corroborated=passed,
                quorum=decision.quorum,
                result="pass" if passed else "fail",
            )
        )
        return tuple(out)

    @staticmethod
    def _about(
        request: RemoteRequest,
        method: Method,
        hostname: str,
        at: datetime,
        value: str | None,
        adn: str | None = None,
    ) -> ValidationRecord:
        """The part of every summary that says what was corroborated: the applied-for name
        and, for domain validation, the ADN, the BR section of the method and the value
        looked for.  A CAA recheck has no ADN or method of its own (RFC 8659 climbs from the
        FQDN).  ``adn``: where the primary's check found its proof, for the methods that
        prune (dns-persist-01, dns-account-01); otherwise the method's ADN of the name."""
        dcv = METHODS[request.method].dcv if request.kind == "dcv" else None
        return ValidationRecord(
            method=method,
            hostname=hostname,
            query="",
            at=at,
            identifier=applied_for(request.identifier, request.wildcard),
            adn=(
                (adn or authorization_domain_name(dcv, request.identifier, request.wildcard))
                if dcv is not None
                else None
            ),
            br_method=dcv.section if dcv is not None else None,
            value=value if dcv is not None else None,
        )

    def _problem(
        self, request: RemoteRequest, outcomes: list[RemoteOutcome], decision: QuorumDecision
    ) -> Problem:
        """The subscriber's problem: the remotes' common problem type when they share one
        (``caa``, ``incorrectResponse``, ``dns``...), ``unauthorized`` otherwise."""
        failing = [o for o in outcomes if not o.corroborated and o.reason != NOT_AWAITED]
        detail = (
            f"multi-perspective corroboration failed for {request.identifier} "
            f"({decision.quorum} remote perspectives corroborated): {decision.reason}"
        )
        if failing:
            detail += "; " + "; ".join(
                f"{o.perspective.id} ({o.perspective.rir}): {o.reason}" for o in failing
            )
        types = {o.problem_type for o in failing}
        if len(types) == 1 and None not in types:
            sample = failing[0]
            assert sample.result is not None and sample.result.problem is not None
            return Problem(
                type=sample.result.problem.type,
                detail=detail,
                status=sample.result.problem.status,
            )
        problem: Problem = (
            problems.unauthorized(detail) if failing else problems.server_internal(detail)
        )
        return problem
