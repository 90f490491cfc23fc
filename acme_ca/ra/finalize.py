"""Finalize (RFC 8555 §7.4): check the CSR, recheck stale CAA, hand the order to the CA.

On success the order is ``processing`` and an issuance job is queued in the same
transaction; a signing worker does the rest.  The response waits up to
``finalize_wait_seconds`` for the worker's NOTIFY that the order is done
(:mod:`acme_ca.db.completions`), so the client usually gets ``valid`` and no polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme import problems
from acme_ca.acme.messages import Finalize
from acme_ca.acme.problems import AcmeError
from acme_ca.acme.status import OrderStatus
from acme_ca.clock import Clock
from acme_ca.db.accounts import Account
from acme_ca.db.authorizations import AuthzValidation
from acme_ca.db.completions import OrderCompletions
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.order_events import Order
from acme_ca.db.orders import OrderRepository
from acme_ca.db.pool import request_age
from acme_ca.profiles import Profile
from acme_ca.ra.csr import CheckedCsr, check_csr
from acme_ca.ra.keys import KeyPolicy
from acme_ca.ra.orders import OrderAuthority
from acme_ca.ra.ratelimits import RateLimiter
from acme_ca.va.records import CaaRechecker

log = structlog.get_logger(component="acme_ca.ra.finalize")

#: BR 3.2.2.8: issue within 8 hours of the CAA check (or the record's TTL, if longer).
CAA_RECHECK_AFTER = timedelta(hours=8)


class FinalizeAuthority:
    def __init__(
        self,
        orders: OrderAuthority,
        order_repo: OrderRepository,
        issuance: IssuanceRepository,
        key_policy: KeyPolicy,
        caa: CaaRechecker,
        clock: Clock,
        *,
        account_uri: Callable[[int], str],
        completions: OrderCompletions | None = None,
        wait_seconds: float = 0.0,
        limits: RateLimiter | None = None,
    ) -> None:
        self._orders = orders
        self._limits = limits
        self._order_repo = order_repo
        self._issuance = issuance
        self._key_policy = key_policy
        self._caa = caa
        self._clock = clock
        self._account_uri = account_uri
        self._completions = completions
        self._wait = wait_seconds

    async def finalize(
        self,
        account: Account,
        order: Order,
        message: Finalize,
        *,
        validations: Sequence[AuthzValidation] | None = None,
    ) -> Order:
        """Queue the order's issuance; returns the order as it stands when the response is due:
        ``processing`` as queued, or what the worker made of it within the wait.
        ``validations``: the order's, read with ``order`` (in the request's nonce round trip,
        issue 20); read here otherwise."""
        status = self._orders.current_status(order)
        if status != OrderStatus.READY:
            raise AcmeError(
                problems.order_not_ready(f"the order is {status}; it must be ready to finalize")
            )
        profile = await self._orders.finalize_profile(account, order)
        account_spki = _spki(account.jwk.key)
        checked = await check_csr(
            message.csr,
            [i.value for i in order.identifiers],
            account_spki=account_spki,
            key_policy=self._key_policy,
        )
        await self._recheck_stale_caa(account, order, validations)
        if self._limits is not None:  # an ARI renewal is exempt from the per-domain limit
            await self._limits.issuance(checked.names, replaces=order.replaces is not None)
        issuer = _issuer_for(profile, checked)
        if self._completions is None or self._wait - request_age() <= 0:
            return await self._enqueue(account, order, checked, issuer, profile)
        async with self._completions.watch(order.id) as done:
            queued = await self._enqueue(account, order, checked, issuer, profile)
            # The wait counts from the request's arrival (load shedding: under load, time
            # queued is not added to it, so the answer stays inside clients' timeouts).
            wait = self._wait - request_age()
            if done is None or wait <= 0:
                return queued
            try:
                await asyncio.wait_for(done.wait(), wait)
            except TimeoutError:
                return queued
        # The worker moved it on (valid or invalid) in its own transaction: read that.
        finished = await self._order_repo.get_order(order.id)
        assert finished is not None
        return finished

    async def _enqueue(
        self, account: Account, order: Order, checked: CheckedCsr, issuer: str, profile: Profile
    ) -> Order:
        queued = await self._issuance.enqueue(
            order_id=order.id,
            account_id=account.id,
            csr_der=checked.der,
            names=list(checked.names),
            issuer=issuer,
            now=self._clock.now(),
            profile=profile.name,
        )
        if queued is None:
            raise AcmeError(problems.order_not_ready("the order changed; fetch it again"))
        log.info(
            "order.processing",
            order_id=order.id,
            account_id=account.id,
            issuer=issuer,
            profile=profile.name,
            names=list(checked.names),
        )
        return queued

    async def _recheck_stale_caa(
        self, account: Account, order: Order, validations: Sequence[AuthzValidation] | None
    ) -> None:
        now = self._clock.now()
        if validations is None:
            validations = await self._order_repo.validations(order.id)
        for v in validations:
            if v.validated_at is not None and now - v.validated_at < CAA_RECHECK_AFTER:
                continue
            result = await self._caa.recheck_caa(
                v.identifier, v.wildcard, self._account_uri(account.id), v.method or "dns-01"
            )
            log.info("caa.rechecked", order_id=order.id, identifier=v.identifier, ok=result.ok)
            if not result.ok:
                assert result.problem is not None
                raise AcmeError(result.problem)


def _issuer_for(profile: Profile, csr: CheckedCsr) -> str:
    """The profile's issuer for the CSR's key type."""
    if isinstance(csr.public_key, ec.EllipticCurvePublicKey):
        return profile.ecdsa_issuer
    return profile.rsa_issuer


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der
