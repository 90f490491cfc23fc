"""The audit trail: one row per state change, written in the same transaction as the change.

The request id comes from the structlog context the web layer bound, so an audit row and the
log events of the request that caused it carry the same id.

Each row is chained to the one before in its chain (db/audit_chain.py) by a trigger that
holds the row lock of that chain's ``audit_chain_head`` row until the transaction ends, so
audit writers of one chain take turns (a transaction's rows all join its first row's chain,
so it holds one head at most). Write audit rows after the transaction's other row locks
(UPDATE, SELECT ... FOR UPDATE) are taken: a transaction that holds a head and then waits
for a row another audit writer of that chain has locked would deadlock with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

import asyncpg
import structlog

from acme_ca.acme.jsontypes import JsonObject, JsonValue


class AuditRow(TypedDict):
    """One ``audit_events`` row of an account, as :func:`events_for_account` reads it."""

    at: datetime
    event: str
    actor: str
    order_id: int | None
    request_id: str | None
    details: dict[str, JsonValue]


def current_request_id() -> str | None:
    """The request id the web layer bound (None outside a request, as in the worker); also
    for statements that write their audit row themselves (db/issuance.py)."""
    request_id: str | None = structlog.contextvars.get_contextvars().get("request_id")
    return request_id


async def record_event(
    conn: asyncpg.Connection,
    event: str,
    *,
    at: datetime,
    actor: str,
    account_id: int | None = None,
    order_id: int | None = None,
    details: JsonObject | None = None,
) -> None:
    request_id = current_request_id()
    await conn.execute(
        """INSERT INTO audit_events (at, event, actor, account_id, order_id, request_id, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        at,
        event,
        actor,
        account_id,
        order_id,
        request_id,
        dict(details or {}),
    )


async def events_for_account(pool: asyncpg.Pool, account_id: int) -> list[AuditRow]:
    """Audit rows of one account, oldest first (for operators and tests)."""
    rows = await pool.fetch(
        "SELECT at, event, actor, order_id, request_id, details FROM audit_events "
        "WHERE account_id = $1 ORDER BY id",
        account_id,
    )
    return [
        AuditRow(
            at=r["at"],
            event=r["event"],
            actor=r["actor"],
            order_id=r["order_id"],
            request_id=r["request_id"],
            details=r["details"],
        )
        for r in rows
    ]
