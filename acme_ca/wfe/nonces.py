"""The front end's nonce service: hand out nonces without I/O, redeem them once in the database."""

from __future__ import annotations

import secrets
from datetime import timedelta

from acme_ca import metrics
from acme_ca.acme import problems
from acme_ca.acme.nonce import NonceCodec, NonceRejected, OpenedNonce
from acme_ca.acme.problems import AcmeError
from acme_ca.clock import Clock
from acme_ca.db.nonces import NonceRepository, Redeemed, Redemption


class NonceService:
    def __init__(
        self,
        repo: NonceRepository,
        secret: bytes,
        lifetime: timedelta,
        clock: Clock,
        *,
        reject_percent: int = 0,
    ) -> None:
        """``reject_percent`` is the test-mode knob (PEBBLE_WFE_NONCEREJECT): that share of
        good nonces is refused, so clients prove they retry ``badNonce``."""
        self._repo = repo
        self._codec = NonceCodec(secret, lifetime)
        self._clock = clock
        self._reject_percent = reject_percent

    def issue(self) -> str:
        return self._codec.make(self._clock.now())

    def check(self, nonce: str) -> OpenedNonce:
        """Check MAC and age without I/O; returns the opened nonce that :meth:`redeem` takes,
        so a request opens its nonce once. ``badNonce`` on failure."""
        try:
            opened = self._codec.open(nonce, self._clock.now())
        except NonceRejected as exc:
            metrics.observe_nonce("expired" if "expired" in str(exc) else "malformed")
            raise AcmeError(
                problems.bad_nonce(f"JWS has an invalid anti-replay nonce: {exc}")
            ) from None
        if self._reject_percent and secrets.randbelow(100) < self._reject_percent:
            metrics.observe_nonce("test_knob")
            raise AcmeError(
                problems.bad_nonce(
                    "nonce rejected by the test-mode knob "
                    "nonce_reject_percent; retry with a fresh one"
                )
            )
        return opened

    async def redeem(self, opened: OpenedNonce) -> None:
        """Consume the nonce :meth:`check` opened; a second use anywhere gets ``badNonce``."""
        self._redeemed(await self._repo.redeem(opened.nonce_id, opened.expires_at))

    async def redeem_for_account(self, opened: OpenedNonce, account_id: int) -> str | None:
        """:meth:`redeem`, returning the account's current row version from the same round
        trip (None when the account is gone)."""
        fresh, version = await self._repo.redeem_for_account(
            opened.nonce_id, opened.expires_at, account_id
        )
        self._redeemed(fresh)
        return version

    @staticmethod
    def redemption(opened: OpenedNonce, account_id: int) -> Redemption:
        """The nonce :meth:`check` opened, to be redeemed in a read's round trip
        (``db/nonces.fetch_redeeming``) instead of by :meth:`redeem_for_account`."""
        return Redemption(opened.nonce_id, opened.expires_at, account_id)

    def redeemed(self, outcome: Redeemed) -> str | None:
        """What :meth:`redeem_for_account` says, for a redemption a read made: ``badNonce``
        for a replay, else the account's row version (None when the account is gone)."""
        self._redeemed(outcome.fresh)
        return outcome.account_version

    @staticmethod
    def _redeemed(fresh: bool) -> None:
        if not fresh:
            metrics.observe_nonce("used")
            raise AcmeError(problems.bad_nonce("JWS nonce was already used"))
        metrics.observe_nonce(None)

    async def purge(self) -> int:
        return await self._repo.purge_expired(self._clock.now())
