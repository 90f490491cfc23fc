"""Authorizations and their challenges as stored: the rows' dataclasses, loading one
authorization with its challenges in one round trip, and how an order's authorizations were
validated.  New ones are inserted with their order, and the writes that move them are in
:mod:`acme_ca.db.orders` and :mod:`acme_ca.db.validation_results`, which move their orders
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from acme_ca.acme.jsontypes import JsonObject
from acme_ca.acme.problems import Problem
from acme_ca.acme.status import AuthorizationStatus, ChallengeStatus
from acme_ca.db.nonces import Redeemed, Redemption, fetch_redeeming


@dataclass(frozen=True)
class Challenge:
    id: int
    authz_id: int
    type: str
    token: str
    status: ChallengeStatus
    validated_at: datetime | None
    error: Problem | None
    #: The VA's records as stored (each with the BR method it used), shown to the client as is.
    validation_records: tuple[JsonObject, ...]
    attempts: int


@dataclass(frozen=True)
class Authorization:
    id: int
    account_id: int
    identifier: str
    wildcard: bool
    #: As stored: :func:`acme_ca.acme.states.authz_status` gives it at a given time.
    status: AuthorizationStatus
    expires_at: datetime
    validated_at: datetime | None
    challenges: tuple[Challenge, ...]


@dataclass(frozen=True)
class NewAuthorization:
    """An authorization to create with its challenges (types and tokens)."""

    identifier: str
    wildcard: bool
    expires_at: datetime
    challenges: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ValidationOutcome:
    """What a validation run decided for one challenge."""

    valid: bool
    records: Sequence[JsonObject]
    error: Problem | None
    authz_expires_at: datetime | None  # for a valid authorization: end of its reuse period


def challenge_from_row(row: Mapping[str, Any]) -> Challenge:
    """From a challenges row, or from its JSON form (timestamps as ISO 8601 text)."""
    validated_at = row["validated_at"]
    error = row["error"]
    if isinstance(validated_at, str):
        validated_at = datetime.fromisoformat(validated_at)
    return Challenge(
        id=row["id"],
        authz_id=row["authz_id"],
        type=row["type"],
        token=row["token"],
        status=ChallengeStatus(row["status"]),
        validated_at=validated_at,
        error=None if error is None else Problem.from_json(error),
        validation_records=tuple(row["validation_records"]),
        attempts=row["attempts"],
    )


#: An authorization with its challenges as an array of challenge rows, for one round trip.
_AUTHZ_SELECT = """SELECT a.*,
                  (SELECT coalesce(json_agg(json_build_object(
                              'id', c.id, 'authz_id', c.authz_id, 'type', c.type,
                              'token', c.token, 'status', c.status,
                              'validated_at', c.validated_at, 'error', c.error,
                              'validation_records', c.validation_records,
                              'attempts', c.attempts) ORDER BY c.id), '[]')
                   FROM challenges c WHERE c.authz_id = a.id) AS challenge_rows
           FROM authorizations a"""


async def load_authorization(conn: asyncpg.Connection, authz_id: int) -> Authorization | None:
    # One round trip: the challenges come along as an array of challenge rows.
    row = await conn.fetchrow(_AUTHZ_SELECT + " WHERE a.id = $1", authz_id)
    return _authorization(row) if row is not None else None


async def load_authorization_redeeming(
    pool: asyncpg.Pool, authz_id: int, redemption: Redemption
) -> tuple[Authorization | None, Redeemed]:
    """:func:`load_authorization` with the request's nonce redeemed in the same round trip."""
    row, redeemed = await fetch_redeeming(
        pool, _AUTHZ_SELECT + " WHERE a.id = $1", (authz_id,), redemption
    )
    return (_authorization(row) if row is not None else None), redeemed


#: A challenge's authorization with all its challenges, by the challenge's id ($1).
_CHALLENGE_SELECT = _AUTHZ_SELECT + " JOIN challenges x ON x.authz_id = a.id WHERE x.id = $1"


