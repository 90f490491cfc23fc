"""A validation's result in storage: the challenge, its authorization and the orders that
move with it, by the events of :mod:`acme_ca.acme.states`.  Kept apart from
:mod:`acme_ca.db.orders` (creating orders, starting and leasing challenges), whose
:meth:`~acme_ca.db.orders.OrderRepository.finish_validation` calls it for the RA.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from acme_ca.acme.jsontypes import JsonObject
from acme_ca.acme.states import (
    AUTHORIZATION_EVENT_SOURCES,
    AUTHORIZATIONS,
    AuthorizationEvent,
    OrderEvent,
    authorizations_event,
    authz_status,
)
from acme_ca.acme.status import AuthorizationStatus
from acme_ca.db.audit import current_request_id, record_event
from acme_ca.db.authorizations import ValidationOutcome
from acme_ca.db.order_events import advance_locked_orders, order_event_args, order_move

#: A validation's result (issue 20): the challenge, only while ``processing`` ($1-$6), and
#: its authorization by the event's table ($7 target, $8 sources; $9 valid: validated now,
#: expiring at $10).  ``account_id`` is null when the authorization had left the sources.
_RECORD_VALIDATION = """
    WITH c AS (
        UPDATE challenges SET status = $2, validated_at = $3, error = $4,
                              validation_records = validation_records || $5::jsonb,
                              lease_until = NULL, updated_at = $6
        WHERE id = $1 AND status = 'processing'
        RETURNING authz_id),
    a AS (
        UPDATE authorizations z SET status = $7,
               validated_at = CASE WHEN $9::boolean THEN $6 ELSE z.validated_at END,
               expires_at = CASE WHEN $9::boolean THEN $10::timestamptz ELSE z.expires_at END,
               updated_at = $6
        FROM c WHERE z.id = c.authz_id AND z.status = ANY($8::text[])
        RETURNING z.account_id)
    SELECT c.authz_id, (SELECT a.account_id FROM a) AS account_id FROM c
"""

#: Then, in a statement of its own (see record_validation_result): the orders on authorization $1
#: still in $7 (the sources of the authorization events) locked in id order (``l``), those
#: whose event is known moved by it (``o``, $2-$6 of db/order_events.order_event_args): all
#: of them when the authorization failed ($8), else those with no other authorization; and
#: the audit row ($9-$12, ``orders_changed`` added), last, unless some order is ``undecided``
#: (others of its authorizations to read after the lock: the caller does, then audits).
_LOCK_VALIDATED_ORDERS = """
    WITH l AS (
        SELECT o.id, $8::boolean
                     OR (SELECT count(*) FROM order_authorizations y WHERE y.order_id = o.id) = 1
                     AS decided
        FROM orders o JOIN order_authorizations x ON x.order_id = o.id
        WHERE x.authz_id = $1 AND o.status = ANY($7::text[])
        ORDER BY o.id FOR UPDATE OF o),
    o AS ("""
_MOVE_DECIDED = order_move("ARRAY(SELECT id FROM l WHERE decided)")
_AUDIT_VALIDATION = """),
    e AS (
        INSERT INTO audit_events (at, event, actor, account_id, order_id, request_id, details)
        SELECT $4, $9::text, 'va', $10::bigint, NULL, $11::text,
               $12::jsonb || jsonb_build_object('orders_changed',
                   (SELECT coalesce(jsonb_agg(o.id ORDER BY o.id), '[]'::jsonb) FROM o))
        WHERE NOT EXISTS (SELECT 1 FROM l WHERE NOT l.decided))
    SELECT ARRAY(SELECT o.id FROM o ORDER BY o.id) AS moved,
           ARRAY(SELECT l.id FROM l WHERE NOT l.decided ORDER BY l.id) AS undecided
"""
_ADVANCE_VALIDATED = _LOCK_VALIDATED_ORDERS + _MOVE_DECIDED + _AUDIT_VALIDATION


async def record_validation_result(
    pool: asyncpg.Pool, challenge_id: int, outcome: ValidationOutcome, now: datetime
) -> list[int]:
    """Write a validation result and move the authorization and its orders along.

    Returns the ids of orders whose status changed; ``[]`` if another run finished first.
    Two statements in the usual case (issue 20): the challenge with its authorization,
    then the orders' locks, their moves and the audit row.  They stay apart because the
    orders are looked up in a statement that starts after the authorization's row lock
    was granted, so an order created meanwhile on this authorization (which it held
    share-locked) is seen and moved.
    """
    error = None if outcome.error is None else outcome.error.to_json()
    records = list(outcome.records)
    if outcome.valid:
        if outcome.authz_expires_at is None:
            raise ValueError("a valid authorization needs the end of its reuse period")
        event = AuthorizationEvent.VALIDATED
        # What an order whose only authorization this is amounts to now.
        alone = authorizations_event(
            [authz_status(AuthorizationStatus.VALID, outcome.authz_expires_at, now)]
        )
    else:
        event = AuthorizationEvent.VALIDATION_FAILED
        alone = OrderEvent.AUTHORIZATION_FAILED
    assert alone is not None  # one valid or invalid authorization always amounts to one
    failed = alone is OrderEvent.AUTHORIZATION_FAILED
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            _RECORD_VALIDATION,
            challenge_id,
            "valid" if outcome.valid else "invalid",
            now if outcome.valid else None,
            error,
            records,
            now,
            AUTHORIZATIONS.target(event),
            list(AUTHORIZATIONS.sources(event)),
            outcome.valid,
            outcome.authz_expires_at,
        )
        if row is None or row["account_id"] is None:
            return []
        authz_id, account_id = row["authz_id"], row["account_id"]
        details: JsonObject = {
            "challenge_id": challenge_id,
            "authz_id": authz_id,
            "records": records,
            "error": error,
        }
        args = order_event_args(alone, [], now, outcome.error if failed else None)
        moved = await conn.fetchrow(
            _ADVANCE_VALIDATED,
            authz_id,
            *args[1:],
            list(AUTHORIZATION_EVENT_SOURCES),
            failed,
            "challenge.valid" if outcome.valid else "challenge.invalid",
            account_id,
            current_request_id(),
            details,
        )
        changed: list[int] = list(moved["moved"])
        if moved["undecided"]:
            # Orders with other authorizations, on a success: read those after the
            # lock (advance_locked_orders), then the audit row with every move.
            changed = sorted(
                changed + await advance_locked_orders(conn, moved["undecided"], now, outcome.error)
            )
            await record_event(
                conn,
                "challenge.valid",
                at=now,
                actor="va",
                account_id=account_id,
                details={**details, "orders_changed": changed},
            )
    return changed
