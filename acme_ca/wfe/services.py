"""Typed application keys: what the handlers may reach (no singletons, no string keys)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from acme_ca.clock import Clock
from acme_ca.ra.accounts import AccountAuthority
from acme_ca.ra.challenges import ChallengeAuthority
from acme_ca.ra.finalize import FinalizeAuthority
from acme_ca.ra.orders import OrderAuthority
from acme_ca.ra.revocation import RevocationAuthority
from acme_ca.wfe.account_cache import AccountCache
from acme_ca.wfe.nonces import NonceService
from acme_ca.wfe.reads import AccountReads, CertificateReads, OrderReads
from acme_ca.wfe.settings import WfeSettings
from acme_ca.wfe.urls import Urls


@dataclass(frozen=True)
class FrontEnd:
    """Everything a handler uses: the RA's authorities for writes, read-only views of the
    repositories for lookups (``wfe/reads.py``, as Boulder's WFE holds a read-only storage
    client)."""

    settings: WfeSettings
    clock: Clock
    urls: Urls
    nonces: NonceService
    accounts: AccountAuthority
    orders: OrderAuthority
    challenges: ChallengeAuthority
    finalize: FinalizeAuthority
    revocation: RevocationAuthority
    account_reads: AccountReads
    order_reads: OrderReads
    certificate_reads: CertificateReads
    #: Accounts by kid, re-validated by every request's nonce redemption (account_cache.py).
    account_cache: AccountCache = field(default_factory=AccountCache)


FRONT_END = web.AppKey("front_end", FrontEnd)


def front_end(request: web.Request) -> FrontEnd:
    return request.app[FRONT_END]
