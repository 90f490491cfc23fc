"""Typed application keys: what the handlers may reach (no singletons, no string keys)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.db.accounts import AccountRepository
from acme_ca.ra.accounts import AccountAuthority
from acme_ca.wfe.nonces import NonceService
from acme_ca.wfe.urls import Urls


@dataclass(frozen=True)
class FrontEnd:
    """Everything a handler uses: policy (RA) for writes, read-only storage for lookups."""

    config: Config
    clock: Clock
    urls: Urls
    nonces: NonceService
    accounts: AccountAuthority
    account_reads: AccountRepository


FRONT_END = web.AppKey("front_end", FrontEnd)


def front_end(request: web.Request) -> FrontEnd:
    return request.app[FRONT_END]
