"""The status values of ACME objects (RFC 8555 §7.1.6), one ``StrEnum`` per object.

``StrEnum`` members compare equal to their wire strings, so a member can be written to the
database or a JSON body as is, and a stored string can be turned back with ``OrderStatus(s)``.
"""

from __future__ import annotations

from enum import StrEnum


class AccountStatus(StrEnum):
    """RFC 8555 §7.1.6: an account is valid until deactivated (client) or revoked (server)."""

    VALID = "valid"
    DEACTIVATED = "deactivated"
    REVOKED = "revoked"


class OrderStatus(StrEnum):
    """RFC 8555 §7.1.6, Figure 10."""

    PENDING = "pending"
    READY = "ready"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"


class AuthorizationStatus(StrEnum):
    """RFC 8555 §7.1.6, Figure 9."""

    PENDING = "pending"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    EXPIRED = "expired"
    REVOKED = "revoked"


class ChallengeStatus(StrEnum):
    """RFC 8555 §7.1.6, Figure 8."""

    PENDING = "pending"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"
