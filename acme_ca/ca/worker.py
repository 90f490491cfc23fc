"""The signing worker: turns queued issuance jobs into certificates, crash-safely.

Jobs come from PostgreSQL (``FOR UPDATE SKIP LOCKED``); a worker wakes on ``LISTEN/NOTIFY``
and also polls, because notifications can be lost.  This module is the claim loop: up to
``concurrency`` jobs in flight, each under a lease renewed while it runs, handed back when the
database goes away mid-step, taken over from a dead predecessor on this host; and the wiring
of one worker's parts.  Each claimed job is carried through its steps (``queued`` →
``prepared`` → ``precert_signed`` → ``scts_collected`` → ``issued``) by
:class:`acme_ca.ca.issuance_steps.IssuanceSteps`; an HSM or CT outage defers it
(:mod:`acme_ca.ca.deferrals`).

A worker killed anywhere leaves a job whose lease lapses; the next worker resumes at the
recorded step, with the same serial and the same precertificate (a job never has two:
``precertificates.job_id`` is unique and each step is recorded only from the step before).
The unique constraints on serial and on the certificate's order make a second certificate
impossible.  The process around the worker (storage, keys, the status updater beside it) is
composed in :mod:`acme_ca.main.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog

from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.deferrals import DEFAULT_HSM_DEADLINE, Deferrals, release_when_database_back
from acme_ca.ca.issuance_lint import IssuanceLint
from acme_ca.ca.issuance_profiles import IssuanceProfiles
from acme_ca.ca.issuance_steps import IssuanceSteps, OrganizationSubject
from acme_ca.ca.issuers import IssuerSet
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.signer import SignerError
from acme_ca.ca.signing_checks import CaaRechecker, OrganizationCheck, SigningChecks, SigningGuard
from acme_ca.clock import Clock
from acme_ca.db.errors import database_unavailable
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import IssuanceJob
from acme_ca.liveness import dead_on_this_host, holder_name, host_prefix

log = structlog.get_logger(component="acme_ca.ca.worker")

#: A job's lease (``issuance_lease_seconds``), renewed every third of it while the job runs.
DEFAULT_LEASE = timedelta(seconds=30)
#: Pause after a database error in the claim loop before trying again.
CLAIM_ERROR_BACKOFF = 2.0


class SigningWorker:
    """Claims issuance jobs and has :class:`~acme_ca.ca.issuance_steps.IssuanceSteps` carry
    each through its steps, up to ``concurrency`` at a time, each under a lease.

    Just before the precertificate is signed the order is re-checked
    (:mod:`acme_ca.ca.recheck`): ``production`` (the default, fail closed) applies the BR
    corroboration rule in full; ``signing_guard(now)`` is asked first and any violation it
    returns refuses the signing; ``caa`` and ``account_uri`` recheck CAA older than 8 hours
    (without them such an order is refused); ``organizations`` answers the OV rule for the
    account of a job of an OV issuer (without it such a job is refused).
    ``on_issued(issuer, serial)`` is told of every precertificate recorded (it counts as
    issued: the status updater signs its OCSP responses) when the pass that recorded it
    ends."""

    def __init__(
        self,
        jobs: IssuanceRepository,
        issuers: IssuerSet,
        linter: CertificateLinter,
        clock: Clock,
        *,
        ct: CertificateTransparency,
        profile_for: IssuanceProfiles,
        on_issued: Callable[[str, str], None] | None = None,
        poll_seconds: float = 5.0,
        lease: timedelta = DEFAULT_LEASE,
        worker_id: str | None = None,
        concurrency: int = 1,
        lint_final: bool = False,
        production: bool = True,
        signing_guard: SigningGuard | None = None,
        caa: CaaRechecker | None = None,
        account_uri: Callable[[int], str] | None = None,
        organizations: OrganizationCheck | None = None,
        hsm_deadline: timedelta = DEFAULT_HSM_DEADLINE,
        organization_subject: OrganizationSubject | None = None,
        internal_name_waiver: Callable[[str], bool] | None = None,
    ) -> None:
        self._jobs = jobs
        self._issuers = issuers
        self._clock = clock
        self._poll = poll_seconds
        self._lease = lease
        self.worker_id = worker_id or holder_name()
        self._wake = asyncio.Event()
        #: The next pass claims until the queue is empty (start, poll interval, a freed slot,
        #: a job handed back); otherwise a pass claims at most one job per NOTIFY pending.
        self._sweep = True
        self._concurrency = concurrency
        self._deferrals = Deferrals(jobs, clock, self.worker_id, ct=ct, hsm_deadline=hsm_deadline)
        self._issuance = IssuanceSteps(
            jobs,
            issuers,
            clock,
            self.worker_id,
            ct=ct,
            profile_for=profile_for,
            lint=IssuanceLint(jobs, linter, clock, internal_name_waiver=internal_name_waiver),
            checks=SigningChecks(
                jobs,
                clock,
                self.worker_id,
                production=production,
                signing_guard=signing_guard,
                caa=caa,
                account_uri=account_uri,
                ov_issuers=frozenset(i.name for i in issuers if i.purpose == "ov"),
                organizations=organizations,
                profile_reuse=profile_for.reuse_cap,
            ),
            deferrals=self._deferrals,
            on_issued=on_issued,
            lint_final=lint_final,
            organization_subject=organization_subject,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set: keep up to ``concurrency`` jobs in flight, claiming
        more whenever one finishes, a NOTIFY arrives or the poll interval passes; at stop,
        let the jobs in flight finish (each is bounded by its HSM, CT and database
        timeouts).

        Each NOTIFY (one per job queued) is worth one claim: a pass woken only by
        notifications claims at most as many jobs as arrived, instead of claiming once more
        to find the queue empty (issue 20: an empty claim per issuance).  Anything else that
        may have left jobs waiting (start, the poll interval, a freed slot while full, a job
        handed back, a lost or restored listener, a failed claim) makes the next pass claim
        until the queue is empty, as every pass did before."""
        pending = 0  # NOTIFYs not yet matched by a claim

        def notified(*_: Any) -> None:
            nonlocal pending
            pending += 1
            self._wake.set()

        in_flight: set[asyncio.Task[None]] = set()

        full = False  # the last claims stopped at the limit, not at an empty queue

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            if full:
                self._sweep = True
                self._wake.set()  # a slot freed while jobs may be waiting: claim at once

        listener = await self._jobs.listen(notified)
        loop = asyncio.get_running_loop()
        next_takeover = loop.time()  # at start, then once per poll interval
        log.info(
            "worker.started",
            worker_id=self.worker_id,
            issuers=self._issuers.names(),
            concurrency=self._concurrency,
            lease_seconds=self._lease.total_seconds(),
        )
        try:
            while not stop.is_set():
                # Clear before claiming, not after: a NOTIFY that arrives while the last
                # (empty) claim is in flight must still cut the following wait short.
                self._wake.clear()
                sweep, self._sweep = self._sweep, False
                try:
                    if not self._jobs.listener_alive(listener):  # the database restarted
                        await self._jobs.release_listener(listener, notified)
                        listener = await self._jobs.listen(notified)
                        log.warning("worker.listener_restored")
                        sweep = True  # notifications may have been lost meanwhile
                    if loop.time() >= next_takeover:
                        # Once per poll interval, not on every NOTIFY: a dead predecessor's
                        # jobs resume within one interval, without a query per issuance.
                        if await self.take_over_dead_holders():
                            sweep = True
                        next_takeover = loop.time() + self._poll
                    full = False
                    while not stop.is_set():
                        if len(in_flight) >= self._concurrency:
                            full = True
                            break
                        if not sweep and pending <= 0:
                            break  # every job notified so far is claimed (or was taken)
                        known = pending
                        job = await self._claim()
                        if job is None:
                            # Those notified before the claim are settled (claimed by us or
                            # another worker); one arriving during it stays pending.
                            pending = max(0, pending - known)
                            break
                        pending = max(0, pending - 1)
                        task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
                        in_flight.add(task)
                        task.add_done_callback(finished)
                except Exception as exc:
                    # The database went away between jobs (claim lives outside the job's
                    # guard): keep the worker alive and try again shortly.
                    log.warning("worker.claim_failed", error=repr(exc))
                    self._sweep = True
                    await asyncio.sleep(CLAIM_ERROR_BACKOFF)
                await self._wait(stop)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            await self._jobs.release_listener(listener, notified)
            log.info("worker.stopped", worker_id=self.worker_id)

    async def _wait(self, stop: asyncio.Event) -> None:
        """Until a wake-up, ``stop``, or the poll interval (which makes the next pass claim
        until the queue is empty: jobs due by time, lost notifications)."""
        waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        done, _ = await asyncio.wait(
            waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            self._sweep = True
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter

    async def take_over_dead_holders(self) -> list[int]:
        """End the leases of workers on this host whose process no longer exists (a killed
        or crashed predecessor): their jobs resume now, not when the lease lapses
        (:mod:`acme_ca.liveness`).  :meth:`run` asks at start and once per poll interval."""
        holders = await self._jobs.lease_holders(host_prefix(self.worker_id), now=self._clock.now())
        taken: list[int] = []
        for holder in dead_on_this_host(holders, self.worker_id):
            released = await self._jobs.release_leases(holder, now=self._clock.now())
            if released:
                log.warning("issuance.holder_dead", holder=holder, jobs=released)
                taken.extend(released)
        return taken

    async def _claim(self) -> IssuanceJob | None:
        return await self._jobs.claim(self.worker_id, now=self._clock.now(), lease=self._lease)

    async def run_once(self) -> bool:
        """Take one job and carry it as far as it goes; False when the queue is empty."""
        job = await self._claim()
        if job is None:
            return False
        await self._run_job(job)
        return True

    async def _run_job(self, job: IssuanceJob) -> None:
        """One claimed job, with its ids bound to every log event it causes."""
        structlog.contextvars.bind_contextvars(
            job_id=job.id, order_id=job.order_id, account_id=job.account_id
        )
        heartbeat = asyncio.create_task(self._heartbeat(job), name=f"lease-{job.id}")
        outage = False
        try:
            await self._issuance.process(job)
        except SignerError as exc:
            await self._deferrals.hsm_unavailable(job, exc)
        except Exception as exc:
            # Leave the job to a retry: a transient database fault must not lose the order.
            # Permanent faults surface in the logs each attempt.
            outage = database_unavailable(exc)
            if outage:
                log.warning("issuance.database_unavailable", step=job.step, error=repr(exc))
            else:
                log.exception("issuance.attempt_failed", attempts=job.attempts, step=job.step)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if outage and await release_when_database_back(
                self._jobs, self._clock, self.worker_id, job, self._lease
            ):
                self._sweep = True
                self._wake.set()  # claim it again now, not at the next poll
            structlog.contextvars.unbind_contextvars("job_id", "order_id", "account_id")

    async def _heartbeat(self, job: IssuanceJob) -> None:
        """Renew the job's lease every third of it while the job is in flight (HSM and CT
        calls included), so no second worker takes a job that is only slow."""
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self._jobs.renew_lease(
                    job.id, self.worker_id, now=self._clock.now(), lease=self._lease
                )
            except Exception as exc:  # the database away for a moment: try again
                log.warning("issuance.lease_renewal_failed", error=repr(exc))
                continue
            if not held:
                return  # done, deferred, failed, or taken over: the step code notices
