"""The typed views of an issuance job, one per recorded step, and what the re-checks read.

:func:`job_from_row` turns an ``issuance_jobs`` row into the view of its step
(:class:`IssuanceJob`, :class:`PreparedJob`, :class:`PrecertSignedJob`,
:class:`SctsCollectedJob`): each carries exactly the columns its step has recorded, none of them
optional.  :class:`acme_ca.db.issuance.IssuanceRepository` returns them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final

import asyncpg

from acme_ca.acme.jsontypes import JsonObject, JsonValue


class Step(enum.StrEnum):
    """How far a job got: each value names the last thing recorded (``issuance_jobs.step``)."""

    QUEUED = "queued"
    PREPARED = "prepared"
    PRECERT_SIGNED = "precert_signed"
    SCTS_COLLECTED = "scts_collected"
    ISSUED = "issued"


@dataclass(frozen=True)
class IssuanceJob:
    """A claimed job as every step sees it (the view of a ``queued`` or ``issued`` job)."""

    id: int
    order_id: int
    account_id: int
    csr_der: bytes
    names: tuple[str, ...]
    status: str
    step: Step
    attempts: int
    deferrals: int
    issuer: str
    created_at: datetime
    locked_by: str | None
    #: The certificate profile it issues under (the order's).
    profile: str

    @property
    def faults(self) -> int:
        """Claims that did not end in a CT backoff: what MAX_ATTEMPTS limits."""
        return self.attempts - self.deferrals


@dataclass(frozen=True)
class PreparedJob(IssuanceJob):
    """Serial, validity, precertificate TBS and its linted copy fixed; nothing signed yet."""

    serial: str
    not_before: datetime
    not_after: datetime
    precert_tbs_der: bytes
    precert_lint_der: bytes


@dataclass(frozen=True)
class PrecertSignedJob(PreparedJob):
    """The precertificate is signed and stored (it counts as issued); SCTs are collected from
    ``ct_submitted_at`` on."""

    precert_der: bytes
    ct_submitted_at: datetime


@dataclass(frozen=True)
class SctsCollectedJob(PrecertSignedJob):
    """SCTs verified; the final certificate's TBS and linted copy fixed, not yet signed."""

    scts: list[dict[str, JsonValue]]
    tbs_der: bytes
    lint_der: bytes


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str
    issuer: str
    der: bytes
    not_before: datetime
    not_after: datetime
    chain_pem: str
    alternate_chains: list[str]
    #: The embedded SCTs as stored (log, operator, timestamp, log id, the SCT itself).
    scts: list[dict[str, JsonValue]] = field(default_factory=list)


@dataclass(frozen=True)
class AuthorizationEvidence:
    """One authorization of an order as recorded, for the signing-time re-checks: its state,
    when it was validated and CAA last rechecked, and its valid challenge's type and
    validation records (None / empty when no challenge is valid)."""

    authz_id: int
    identifier: str
    wildcard: bool
    status: str
    expires_at: datetime
    validated_at: datetime | None
    caa_checked_at: datetime | None
    method: str | None
    records: list[JsonObject]


_VIEWS: Final[Mapping[Step, type[IssuanceJob]]] = {
    Step.QUEUED: IssuanceJob,
    Step.PREPARED: PreparedJob,
    Step.PRECERT_SIGNED: PrecertSignedJob,
    Step.SCTS_COLLECTED: SctsCollectedJob,
    Step.ISSUED: IssuanceJob,
}
"""The view each step's job is read as: the columns its step has recorded, none optional."""

_DECODE: Final[Mapping[str, Callable[[Any], object]]] = {
    "step": Step,
    "names": tuple,
    "csr_der": bytes,
    "precert_tbs_der": bytes,
    "precert_lint_der": bytes,
    "precert_der": bytes,
    "tbs_der": bytes,
    "lint_der": bytes,
}
"""Columns whose Python value is not asyncpg's as it comes; every other field is the column."""


def job_from_row(row: asyncpg.Record) -> IssuanceJob:
    """The typed view of the row's step, one field per column of the same name (the
    ``issuance_jobs_step_recorded`` constraint guarantees the columns of a job a worker may
    take)."""
    view = _VIEWS[Step(row["step"])]
    values: dict[str, Any] = {}
    for f in fields(view):
        decode = _DECODE.get(f.name)
        values[f.name] = row[f.name] if decode is None else decode(row[f.name])
    return view(**values)
