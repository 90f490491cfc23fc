"""Order and authorization status, derived rather than hoped for (RFC 8555 §7.1.6).

An authorization past its expiry *is* expired whatever its row says; an order's pending/ready
status follows from its authorizations; processing, valid and invalid are sticky, because
only the issuance path and failures set them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

AUTHZ_FINAL_BAD = frozenset({"invalid", "deactivated", "expired", "revoked"})
ORDER_STICKY = frozenset({"processing", "valid", "invalid"})


@dataclass(frozen=True)
class AuthzState:
    status: str
    expires_at: datetime


def authz_status(status: str, expires_at: datetime, now: datetime) -> str:
    """The authorization's status at ``now`` (pending and valid ones lapse into expired)."""
    if status in ("pending", "valid") and expires_at <= now:
        return "expired"
    return status


def order_status(
    stored: str, expires_at: datetime, authzs: Sequence[AuthzState], now: datetime
) -> str:
    """The order's status at ``now`` from its stored status and its authorizations."""
    if stored in ORDER_STICKY:
        return stored
    if expires_at <= now:
        return "invalid"
    statuses = [authz_status(a.status, a.expires_at, now) for a in authzs]
    if any(s in AUTHZ_FINAL_BAD for s in statuses):
        return "invalid"
    if statuses and all(s == "valid" for s in statuses):
        return "ready"
    return "pending"
