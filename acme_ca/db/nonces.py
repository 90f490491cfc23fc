"""Nonce storage: the shared HMAC secret, and the redemption record that makes nonces single-use."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Redemption:
    """A nonce to redeem in the round trip of a read (:func:`fetch_redeeming`), and the account
    whose current row version comes back with it (the request's signer)."""

    nonce_id: bytes
    expires_at: datetime
    account_id: int


@dataclass(frozen=True)
class Redeemed:
    """What a redemption found: ``fresh`` False for a replay (then the read's answer must not
    be used); the account's row version then (None when the account is gone)."""

    fresh: bool
    account_version: str | None


def _redeeming(read_sql: str, params: int) -> str:
    """``read_sql`` with the redemption of :meth:`NonceRepository.redeem_for_account` in the
    same statement.  The redemption is a data-modifying CTE, which PostgreSQL runs to
    completion whether or not the read finds a row; the read sees the snapshot taken before
    it, as it would in its own statement."""
    n = params
    # The repositories' constant SQL and placeholder numbers only.
    return (
        "WITH redeemed AS (INSERT INTO redeemed_nonces (nonce_id, expires_at) "  # noqa: S608
        f"VALUES (${n + 1}, ${n + 2}) ON CONFLICT DO NOTHING RETURNING 1) "
        "SELECT r.*, EXISTS (SELECT 1 FROM redeemed) AS nonce_fresh, "
        f"(SELECT xmin::text FROM accounts WHERE id = ${n + 3}) AS nonce_account_version "
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL "
        f"(SELECT true AS nonce_read_found, q.* FROM ({read_sql}) AS q) AS r ON true"
    )


async def fetch_redeeming(
    pool: asyncpg.Pool,
    read_sql: str,
    args: Sequence[Any],
    redemption: Redemption,
) -> tuple[asyncpg.Record | None, Redeemed]:
    """Run ``read_sql`` (one SELECT of at most one row, parameters ``$1..$len(args)``) and
    redeem the request's nonce in the same round trip (issue 20: a POST-as-GET, or a handler
    whose first statement is a read, needs one round trip instead of two).  The row is None
    when the read found nothing; whatever it found, the nonce is spent."""
    row = await pool.fetchrow(
        _redeeming(read_sql, len(args)),
        *args,
        redemption.nonce_id,
        redemption.expires_at,
        redemption.account_id,
    )
    assert row is not None  # the outer query always yields its one row
    redeemed = Redeemed(bool(row["nonce_fresh"]), row["nonce_account_version"])
    return (row if row["nonce_read_found"] else None), redeemed


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
