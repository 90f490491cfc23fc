"""ARI's ``replaces`` (RFC 9773 §5) in storage: the accepted replacement a new order
carries, and the order that already replaces a certificate, which refuses a second one.
:meth:`acme_ca.db.orders.OrderRepository.create_order` checks it in the order's own
transaction, with the replaced certificate's row locked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from acme_ca.acme.states import order_status
from acme_ca.acme.status import OrderStatus
from acme_ca.db.order_events import ORDER_SELECT, order_from_row


@dataclass(frozen=True)
class Replacement:
    """An accepted ``replaces`` (RFC 9773 §5): the certID and the certificate it names."""

    cert_id: str
    certificate_id: int
    account_id: int


class AlreadyReplaced(Exception):
    """Another order that is not invalid already replaces the certificate."""

    def __init__(self, order_id: int) -> None:
        super().__init__(f"already replaced by order {order_id}")
        self.order_id = order_id


async def replacing_order(
    conn: asyncpg.Connection, replaces: Replacement, now: datetime
) -> int | None:
    """The first order of the account that replaces the certificate and is not invalid at
    ``now`` (RFC 9773 §5), its status derived as any read derives it."""
    # Replacements come from the certificate's own account (the RA checks it), so the
    # account index finds every candidate.
    rows = await conn.fetch(
        ORDER_SELECT + " WHERE o.account_id = $1 AND o.replaces = $2 AND o.status <> $3"
        " ORDER BY o.id",
        replaces.account_id,
        replaces.cert_id,
        OrderStatus.INVALID,
    )
    for row in rows:
        order = order_from_row(row)
        if order_status(order.status, order.expires_at, order.authz_states, now) != (
            OrderStatus.INVALID
        ):
            return order.id
    return None
