"""The front end's nonce service: hand out nonces without I/O, redeem them once in the database."""

from __future__ import annotations

from datetime import timedelta

from acme_ca.acme import problems
from acme_ca.acme.nonce import NonceCodec, NonceRejected
from acme_ca.acme.problems import AcmeError
from acme_ca.clock import Clock
from acme_ca.db.nonces import NonceRepository


class NonceService:
    def __init__(
        self, repo: NonceRepository, secret: bytes, lifetime: timedelta, clock: Clock
    ) -> None:
        self._repo = repo
        self._codec = NonceCodec(secret, lifetime)
        self._clock = clock

    def issue(self) -> str:
        return self._codec.make(self._clock.now())

    def check(self, nonce: str) -> bytes:
        """Check MAC and age without I/O; returns the id to redeem. ``badNonce`` on failure."""
        try:
            opened = self._codec.open(nonce, self._clock.now())
        except NonceRejected as exc:
            raise AcmeError(
                problems.bad_nonce(f"JWS has an invalid anti-replay nonce: {exc}")
            ) from None
        return opened.nonce_id

    async def redeem(self, nonce: str) -> None:
        """Consume the nonce; a second use anywhere gets ``badNonce``."""
        opened = self._codec.open(nonce, self._clock.now())
        if not await self._repo.redeem(opened.nonce_id, opened.expires_at):
            raise AcmeError(problems.bad_nonce("JWS nonce was already used"))

    async def purge(self) -> int:
        return await self._repo.purge_expired(self._clock.now())
