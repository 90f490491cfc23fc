"""Accounts: each state change is one transaction with its audit row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from acme_ca.acme import problems
from acme_ca.acme.jwk import Jwk, parse_stored_jwk
from acme_ca.acme.states import ORDERS, OrderEvent
from acme_ca.acme.status import AccountStatus
from acme_ca.db.audit import record_event
from acme_ca.db.order_events import apply_order_event


@dataclass(frozen=True)
class Account:
    id: int
    #: RFC 7638 thumbprint of ``jwk``, as stored (the unique key of the account).
    key_thumbprint: bytes
    #: The account key, parsed once here from the JWK stored as the client sent it
    #: (josepy's type; :func:`parse_stored_jwk` reads keys stored before the encoding rules).
    jwk: Jwk
    contact: tuple[str, ...]
    status: AccountStatus
    tos_agreed_at: datetime | None
    eab_kid: str | None
    created_at: datetime


class AccountKeyInUse(Exception):
    """The key already belongs to ``account_id`` (unique thumbprint)."""

    def __init__(self, account_id: int) -> None:
        super().__init__(f"key belongs to account {account_id}")
        self.account_id = account_id


class EabKeyUnavailable(Exception):
    """The EAB key is unknown, revoked, or already bound to another account."""


class AccountStateChanged(Exception):
    """The account was changed concurrently (for example deactivated or re-keyed)."""


def _to_account(row: asyncpg.Record) -> Account:
    return Account(
        id=row["id"],
        key_thumbprint=bytes(row["key_thumbprint"]),
        jwk=parse_stored_jwk(row["jwk"]),
        contact=tuple(row["contact"]),
        status=AccountStatus(row["status"]),
        tos_agreed_at=row["tos_agreed_at"],
        eab_kid=row["eab_kid"],
        created_at=row["created_at"],
    )


class AccountRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, account_id: int) -> Account | None:
        row = await self._pool.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
        return _to_account(row) if row else None

    async def get_versioned(self, account_id: int) -> tuple[Account, str] | None:
        """The account and its row version (``xmin``, new on every UPDATE of the row), which
        :meth:`NonceRepository.redeem_for_account` returns again for a front end's cache."""
        row = await self._pool.fetchrow(
            "SELECT *, xmin::text AS row_version FROM accounts WHERE id = $1", account_id
        )
        return (_to_account(row), row["row_version"]) if row else None

    async def get_by_thumbprint(self, thumbprint: bytes) -> Account | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM accounts WHERE key_thumbprint = $1", thumbprint
        )
        return _to_account(row) if row else None

    async def create(
        self,
        *,
        jwk: Jwk,
        contact: tuple[str, ...],
        tos_agreed: bool,
        eab_kid: str | None,
        now: datetime,
    ) -> Account:
        """Insert the account and bind its EAB key atomically.

        The key is stored as its JWK members and found again by their RFC 7638 thumbprint.
        Raises :class:`AccountKeyInUse` when another request registered the key first and
        :class:`EabKeyUnavailable` when the EAB key cannot be bound.
        """
        thumbprint = jwk.thumbprint()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    """INSERT INTO accounts (key_thumbprint, jwk, contact, status,
                                             tos_agreed_at, created_at, updated_at)
                       VALUES ($1, $2, $3, 'valid', $4, $5, $5) RETURNING *""",
                    thumbprint,
                    jwk.to_json(),
                    list(contact),
                    now if tos_agreed else None,
                    now,
                )
                if eab_kid is not None:
                    bound = await conn.execute(
                        """UPDATE eab_keys SET account_id = $2, bound_at = $3
                           WHERE kid = $1 AND account_id IS NULL AND revoked_at IS NULL""",
                        eab_kid,
                        row["id"],
                        now,
                    )
                    if not bound.endswith(" 1"):
                        raise EabKeyUnavailable(eab_kid)
                    row = await conn.fetchrow(
                        "UPDATE accounts SET eab_kid = $2 WHERE id = $1 RETURNING *",
                        row["id"],
                        eab_kid,
                    )
                await record_event(
                    conn,
                    "account.created",
                    at=now,
                    actor=f"account:{row['id']}",
                    account_id=row["id"],
                    details={
                        "contact": list(contact),
                        "eab_kid": eab_kid,
                        "key_thumbprint": thumbprint.hex(),
                    },
                )
        except asyncpg.UniqueViolationError:
            existing = await self.get_by_thumbprint(thumbprint)
            if existing is None:  # pragma: no cover - unique on eab_kid; treated as unavailable
                raise EabKeyUnavailable(eab_kid or "") from None
            raise AccountKeyInUse(existing.id) from None
        return _to_account(row)

    async def update_contact(
        self, account_id: int, contact: tuple[str, ...], now: datetime
    ) -> Account:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE accounts SET contact = $2, updated_at = $3 "
                "WHERE id = $1 AND status = 'valid' RETURNING *",
                account_id,
                list(contact),
                now,
            )
            if row is None:
                raise AccountStateChanged
            await record_event(
                conn,
                "account.updated",
                at=now,
                actor=f"account:{account_id}",
                account_id=account_id,
                details={"contact": list(contact)},
            )
        return _to_account(row)

    async def deactivate(self, account_id: int, now: datetime) -> Account:
        """Deactivate and cancel the account's unfinished orders (RFC 8555 §7.3.6)."""
        error = problems.unauthorized("account was deactivated")
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE accounts SET status = 'deactivated', updated_at = $2 "
                "WHERE id = $1 AND status = 'valid' RETURNING *",
                account_id,
                now,
            )
            if row is None:
                raise AccountStateChanged
            event = OrderEvent.ACCOUNT_DEACTIVATED
            unfinished = await conn.fetch(
                "SELECT id FROM orders WHERE account_id = $1 AND status = ANY($2::text[]) "
                "ORDER BY id FOR UPDATE",
                account_id,
                list(ORDERS.sources(event)),
            )
            cancelled = await apply_order_event(
                conn, event, [r["id"] for r in unfinished], now, error=error
            )
            await record_event(
                conn,
                "account.deactivated",
                at=now,
                actor=f"account:{account_id}",
                account_id=account_id,
                details={"orders_cancelled": len(cancelled)},
            )
        return _to_account(row)

    async def change_key(
        self,
        account_id: int,
        *,
        old_thumbprint: bytes,
        new_jwk: Jwk,
        now: datetime,
    ) -> Account:
        """Swap the key if it is still ``old_thumbprint``; :class:`AccountKeyInUse` on conflict."""
        new_thumbprint = new_jwk.thumbprint()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    """UPDATE accounts SET jwk = $3, key_thumbprint = $4, updated_at = $5
                       WHERE id = $1 AND key_thumbprint = $2 AND status = 'valid'
                       RETURNING *""",
                    account_id,
                    old_thumbprint,
                    new_jwk.to_json(),
                    new_thumbprint,
                    now,
                )
                if row is None:
                    raise AccountStateChanged
                await record_event(
                    conn,
                    "account.key_changed",
                    at=now,
                    actor=f"account:{account_id}",
                    account_id=account_id,
                    details={
                        "old_thumbprint": old_thumbprint.hex(),
                        "new_thumbprint": new_thumbprint.hex(),
                    },
                )
        except asyncpg.UniqueViolationError:
            holder = await self.get_by_thumbprint(new_thumbprint)
            raise AccountKeyInUse(holder.id if holder else 0) from None
        return _to_account(row)

    async def order_ids(
        self, account_id: int, *, after_id: int, limit: int, now: datetime
    ) -> list[int]:
        """One page of the account's order ids, oldest first, for the ``orders`` list.

        RFC 8555 §7.1.2.1: the list SHOULD NOT include invalid orders, so those stored as
        invalid and pending or ready ones past ``expires`` (invalid from then on) are left
        out; an order made invalid by a failed authorization is only known on reading it.
        """
        rows = await self._pool.fetch(
            """SELECT id FROM orders
               WHERE account_id = $1 AND id > $2 AND status <> 'invalid'
                 AND (status NOT IN ('pending', 'ready') OR expires_at > $4)
               ORDER BY id LIMIT $3""",
            account_id,
            after_id,
            limit,
            now,
        )
        return [r["id"] for r in rows]
