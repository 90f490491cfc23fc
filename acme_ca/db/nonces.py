"""Nonce storage: the shared HMAC secret, and the redemption record that makes nonces single-use."""

from __future__ import annotations

import secrets
from datetime import datetime

import asyncpg


class NonceRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def shared_secret(self) -> bytes:
        """The secret every process uses; the first process to ask creates it."""
        await self._pool.execute(
            "INSERT INTO nonce_secrets (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            secrets.token_bytes(32),
        )
        secret: bytes = await self._pool.fetchval("SELECT secret FROM nonce_secrets WHERE id = 1")
        return secret

    async def redeem(self, nonce_id: bytes, expires_at: datetime) -> bool:
        """Record the nonce as used; False when it was already used (a replay)."""
        row = await self._pool.fetchval(
            "INSERT INTO redeemed_nonces (nonce_id, expires_at) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            nonce_id,
            expires_at,
        )
        return row is not None

    async def redeem_for_account(
        self, nonce_id: bytes, expires_at: datetime, account_id: int
    ) -> tuple[bool, str | None]:
        """:meth:`redeem`, and in the same round trip the account's current row version
        (None when the account is gone): whether the account read before is still current."""
        row = await self._pool.fetchrow(
            "WITH n AS (INSERT INTO redeemed_nonces (nonce_id, expires_at) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING 1) "
            "SELECT EXISTS (SELECT 1 FROM n) AS fresh, "
            "(SELECT xmin::text FROM accounts WHERE id = $3) AS row_version",
            nonce_id,
            expires_at,
            account_id,
        )
        assert row is not None
        return bool(row["fresh"]), row["row_version"]

    async def purge_expired(self, now: datetime) -> int:
        """Forget redemptions of nonces too old to be presented again (age check)."""
        status: str = await self._pool.execute(
            "DELETE FROM redeemed_nonces WHERE expires_at < $1", now
        )
        return int(status.rsplit(maxsplit=1)[-1])