async def load_challenge(
    conn: asyncpg.Connection, challenge_id: int
) -> tuple[Challenge, Authorization] | None:
    """A challenge and its authorization in one round trip (the challenge is one of the
    authorization's, read in the same snapshot)."""
    row = await conn.fetchrow(_CHALLENGE_SELECT, challenge_id)
    return _challenge_of(row, challenge_id) if row is not None else None


async def load_challenge_redeeming(
    pool: asyncpg.Pool, challenge_id: int, redemption: Redemption
) -> tuple[tuple[Challenge, Authorization] | None, Redeemed]:
    """:func:`load_challenge` with the request's nonce redeemed in the same round trip."""
    row, redeemed = await fetch_redeeming(pool, _CHALLENGE_SELECT, (challenge_id,), redemption)
    return (_challenge_of(row, challenge_id) if row is not None else None), redeemed


def _challenge_of(row: asyncpg.Record, challenge_id: int) -> tuple[Challenge, Authorization]:
    authz = _authorization(row)
    [challenge] = [c for c in authz.challenges if c.id == challenge_id]
    return challenge, authz


def _authorization(row: asyncpg.Record) -> Authorization:
    challenges = [challenge_from_row(c) for c in row["challenge_rows"]]
    return Authorization(
        id=row["id"],
        account_id=row["account_id"],
        identifier=row["identifier"],
        wildcard=row["wildcard"],
        status=AuthorizationStatus(row["status"]),
        expires_at=row["expires_at"],
        validated_at=row["validated_at"],
        challenges=tuple(challenges),
    )


@dataclass(frozen=True)
class AuthzValidation:
    """How one authorization of an order was validated (for the CAA recheck at finalize)."""

    identifier: str
    wildcard: bool
    validated_at: datetime | None
    method: str | None


async def order_validations(pool: asyncpg.Pool, order_id: int) -> list[AuthzValidation]:
    rows = await pool.fetch(
        """SELECT a.identifier, a.wildcard, a.validated_at,
                  (SELECT c.type FROM challenges c WHERE c.authz_id = a.id AND c.status = 'valid'
                   ORDER BY c.validated_at DESC LIMIT 1) AS method
           FROM order_authorizations oa JOIN authorizations a ON a.id = oa.authz_id
           WHERE oa.order_id = $1 ORDER BY oa.position""",
        order_id,
    )
    return [
        AuthzValidation(r["identifier"], r["wildcard"], r["validated_at"], r["method"])
        for r in rows
    ]


#: :func:`order_validations` of the order row ``q`` as four arrays in position order, for a
#: statement that reads the order and its validations together (``LEFT JOIN LATERAL`` it).
VALIDATION_ARRAYS = """
    SELECT array_agg(a.identifier ORDER BY oa.position) AS validation_identifiers,
           array_agg(a.wildcard ORDER BY oa.position) AS validation_wildcards,
           array_agg(a.validated_at ORDER BY oa.position) AS validation_times,
           array_agg((SELECT c.type FROM challenges c WHERE c.authz_id = a.id
                      AND c.status = 'valid' ORDER BY c.validated_at DESC LIMIT 1)
                     ORDER BY oa.position) AS validation_methods
    FROM order_authorizations oa JOIN authorizations a ON a.id = oa.authz_id
    WHERE oa.order_id = q.id"""


def validations_from_arrays(row: Mapping[str, Any]) -> list[AuthzValidation]:
    """The validations :data:`VALIDATION_ARRAYS` read, as :func:`order_validations` gives them."""
    return [
        AuthzValidation(identifier, wildcard, at, method)
        for identifier, wildcard, at, method in zip(
            row["validation_identifiers"] or (),
            row["validation_wildcards"] or (),
            row["validation_times"] or (),
            row["validation_methods"] or (),
            strict=True,
        )
    ]
