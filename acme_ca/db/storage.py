"""The storage handle the other rooms hold: the pool and one repository per table family."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from acme_ca.db.accounts import AccountRepository
from acme_ca.db.certificates import CertificateRepository
from acme_ca.db.eab import EabKeyRepository
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.nonces import NonceRepository
from acme_ca.db.orders import OrderRepository
from acme_ca.db.pool import create_pool


@dataclass(frozen=True)
class Storage:
    pool: asyncpg.Pool
    accounts: AccountRepository
    eab_keys: EabKeyRepository
    nonces: NonceRepository
    orders: OrderRepository
    certificates: CertificateRepository
    issuance: IssuanceRepository

    async def close(self) -> None:
        await self.pool.close()


async def open_storage(
    dsn: str, *, max_size: int = 10, acquire_timeout: float | None = None
) -> Storage:
    """The pool and repositories; ``acquire_timeout`` bounds every wait for a connection."""
    pool = await create_pool(dsn, max_size=max_size, acquire_timeout=acquire_timeout)
    return Storage(
        pool=pool,
        accounts=AccountRepository(pool),
        eab_keys=EabKeyRepository(pool),
        nonces=NonceRepository(pool),
        orders=OrderRepository(pool),
        certificates=CertificateRepository(pool),
        issuance=IssuanceRepository(pool),
    )
