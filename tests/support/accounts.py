"""Account requests the JWS client builds by hand (keyChange), and bare account rows."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import asyncpg

from tests.support.jws import JwsClient, PrivateKey, Reply, jwk_json, make_jws


async def key_change(
    client: JwsClient,
    new_key: PrivateKey,
    *,
    inner_nonce: str | None = None,
    inner_url: str | None = None,
    account: str | None = None,
    old_jwk: dict[str, str] | None = None,
    kid: str | None = None,
    embed_jwk: bool | None = True,
    extra_protected: dict[str, Any] | None = None,
) -> Reply:
    """POST keyChange with an inner JWS built from the given (possibly wrong) parts; ``kid``,
    ``embed_jwk`` and ``extra_protected`` shape its protected header as :func:`make_jws`."""
    url = client.directory["keyChange"]
    inner = make_jws(
        new_key,
        {"account": account or client.kid, "oldKey": old_jwk or jwk_json(client.key)},
        url=inner_url or url,
        nonce=inner_nonce,
        kid=kid,
        embed_jwk=embed_jwk,
        extra_protected=extra_protected,
    )
    return await client.post(url, inner)


async def bare_account(conn: asyncpg.Connection | asyncpg.Pool, at: datetime | None = None) -> int:
    """An ``accounts`` row with a random thumbprint and an empty JWK, created at ``at``
    (default: the database's now), valid in every schema version since 001: for tests that
    need only an account id (the JWK is never read)."""
    account_id: int = await conn.fetchval(
        "INSERT INTO accounts (key_thumbprint, jwk, status, created_at, updated_at) "
        "VALUES ($1, '{}', 'valid', coalesce($2, now()), coalesce($2, now())) RETURNING id",
        os.urandom(32),
        at,
    )
    return account_id
