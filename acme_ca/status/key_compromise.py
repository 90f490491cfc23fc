"""The key-compromise sweeper: runs the durable sweeps queued when a key is found compromised
(BR 4.9.1.1 #3: every certificate with the key revoked within 24 hours; 4.9.12; 7.2.2).

It runs in every signing worker beside the status updater (``ca/worker.py`` starts it), needs
no CA key (a revocation is a database change; the updater signs the CRLs and OCSP responses
when the revocation's ``acme_ca_revocation`` NOTIFY arrives) and works from
``key_compromise_sweeps`` (:mod:`acme_ca.db.key_compromise`):

* every ``poll_seconds`` (2 s): claim each due sweep under a lease and revoke, in batches,
  every unexpired certificate and precertificate with its key, of any account, as
  keyCompromise dated ``compromised_at`` (a serial revoked earlier for another reason gets
  reason keyCompromise and, if the compromise is known to be older, the earlier date); each
  revocation is its own audited transaction.  A failure gives the sweep back to be retried
  after a backoff (2 s doubling, at most 10 minutes); a dead worker's lease lapses and another
  worker takes over; nothing is lost across restarts.
* every ``recheck_seconds`` (60 s): a new sweep for a swept key whose certificates appeared
  later (signed from a CSR checked before the key was blocked); an error log for sweeps still
  queued after an hour (workers not sweeping: BR allows 24 hours) and for unexpired
  certificates without a key hash (which no sweep can find).

Logs: ``key_compromise.sweep_started`` / ``sweep_done`` (revoked, updated, seconds),
``certificate.revoked`` / ``certificate.revocation_updated`` per serial with ``sweep_id``,
``key_compromise.sweep_failed`` with the retry time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Final

import structlog

from acme_ca.clock import Clock
from acme_ca.db.certificates import RevocationOutcome
from acme_ca.db.key_compromise import KeyCompromiseRepository, Sweep, SweepLost
from acme_ca.db.storage import Storage

log = structlog.get_logger(component="acme_ca.status.key_compromise")

#: How often queued sweeps are looked for (a queued sweep starts within this).
SWEEP_POLL_SECONDS: Final = 2.0
#: How often swept keys are checked for certificates that appeared later.
RECHECK_SECONDS: Final = 60.0
#: A sweep's lease; renewed after every batch.
SWEEP_LEASE: Final = timedelta(minutes=2)
#: Serials per batch.
SWEEP_BATCH: Final = 100
#: Retry backoff after a failure: 2 s, doubling, at most this.
MAX_BACKOFF: Final = timedelta(minutes=10)
#: Queued longer than this is logged as an error (BR 4.9.1.1 allows 24 hours in all).
OVERDUE_AFTER: Final = timedelta(hours=1)


def retry_delay(attempts: int) -> timedelta:
    """Backoff before the next attempt after ``attempts`` failed ones."""
    return min(timedelta(seconds=2 ** min(max(attempts, 1), 20)), MAX_BACKOFF)


class KeyCompromiseSweeper:
    """Runs the queued key-compromise sweeps; see the module docstring."""

    def __init__(
        self,
        repository: KeyCompromiseRepository,
        clock: Clock,
        *,
        worker_id: str | None = None,
        poll_seconds: float = SWEEP_POLL_SECONDS,
        recheck_seconds: float = RECHECK_SECONDS,
        lease: timedelta = SWEEP_LEASE,
        batch: int = SWEEP_BATCH,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:sweeper"
        self._poll_seconds = poll_seconds
        self._recheck_seconds = recheck_seconds
        self._lease = lease
        self._batch = batch

    @classmethod
    def for_storage(cls, storage: Storage, clock: Clock) -> KeyCompromiseSweeper:
        """The sweeper a signing worker runs on its storage's pool."""
        return cls(KeyCompromiseRepository(storage.pool), clock)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; a failing step is logged and tried again later."""
        log.info(
            "key_compromise.sweeper_started",
            worker_id=self.worker_id,
            poll_seconds=self._poll_seconds,
        )
        loop = asyncio.get_running_loop()
        next_recheck = loop.time()
        while not stop.is_set():
            await _guarded("run_due", self.run_due)
            if loop.time() >= next_recheck:
                await _guarded("recheck", self.recheck)
                next_recheck = loop.time() + self._recheck_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_seconds)
        log.info("key_compromise.sweeper_stopped", worker_id=self.worker_id)

    async def run_due(self) -> int:
        """Every due sweep, one after another; returns how many finished."""
        finished = 0
        while True:
            sweep = await self._repository.claim(
                self.worker_id, now=self._clock.now(), lease=self._lease
            )
            if sweep is None:
                return finished
            if await self.sweep(sweep):
                finished += 1

    async def sweep(self, sweep: Sweep) -> bool:
        """Run one claimed sweep to the end; False if it failed or was taken over."""
        log.info(
            "key_compromise.sweep_started",
            sweep_id=sweep.id,
            spki_sha256=sweep.spki_sha256.hex(),
            attempt=sweep.attempts,
            requested_by=sweep.requested_by,
        )
        try:
            await self._revoke_all(sweep)
            done = await self._repository.finish(
                sweep, worker_id=self.worker_id, now=self._clock.now()
            )
        except SweepLost:
            log.warning("key_compromise.sweep_taken_over", sweep_id=sweep.id)
            return False
        except Exception as exc:
            retry_at = self._clock.now() + retry_delay(sweep.attempts)
            log.exception(
                "key_compromise.sweep_failed",
                sweep_id=sweep.id,
                attempt=sweep.attempts,
                retry_at=retry_at.isoformat(),
            )
            with contextlib.suppress(Exception):  # the lease lapses anyway
                await self._repository.fail(
                    sweep, worker_id=self.worker_id, error=repr(exc), retry_at=retry_at
                )
            return False
        if done is None:
            log.warning("key_compromise.sweep_taken_over", sweep_id=sweep.id)
            return False
        log.info(
            "key_compromise.sweep_done",
            sweep_id=done.id,
            spki_sha256=done.spki_sha256.hex(),
            revoked=done.revoked,
            updated=done.updated,
            seconds=round((self._clock.now() - done.created_at).total_seconds(), 3),
        )
        return True

    async def _revoke_all(self, sweep: Sweep) -> None:
        seen: set[str] = set()
        while True:
            serials = await self._repository.targets(
                sweep, now=self._clock.now(), limit=self._batch
            )
            if not serials:
                return
            todo = [s for s in serials if s not in seen]
            if not todo:  # revoked, yet still a target: never finish such a sweep
                raise RuntimeError(f"serials {serials[:5]} stay unrevoked after revocation")
            for serial in todo:
                seen.add(serial)
                change = await self._repository.revoke(
                    sweep, serial, worker_id=self.worker_id, now=self._clock.now()
                )
                if change is None:
                    continue
                log.info(
                    "certificate.revoked"
                    if change.outcome is RevocationOutcome.REVOKED
                    else "certificate.revocation_updated",
                    serial=serial,
                    reason=change.reason,
                    revoked_at=change.revoked_at.isoformat(),
                    previous_reason=change.previous_reason,
                    account_id=change.account_id,
                    order_id=change.order_id,
                    sweep_id=sweep.id,
                    actor=f"key-compromise-sweep:{sweep.id}",
                )
            if not await self._repository.extend(
                sweep, worker_id=self.worker_id, until=self._clock.now() + self._lease
            ):
                raise SweepLost(sweep.id)

    async def recheck(self) -> None:
        """Late certificates of swept keys, overdue sweeps, certificates without a key hash."""
        now = self._clock.now()
        for sweep_id in await self._repository.requeue_late_issuance(now=now):
            log.warning(
                "key_compromise.sweep_requeued",
                sweep_id=sweep_id,
                detail="a certificate with a swept key appeared after its sweep",
            )
        for sweep in await self._repository.overdue(queued_before=now - OVERDUE_AFTER):
            log.error(
                "key_compromise.sweep_overdue",
                sweep_id=sweep.id,
                queued_at=sweep.created_at.isoformat(),
                attempts=sweep.attempts,
                last_error=sweep.last_error,
                detail="BR 4.9.1.1 allows 24 hours from the report",
            )
        missing = await self._repository.unexpired_without_key_hash(now)
        if missing:
            log.error(
                "key_compromise.certificates_without_key_hash",
                count=missing,
                detail="their DER gave no SubjectPublicKeyInfo; no sweep can find them",
            )


async def _guarded(step: str, work: Callable[[], Awaitable[object]]) -> None:
    try:
        await work()
    except Exception:
        log.exception("key_compromise.step_failed", step=step)
