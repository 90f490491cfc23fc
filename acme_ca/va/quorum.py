"""Multi-perspective corroboration rules (BR 3.2.2.9, ballot SC-067), as pure functions.

No I/O and no clock: every rule is a function of the date of the check and of the remote
perspectives' results, so the table tests in ``tests/test_mpic_quorum.py`` pin them down.

* **How many remotes** (BR-MPIC-2): a phase table by date.  Before 2025-03-15 nothing is
  required; 2025-03-15 two, advisory only; 2025-09-15 two, enforced; 2026-03-15 three, and the
  corroborating remotes must span two RIRs; 2026-06-15 four; 2026-12-15 five.
* **How many may disagree** (BR-MPIC-3): with 2-5 remotes one non-corroboration is allowed,
  with 6 or more two (one remote alone: none).
* **RIR rule**: the remotes that corroborate must fall in at least two distinct RIR regions
  (from 2026-03-15).

A remote that did not answer, answered late, answered for another perspective or RIR, or
answered something else counts as a non-corroboration; the caller decides that, this module
only counts.  :func:`decide` also works on partial results, so the caller can stop waiting
(and cancel the rest) as soon as the outcome can no longer change.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

RIRS: Final = ("ARIN", "RIPE NCC", "APNIC", "LACNIC", "AFRINIC")
"""The five Regional Internet Registries, spelled as the BRs and the audit records spell them."""

_RIR_ALIASES: Final = {
    "ARIN": "ARIN",
    "RIPE NCC": "RIPE NCC",
    "RIPE-NCC": "RIPE NCC",
    "RIPENCC": "RIPE NCC",
    "RIPE": "RIPE NCC",
    "APNIC": "APNIC",
    "LACNIC": "LACNIC",
    "AFRINIC": "AFRINIC",
}

MIN_DISTINCT_RIRS: Final = 2
"""Corroborating remotes must span this many RIRs once the RIR rule applies."""


class UnknownRir(ValueError):
    """A name that is not one of :data:`RIRS` (nor ``RIPE``, accepted for ``RIPE NCC``)."""


def canonical_rir(name: str) -> str:
    """The canonical spelling of an RIR name: case-insensitive, ``RIPE`` means ``RIPE NCC``."""
    canonical = _RIR_ALIASES.get(" ".join(name.split()).upper())
    if canonical is None:
        raise UnknownRir(f"unknown RIR {name!r}; expected one of {', '.join(RIRS)}")
    return canonical


@dataclass(frozen=True)
class Phase:
    """One row of the BR 3.2.2.9 phase-in table."""

    since: datetime | None
    """00:00 UTC of the effective date; None for "before the first row"."""
    min_remotes: int
    enforced: bool
    """False: results are recorded but a failed quorum does not stop issuance (advisory)."""
    min_rirs: int
    """Distinct RIRs the corroborating remotes must span (1 = no RIR rule)."""

    @property
    def label(self) -> str:
        return self.since.date().isoformat() if self.since is not None else "before 2025-03-15"


PHASES: Final = (
    Phase(datetime(2026, 12, 15, tzinfo=UTC), 5, True, MIN_DISTINCT_RIRS),
    Phase(datetime(2026, 6, 15, tzinfo=UTC), 4, True, MIN_DISTINCT_RIRS),
    Phase(datetime(2026, 3, 15, tzinfo=UTC), 3, True, MIN_DISTINCT_RIRS),
    Phase(datetime(2025, 9, 15, tzinfo=UTC), 2, True, 1),
    Phase(datetime(2025, 3, 15, tzinfo=UTC), 2, False, 1),
)
"""Newest first (BR-MPIC-2)."""
BEFORE_MPIC: Final = Phase(None, 0, False, 1)


def phase_for(at: datetime) -> Phase:
    """The phase in force at ``at`` (an aware datetime)."""
    for phase in PHASES:
        assert phase.since is not None
        if at >= phase.since:
            return phase
    return BEFORE_MPIC


def allowed_non_corroborations(remotes: int) -> int:
    """BR-MPIC-3: 2-5 remotes tolerate one non-corroboration, 6 or more two, one remote none."""
    if remotes >= 6:
        return 2
    if remotes >= 2:
        return 1
    return 0


@dataclass(frozen=True)
class Remote:
    """A configured remote perspective as the rules see it: its id and (canonical) RIR."""

    id: str
    rir: str


@dataclass(frozen=True)
class QuorumRule:
    """What a check at one date with one set of remotes must achieve.

    ``strict`` (production) applies the phase's minimum number of remotes; a test
    configuration (test mode, ``dnssec = "off"``) waives that minimum and asks the RIR rule
    only as far as the configured remotes can satisfy it, and always enforces the quorum so
    trying it out shows what production would do.
    """

    phase: Phase
    strict: bool
    remotes: int
    allowed: int
    min_remotes: int
    min_rirs: int
    binding: bool
    """False in an advisory phase: the outcome is recorded, issuance is not stopped."""

    @property
    def required(self) -> int:
        """Corroborations needed: every remote but the allowed non-corroborations."""
        return max(self.remotes - self.allowed, 0)


def rule_for(at: datetime, remotes: Sequence[Remote], *, strict: bool) -> QuorumRule:
    """The quorum rule for a check at ``at`` with these remotes."""
    phase = phase_for(at)
    configured_rirs = len({r.rir for r in remotes})
    if strict:
        min_remotes = phase.min_remotes if phase.enforced else 0
        min_rirs = phase.min_rirs
        binding = phase.enforced
    else:
        min_remotes = 0
        min_rirs = max(1, min(phase.min_rirs, configured_rirs))
        binding = True
    return QuorumRule(
        phase=phase,
        strict=strict,
        remotes=len(remotes),
        allowed=allowed_non_corroborations(len(remotes)),
        min_remotes=min_remotes,
        min_rirs=min_rirs,
        binding=binding,
    )


class Verdict(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - not a password
    FAIL = "fail"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class QuorumDecision:
    """The outcome so far: ``corroborated`` of ``total`` remotes, and why."""

    verdict: Verdict
    corroborated: int
    total: int
    reason: str
    rirs: tuple[str, ...]
    """The distinct RIRs of the corroborating remotes, sorted."""

    @property
    def quorum(self) -> str:
        """The audit form: ``"4/5"`` -- corroborating remotes / remotes asked."""
        return f"{self.corroborated}/{self.total}"

    @property
    def decided(self) -> bool:
        return self.verdict is not Verdict.UNDECIDED


def decide(
    rule: QuorumRule, remotes: Sequence[Remote], results: Mapping[str, bool]
) -> QuorumDecision:
    """Apply ``rule`` to ``results`` (remote id -> corroborated); a missing id is pending.

    PASS once enough remotes corroborated and they span enough RIRs; FAIL once too many did
    not, or once the pending remotes can no longer complete the RIR span; otherwise
    UNDECIDED.  With no pending remote the verdict is always PASS or FAIL.
    """
    total = len(remotes)
    corroborating = [r for r in remotes if results.get(r.id) is True]
    failed = [r for r in remotes if results.get(r.id) is False]
    pending = [r for r in remotes if r.id not in results]
    rirs = tuple(sorted({r.rir for r in corroborating}))
    possible_rirs = {r.rir for r in corroborating} | {r.rir for r in pending}

    def verdict(kind: Verdict, reason: str) -> QuorumDecision:
        return QuorumDecision(kind, len(corroborating), total, reason, rirs)

    if total == 0 and rule.min_remotes == 0:
        return verdict(Verdict.PASS, "no remote perspectives configured and none required")
    if total < rule.min_remotes:
        return verdict(
            Verdict.FAIL,
            f"{total} remote perspective(s) configured; BR 3.2.2.9 requires at least "
            f"{rule.min_remotes} from {rule.phase.label}",
        )
    if len(failed) > rule.allowed:
        return verdict(
            Verdict.FAIL,
            f"{len(failed)} of {total} remote perspectives did not corroborate; at most "
            f"{rule.allowed} may not",
        )
    if len(possible_rirs) < rule.min_rirs:
        spanned = ", ".join(rirs) or "none"
        return verdict(
            Verdict.FAIL,
            f"corroborating remote perspectives span {len(rirs)} RIR(s) ({spanned}); at "
            f"least {rule.min_rirs} distinct RIRs are required",
        )
    if len(corroborating) >= rule.required and len(rirs) >= rule.min_rirs:
        return verdict(
            Verdict.PASS,
            f"{len(corroborating)} of {total} remote perspectives corroborated (needed "
            f"{rule.required}, across at least {rule.min_rirs} RIR(s): {', '.join(rirs) or '-'})",
        )
    return verdict(Verdict.UNDECIDED, f"{len(pending)} remote perspective(s) still pending")
