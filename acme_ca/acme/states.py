"""The order and authorization state machines (RFC 8555 §7.1.6), each one table.

Every room reads the same tables: ``db/`` applies an event with a conditional update whose
allowed source statuses are :meth:`StateMachine.sources` of that event (so two writers racing
for one row cannot both win), and a read derives what the client sees from the stored status,
the clock and the authorizations (:func:`order_status`) without writing anything.  Expiry is
such a derived event: an order or authorization past its ``expires`` *is* expired whatever its
row says, so no GET has to persist it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from acme_ca.acme.status import AuthorizationStatus, OrderStatus

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


class StateMachine(Generic[S, E]):
    """A ``(status, event) → status`` table; an event has one target whatever its source."""

    def __init__(self, table: Mapping[tuple[S, E], S]) -> None:
        self.table: Mapping[tuple[S, E], S] = MappingProxyType(dict(table))
        targets: dict[E, S] = {}
        sources: dict[E, list[S]] = {}
        for (source, event), target in self.table.items():
            if targets.setdefault(event, target) != target:
                raise ValueError(f"event {event} leads to more than one status")
            sources.setdefault(event, []).append(source)
        self._targets = targets
        self._sources = {e: tuple(sorted(s)) for e, s in sources.items()}

    def next(self, status: S, event: E) -> S | None:
        """The status ``event`` moves ``status`` to, or None if it does not apply there."""
        return self.table.get((status, event))

    def sources(self, event: E) -> tuple[S, ...]:
        """The statuses ``event`` applies to: the allowed states of its conditional update."""
        return self._sources[event]

    def target(self, event: E) -> S:
        return self._targets[event]

    def apply(self, status: S, events: Iterable[E]) -> S:
        """``status`` moved by each applicable event in turn (inapplicable ones are no-ops)."""
        for event in events:
            status = self.table.get((status, event), status)
        return status


class OrderEvent(StrEnum):
    #: Every authorization of the order is valid.
    AUTHORIZATIONS_VALID = "authorizations_valid"
    #: One of its authorizations is invalid, deactivated, expired or revoked.
    AUTHORIZATION_FAILED = "authorization_failed"
    #: The order's own ``expires`` has passed (derived on read, never stored by a read).
    EXPIRED = "expired"
    #: Its account was deactivated (§7.3.6).
    ACCOUNT_DEACTIVATED = "account_deactivated"
    #: Finalize accepted the CSR and queued the issuance job (§7.4).
    FINALIZED = "finalized"
    #: The signing worker stored the certificate.
    ISSUED = "issued"
    #: The signing worker gave up (a re-check or the CA refused, or too many faults).
    ISSUANCE_FAILED = "issuance_failed"


class AuthorizationEvent(StrEnum):
    #: A challenge validated (§7.5.1).
    VALIDATED = "validated"
    #: A challenge failed: the authorization fails with it (one attempt per authorization).
    VALIDATION_FAILED = "validation_failed"
    #: The client deactivated it (§7.5.2).
    DEACTIVATED = "deactivated"
    #: Its ``expires`` has passed (derived on read).
    EXPIRED = "expired"


_O = OrderStatus
_OE = OrderEvent

#: RFC 8555 §7.1.6 Figure 10 (ACME-ORD-3), plus §7.3.6 for a deactivated account.
ORDERS: StateMachine[OrderStatus, OrderEvent] = StateMachine(
    {
        (_O.PENDING, _OE.AUTHORIZATIONS_VALID): _O.READY,
        (_O.PENDING, _OE.AUTHORIZATION_FAILED): _O.INVALID,
        (_O.READY, _OE.AUTHORIZATION_FAILED): _O.INVALID,
        (_O.PENDING, _OE.EXPIRED): _O.INVALID,
        (_O.READY, _OE.EXPIRED): _O.INVALID,
        (_O.PENDING, _OE.ACCOUNT_DEACTIVATED): _O.INVALID,
        (_O.READY, _OE.ACCOUNT_DEACTIVATED): _O.INVALID,
        (_O.READY, _OE.FINALIZED): _O.PROCESSING,
        (_O.PROCESSING, _OE.ISSUED): _O.VALID,
        (_O.PROCESSING, _OE.ISSUANCE_FAILED): _O.INVALID,
    }
)

_A = AuthorizationStatus
_AE = AuthorizationEvent

#: RFC 8555 §7.1.6 Figure 9 (ACME-AUTHZ-1). Nothing here revokes an authorization.
AUTHORIZATIONS: StateMachine[AuthorizationStatus, AuthorizationEvent] = StateMachine(
    {
        (_A.PENDING, _AE.VALIDATED): _A.VALID,
        (_A.PENDING, _AE.VALIDATION_FAILED): _A.INVALID,
        (_A.PENDING, _AE.DEACTIVATED): _A.DEACTIVATED,
        (_A.VALID, _AE.DEACTIVATED): _A.DEACTIVATED,
        (_A.PENDING, _AE.EXPIRED): _A.EXPIRED,
        (_A.VALID, _AE.EXPIRED): _A.EXPIRED,
    }
)

#: Authorization statuses that can never authorize issuance again.
AUTHORIZATION_FAILED = frozenset({_A.INVALID, _A.DEACTIVATED, _A.EXPIRED, _A.REVOKED})

#: What the authorizations imply for an order: the sources of either event.
AUTHORIZATION_EVENT_SOURCES: tuple[OrderStatus, ...] = tuple(
    sorted(
        set(ORDERS.sources(_OE.AUTHORIZATIONS_VALID))
        | set(ORDERS.sources(_OE.AUTHORIZATION_FAILED))
    )
)


def authz_status(status: str, expires_at: datetime, now: datetime) -> AuthorizationStatus:
    """The authorization's status at ``now``: pending and valid ones lapse into expired."""
    stored = AuthorizationStatus(status)
    if expires_at <= now:
        return AUTHORIZATIONS.apply(stored, [_AE.EXPIRED])
    return stored


def authorizations_event(statuses: Iterable[AuthorizationStatus]) -> OrderEvent | None:
    """The event an order's authorizations (statuses at the same instant) amount to."""
    seen = list(statuses)
    if any(s in AUTHORIZATION_FAILED for s in seen):
        return _OE.AUTHORIZATION_FAILED
    if seen and all(s == _A.VALID for s in seen):
        return _OE.AUTHORIZATIONS_VALID
    return None


def order_events(
    expires_at: datetime, authzs: Sequence[tuple[str, datetime]], now: datetime
) -> list[OrderEvent]:
    """The events time and the authorizations (``(status, expires_at)`` each) imply at ``now``."""
    events = [_OE.EXPIRED] if expires_at <= now else []
    event = authorizations_event(authz_status(s, e, now) for s, e in authzs)
    if event is not None:
        events.append(event)
    return events


def order_status(
    stored: str, expires_at: datetime, authzs: Sequence[tuple[str, datetime]], now: datetime
) -> OrderStatus:
    """The order's status at ``now``: the stored one moved by the events it implies."""
    return ORDERS.apply(OrderStatus(stored), order_events(expires_at, authzs, now))
