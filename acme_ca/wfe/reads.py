"""What the front end reads without the RA: read-only views of the repositories.

Handlers answer POST-as-GET and build responses from these (as Boulder's WFE holds a
read-only storage client); every write goes through an RA authority.  ``main/app.py`` hands
the ``db/`` repositories, which satisfy these protocols structurally, so a handler cannot
reach a write method through them (mypy refuses it).  The ``*_redeeming`` reads also spend
the request's nonce in their round trip (``wfe/verify.verify_post_reading``), the one write a
read-only request makes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from acme_ca.db.accounts import Account
from acme_ca.db.authorizations import Authorization, AuthzValidation, Challenge
from acme_ca.db.certificates import CertificateRecord
from acme_ca.db.nonces import Redeemed, Redemption
from acme_ca.db.order_events import Order


class AccountReads(Protocol):
    """An account for the ``kid`` check, and the account's ``orders`` list."""

    async def get_versioned(self, account_id: int) -> tuple[Account, str] | None: ...

    async def order_ids(
        self, account_id: int, *, after_id: int, limit: int, now: datetime
    ) -> list[int]: ...


class OrderReads(Protocol):
    """Orders, authorizations and challenges as stored (statuses derived on read)."""

    async def get_order(self, order_id: int) -> Order | None: ...

    async def get_order_redeeming(
        self, order_id: int, redemption: Redemption
    ) -> tuple[Order | None, Redeemed]: ...

    async def get_order_to_finalize_redeeming(
        self, order_id: int, redemption: Redemption
    ) -> tuple[tuple[Order, list[AuthzValidation]] | None, Redeemed]: ...

    async def get_authorization(self, authz_id: int) -> Authorization | None: ...

    async def get_authorization_redeeming(
        self, authz_id: int, redemption: Redemption
    ) -> tuple[Authorization | None, Redeemed]: ...

    async def get_challenge(self, challenge_id: int) -> tuple[Challenge, Authorization] | None: ...

    async def get_challenge_redeeming(
        self, challenge_id: int, redemption: Redemption
    ) -> tuple[tuple[Challenge, Authorization] | None, Redeemed]: ...


class CertificateReads(Protocol):
    """Issued certificates, by id (download) and by serial (ACME Renewal Information)."""

    async def get(self, certificate_id: int) -> CertificateRecord | None: ...

    async def get_redeeming(
        self, certificate_id: int, redemption: Redemption
    ) -> tuple[CertificateRecord | None, Redeemed]: ...

    async def get_by_serial(self, serial: str) -> CertificateRecord | None: ...
