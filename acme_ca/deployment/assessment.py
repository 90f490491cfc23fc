"""Evaluating every invariant once: ``acme-ca check``, the start-up gate of ``serve`` and
``worker``, and the signing-time guard of the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.ca.issuers_file import ISSUERS_FILE, IssuerConfigError, IssuersFile, read_issuers_file
from acme_ca.config import Config, ConfigError
from acme_ca.deployment.invariants import (
    CHECKS,
    INVARIANTS,
    PERSPECTIVES,
    Context,
    Invariant,
    weak_key_coverage,
)
from acme_ca.deployment.shape import Shape, hierarchy_shape
from acme_ca.va.perspectives import MpicConfigError, Perspective, load_mpic_setup, phase_violations
from acme_ca.va.settings import MpicSettings

log = structlog.get_logger(component="acme_ca.deployment")


@dataclass(frozen=True)
class Finding:
    """One invariant evaluated: passed or not, and a line saying what was seen."""

    invariant: Invariant
    passed: bool
    detail: str

    def to_json(self) -> dict[str, JsonValue]:
        inv = self.invariant
        return {
            "number": inv.number,
            "id": inv.id,
            "title": inv.title,
            "clause": inv.clause,
            "keys": list(inv.keys),
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Assessment:
    """The shape and every invariant for one configuration at one date."""

    shape: Shape
    shape_reason: str
    at: datetime
    findings: tuple[Finding, ...]
    perspectives: tuple[Perspective, ...] = ()
    """The remotes of a perspectives file that loaded, for the signing-time re-check."""
    debian_weak_rsa_sizes: frozenset[int] = field(default_factory=frozenset)
    """RSA sizes the configured Debian weak-key lists cover (from their file names)."""

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.passed)

    @property
    def production(self) -> bool:
        return self.shape is Shape.PRODUCTION

    @property
    def publicly_trusted(self) -> bool:
        """Could this configuration issue publicly-trusted certificates?"""
        return self.production and not self.failures

    def verdict(self) -> str:
        if self.publicly_trusted:
            return "yes: production hierarchy, every invariant holds"
        reasons = []
        if not self.production:
            reasons.append(
                f"development hierarchy ({self.shape_reason}), which no root program trusts"
            )
        if self.failures:
            reasons.append(f"{len(self.failures)} of {len(self.findings)} invariants fail")
        return "no: " + "; ".join(reasons)

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "shape": str(self.shape),
            "shape_reason": self.shape_reason,
            "at": self.at.isoformat(),
            "publicly_trusted": self.publicly_trusted,
            "verdict": self.verdict(),
            "invariants": [f.to_json() for f in self.findings],
        }


class DeploymentRefused(ConfigError):
    """A production hierarchy with failing invariants: ``serve``/``worker`` do not start."""

    def __init__(self, assessment: Assessment) -> None:
        lines = [
            f"production hierarchy ({assessment.shape_reason}): refusing to start, "
            f"{len(assessment.failures)} of {len(assessment.findings)} production invariants "
            "fail:"
        ]
        for f in assessment.failures:
            inv = f.invariant
            lines.append(f"  [{inv.label}] {f.detail} (set: {', '.join(inv.keys)})")
        lines.append("`acme-ca check` lists every invariant; docs/production.md walks through them")
        super().__init__("\n".join(lines))
        self.assessment = assessment


def assess(config: Config, at: datetime) -> Assessment:
    """The shape and every invariant of ``config`` at ``at``.  Blocking file I/O (run it in a
    thread from a loop); contacts nothing."""
    parsed: IssuersFile | None = None
    issuers_error = ""
    issuers_path = config.pki_path / ISSUERS_FILE
    try:
        parsed = read_issuers_file(config.pki_path, now=at)
    except IssuerConfigError as e:
        issuers_error = str(e)
    if parsed is not None:
        shape, reason = hierarchy_shape(parsed)
    elif config.pki_dir is None and not issuers_path.exists():
        shape, reason = (
            Shape.DEVELOPMENT,
            ("embedded defaults: serve generates a development hierarchy on first start"),
        )
    else:
        shape, reason = Shape.PRODUCTION, f"{ISSUERS_FILE} unreadable, not made by acme-ca init"
    ctx = Context(config, at, parsed, issuers_error)
    findings = []
    for invariant in INVARIANTS:
        passed, detail = CHECKS[invariant.id](ctx)
        findings.append(Finding(invariant, passed, detail))
    perspectives: tuple[Perspective, ...] = ()
    if config.mpic_perspectives_file is not None and not config.test_perspectives:
        try:
            mpic = MpicSettings.from_config(config)
            perspectives = load_mpic_setup(mpic, at, strict=False).perspectives
        except MpicConfigError:
            perspectives = ()
    covered, _ = weak_key_coverage(Path(p) for p in config.weak_key_blocklists)
    return Assessment(shape, reason, at, tuple(findings), perspectives, covered)


async def deployment_gate(config: Config, at: datetime, *, process: str) -> Assessment:
    """Evaluate before serving or signing: a production hierarchy with any failing invariant
    raises :class:`DeploymentRefused` (logged as ``deployment.refused``); a development one
    logs one ``deployment.invariant_relaxed`` warning per failing invariant."""
    assessment = await asyncio.to_thread(assess, config, at)
    if assessment.production and assessment.failures:
        log.error(
            "deployment.refused",
            process=process,
            shape=str(assessment.shape),
            shape_reason=assessment.shape_reason,
            failing=[
                {"invariant": f.invariant.label, "detail": f.detail, "set": f.invariant.keys}
                for f in assessment.failures
            ],
        )
        raise DeploymentRefused(assessment)
    for f in assessment.failures:
        log.warning(
            "deployment.invariant_relaxed",
            process=process,
            invariant=f.invariant.id,
            number=f.invariant.number,
            clause=f.invariant.clause,
            detail=f.detail,
            set=list(f.invariant.keys),
            banner=f"DEVELOPMENT HIERARCHY: {f.invariant.clause} relaxed "
            f"({f.invariant.title}); never publicly trusted",
        )
    log.info(
        "deployment.shape",
        process=process,
        shape=str(assessment.shape),
        shape_reason=assessment.shape_reason,
        relaxed=len(assessment.failures),
        publicly_trusted=assessment.publicly_trusted,
    )
    return assessment


def signing_guard(assessment: Assessment) -> Callable[[datetime], list[str]]:
    """The date-dependent invariants, asked by the worker at every signing: the violated ones
    for that date (production), always none for a development hierarchy (relaxed)."""
    if not assessment.production:
        return lambda at: []
    perspectives: Sequence[Perspective] = assessment.perspectives

    def guard(at: datetime) -> list[str]:
        return [f"{PERSPECTIVES.label}: {p}" for p in phase_violations(perspectives, at)]

    return guard


def render_text(assessment: Assessment) -> str:
    """``acme-ca check``'s report: the shape, one block per invariant, the verdict."""
    lines = [
        f"acme-ca check at {assessment.at.isoformat()}",
        f"shape: {assessment.shape} ({assessment.shape_reason})",
        "",
    ]
    for f in assessment.findings:
        inv = f.invariant
        lines.append(f"{'PASS' if f.passed else 'FAIL'}  {inv.number:>2} {inv.id:<27} {inv.clause}")
        lines.append(f"          {inv.title}")
        lines.append(f"          {f.detail}")
        if not f.passed:
            lines.append(f"          set: {', '.join(inv.keys)}")
    passed = len(assessment.findings) - len(assessment.failures)
    lines += [
        "",
        f"{passed}/{len(assessment.findings)} invariants pass",
        f"could this configuration issue publicly-trusted certificates? {assessment.verdict()}",
    ]
    if assessment.failures and not assessment.production:
        lines.append("serve and worker start, relaxing (and logging) each failing invariant")
    elif assessment.failures:
        lines.append("serve and worker refuse to start until every invariant passes")
    return "\n".join(lines) + "\n"
