"""An order row, and the statements that move orders by the events of their state machine.

Order statuses move only by the events of :data:`acme_ca.acme.states.ORDERS`, each applied
by one conditional update whose allowed states are the event's sources in that table, with
the moved rows returned whole (``RETURNING``); :func:`order_event_statement` lets another
repository (the issuance jobs, the accounts) put its own writes in the same statement.  Kept
apart from :mod:`acme_ca.db.orders` (creating orders and challenges) and
:mod:`acme_ca.db.validation_results` (validations) because every repository that changes an
order's status goes through here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from acme_ca.acme.problems import Identifier, Problem
from acme_ca.acme.states import (
    AUTHORIZATION_EVENT_SOURCES,
    ORDERS,
    OrderEvent,
    authorizations_event,
    authz_status,
)
from acme_ca.acme.status import AuthorizationStatus, OrderStatus


@dataclass(frozen=True)
class Order:
    """An order as stored, with its certificate's id and its authorizations' states."""

    id: int
    account_id: int
    #: As stored: :func:`acme_ca.acme.states.order_status` gives it at a given time.
    status: OrderStatus
    identifiers: tuple[Identifier, ...]
    expires_at: datetime
    #: Why the order became invalid, if it is stored invalid.
    error: Problem | None
    #: The certificate profile it is issued under (acme_ca.profiles; `dv` before profiles).
    profile: str
    created_at: datetime
    authz_ids: tuple[int, ...]
    #: (status, expires_at) of each authorization, in ``authz_ids`` order.
    authz_states: tuple[tuple[AuthorizationStatus, datetime], ...]
    certificate_id: int | None
    #: RFC 9773 §5: the certID of the certificate this order replaces, as the client sent it.
    replaces: str | None = None


#: An order row ``o`` with its certificate and its authorizations' ids, statuses and expiries
#: (in position order); ``o`` may be the table or the ``RETURNING`` of an update.
_ORDER_COLUMNS = """
    SELECT o.*,
           (SELECT c.id FROM certificates c WHERE c.order_id = o.id ORDER BY c.id LIMIT 1)
               AS certificate_id,
           coalesce(az.ids, '{}') AS authz_ids,
           coalesce(az.statuses, '{}') AS authz_statuses,
           coalesce(az.expiries, '{}') AS authz_expiries
"""
_AUTHZ_ARRAYS = """
    LEFT JOIN LATERAL (
        SELECT array_agg(a.id ORDER BY oa.position) AS ids,
               array_agg(a.status ORDER BY oa.position) AS statuses,
               array_agg(a.expires_at ORDER BY oa.position) AS expiries
        FROM order_authorizations oa JOIN authorizations a ON a.id = oa.authz_id
        WHERE oa.order_id = o.id) az ON true
"""
#: Every order column, as :func:`order_from_row` reads them (add ``WHERE`` on ``o``).
ORDER_SELECT = _ORDER_COLUMNS + " FROM orders o " + _AUTHZ_ARRAYS

#: One order event: to the table's target ($2), only from its sources ($5) and not once the
#: order has expired out of them ($6: the sources of EXPIRED); the moved rows come back whole.
_MOVE = """
        UPDATE orders SET status = $2, error = coalesce(error, $3), updated_at = $4
        WHERE id = ANY({ids}) AND status = ANY($5::text[])
          AND NOT (status = ANY($6::text[]) AND expires_at <= $4)
        RETURNING *"""
_MOVE_ORDERS = "\n    WITH o AS (" + _MOVE.format(ids="$1::bigint[]") + ")\n"
_APPLY_ORDER_EVENT = _MOVE_ORDERS + _ORDER_COLUMNS + " FROM o " + _AUTHZ_ARRAYS + " ORDER BY o.id"


#: :func:`apply_order_event`'s move alone (``WITH o AS (...)``, $1-$6 of
#: :func:`order_event_args`), for a statement that selects something else than the orders.
ORDER_EVENT_CTE: Final = _MOVE_ORDERS


def order_move(ids: str) -> str:
    """The order event's ``UPDATE ... RETURNING *`` ($2-$6 of :func:`order_event_args`) for
    the orders whose ids the array expression ``ids`` gives, computed in the statement."""
    return _MOVE.format(ids=ids)


def order_event_statement(more_ctes: str) -> str:
    """:func:`apply_order_event`'s statement with ``more_ctes`` (``, name AS (...)`` reading
    the moved orders ``o``) between the move and the select of the moved orders: a state
    change and what goes with it (its audit row, a job) in one statement and one round trip.
    Its $1-$6 are :func:`order_event_args`; ``more_ctes`` numbers its own from $7."""
    return _MOVE_ORDERS + more_ctes + _ORDER_COLUMNS + " FROM o " + _AUTHZ_ARRAYS + " ORDER BY o.id"


def order_event_args(
    event: OrderEvent, order_ids: Sequence[int], now: datetime, error: Problem | None = None
) -> list[Any]:
    """$1-$6 of :func:`order_event_statement` (and of :func:`apply_order_event`)."""
    return [
        list(order_ids),
        ORDERS.target(event),
        None if error is None else error.to_json(),
        now,
        list(ORDERS.sources(event)),
        list(ORDERS.sources(OrderEvent.EXPIRED)),
    ]


def order_from_row(row: Mapping[str, Any]) -> Order:
    """An order as :func:`order_event_statement` (or :data:`ORDER_SELECT`) returns it."""
    error = row["error"]
    return Order(
        id=row["id"],
        account_id=row["account_id"],
        status=OrderStatus(row["status"]),
        identifiers=tuple(Identifier.from_json(i) for i in row["identifiers"]),
        expires_at=row["expires_at"],
        error=None if error is None else Problem.from_json(error),
        profile=row["profile"],
        created_at=row["created_at"],
        authz_ids=tuple(row["authz_ids"]),
        authz_states=tuple(
            (AuthorizationStatus(s), e)
            for s, e in zip(row["authz_statuses"], row["authz_expiries"], strict=True)
        ),
        certificate_id=row["certificate_id"],
        replaces=row["replaces"],
    )


async def apply_order_event(
    conn: asyncpg.Connection,
    event: OrderEvent,
    order_ids: Sequence[int],
    now: datetime,
    *,
    error: Problem | None = None,
) -> list[Order]:
    """Move the orders ``event`` applies to (its sources in :data:`ORDERS`) to its target.

    Orders in any other status are left alone, so of two writers racing for an order only the
    first moves it; so is an order that expired out of a source status by ``now`` (its stored
    ``ready`` is ``invalid`` to every reader, so it cannot be finalized).  ``error`` is stored
    unless the order has one.  Returns the moved orders as the update left them.
    """
    rows = await conn.fetch(_APPLY_ORDER_EVENT, *order_event_args(event, order_ids, now, error))
    return [order_from_row(r) for r in rows]


async def advance_orders(
    conn: asyncpg.Connection, authz_id: int, now: datetime, error: Problem | None
) -> list[int]:
    """Apply to each order using ``authz_id`` the event its authorizations now amount to.

    The orders are locked (in id order) before their authorizations are read, each read a
    statement of its own: of two validations finishing the last two authorizations of one
    order, the second waits for the first and sees its authorization valid.  Returns the ids
    of the orders that moved; ``error`` goes to those that became invalid.
    """
    locked = await conn.fetch(
        """SELECT o.id FROM orders o JOIN order_authorizations x ON x.order_id = o.id
           WHERE x.authz_id = $1 AND o.status = ANY($2::text[])
           ORDER BY o.id FOR UPDATE OF o""",
        authz_id,
        list(AUTHORIZATION_EVENT_SOURCES),
    )
    if not locked:
        return []
    return await advance_locked_orders(conn, [r["id"] for r in locked], now, error)


async def advance_locked_orders(
    conn: asyncpg.Connection, order_ids: Sequence[int], now: datetime, error: Problem | None
) -> list[int]:
    """:func:`advance_orders` for orders this transaction has locked already: their
    authorizations are read in a statement after the lock, then each order is moved by
    the event they amount to.  Returns the ids of the orders that moved."""
    statuses: dict[int, list[AuthorizationStatus]] = {}
    for r in await conn.fetch(
        """SELECT x.order_id, a.status, a.expires_at
           FROM order_authorizations x JOIN authorizations a ON a.id = x.authz_id
           WHERE x.order_id = ANY($1::bigint[])""",
        list(order_ids),
    ):
        statuses.setdefault(r["order_id"], []).append(
            authz_status(r["status"], r["expires_at"], now)
        )
    by_event: dict[OrderEvent, list[int]] = {}
    for order_id, seen in statuses.items():
        event = authorizations_event(seen)
        if event is not None:
            by_event.setdefault(event, []).append(order_id)
    moved: list[int] = []
    for event, ids in by_event.items():
        failed = event is OrderEvent.AUTHORIZATION_FAILED
        orders = await apply_order_event(conn, event, ids, now, error=error if failed else None)
        moved.extend(o.id for o in orders)
    return sorted(moved)
