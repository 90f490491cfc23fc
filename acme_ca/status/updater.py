"""The status updater: publishes CRLs and pre-produces OCSP responses, inside the signing
worker (the only process holding CA keys); ``acme-ca serve`` serves them from the database.

What it does and when (CP 4.9.7, 4.9.9; BR 4.9.7, 4.9.10):

* on start: a fresh CRL for every issuing CA and every root whose key is configured, and the
  OCSP responses still missing or due;
* on each ``acme_ca_revocation`` NOTIFY (sent when a revocation commits): the issuer's CRL and
  that certificate's OCSP responses, within seconds;
* once the signing worker's pass that stored a precertificate ends (its ``on_issued`` calls
  :meth:`StatusUpdater.certificate_issued`, wired in :mod:`acme_ca.main.worker`; after the
  final certificate, or the CT deferral, so that the signing does not hold up the answer to
  finalize, and within ``ct_timeout_seconds``, far inside BR-OCSP-2's 15 minutes): its
  OCSP responses (a precertificate counts as issued, BR 7.1.2.9: its serial is never
  "unknown" from then on; the final certificate shares the serial and the responses);
* every ``poll_seconds`` (30 s; lost notifications, other workers' certificates): CRLs older
  than ``crl_interval_hours`` or whose entries no longer match the revocations in the
  database, and OCSP responses that are missing, state an outdated status, or have passed
  min(half their validity, 4 days) (BR 4.9.10: refresh at half-life, and at most 4 days after
  thisUpdate and at least 8 hours before nextUpdate).

Each CRL publication logs ``crl.published`` (issuer, number, entries); each OCSP pass logs one
``ocsp.refreshed`` event with counts.  Several workers may run updaters on one database: CRL
Numbers come from the database and a revoked OCSP response is never replaced by a good one, so
the only cost is duplicated work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Final

import structlog

from acme_ca import metrics
from acme_ca.ca.issuers import Issuer, IssuerSet, open_root_signer
from acme_ca.ca.issuers_file import IssuerConfigError, read_issuers_file
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import IssuerSettings
from acme_ca.clock import Clock
from acme_ca.db.advisory import AdvisoryLocks
from acme_ca.db.status import (
    CertificateStatus,
    OcspResponseRecord,
    RevocationListener,
    RevocationNotice,
    StatusRepository,
)
from acme_ca.status.crl import CrlAuthority, entries_digest, publish_crl
from acme_ca.status.ocsp import CERT_ID_HASHES, CertStatus, sign_ocsp_response
from acme_ca.status.settings import StatusSettings

log = structlog.get_logger(component="acme_ca.status.updater")

#: BR 4.9.10: a response of 16 hours or more is refreshed at most 4 days after thisUpdate.
MAX_OCSP_REFRESH_AGE: Final = timedelta(days=4)
#: Certificates per OCSP refresh query.
OCSP_BATCH: Final = 200


def ocsp_refresh_age(validity: timedelta) -> timedelta:
    """How old a response may get before it is replaced: half its validity, at most 4 days
    (which leaves ≥ 8 h before nextUpdate for every validity from 16 h to 10 days)."""
    return min(validity / 2, MAX_OCSP_REFRESH_AGE)


def issuer_authority(issuer: Issuer) -> CrlAuthority:
    return CrlAuthority(issuer.name, issuer.certificate, issuer.signer)


async def open_root_authorities(settings: IssuerSettings) -> list[CrlAuthority]:
    """The roots of issuers.toml whose key is configured (development), opened for signing
    their CRLs; offline roots (no key) are skipped.  Close them with :func:`close_authorities`.
    """
    parsed = await asyncio.to_thread(read_issuers_file, settings.pki_path)
    opened: list[CrlAuthority] = []
    for name, entry in parsed.roots.items():
        if entry.key is None:
            log.info("status.root_offline", root=name)
            continue
        try:
            signer = await open_root_signer(settings, name)
        except IssuerConfigError as e:
            log.warning("status.root_key_unavailable", root=name, error=str(e))
            continue
        opened.append(CrlAuthority(name, entry.certificate, signer))
    return opened


async def close_authorities(authorities: Sequence[CrlAuthority]) -> None:
    for authority in authorities:
        try:
            await authority.signer.aclose()
        except Exception as e:  # closing the rest matters more
            log.warning("status.root_close_failed", root=authority.name, error=repr(e))


class StatusUpdater:
    """Keeps CRLs and OCSP responses current for ``issuers`` (and ``roots``' CRLs)."""

    def __init__(
        self,
        repository: StatusRepository,
        issuers: IssuerSet,
        linter: CertificateLinter,
        clock: Clock,
        settings: StatusSettings,
        *,
        roots: Sequence[CrlAuthority] = (),
        crl_lock: AdvisoryLocks | None = None,
    ) -> None:
        """``crl_lock``: with several workers, only the holder of an issuer's lock publishes
        its CRLs (the others stand by); without it this updater publishes every CRL."""
        self._repository = repository
        self._crl_lock = crl_lock
        self._standing_by: set[str] = set()
        self._issuers = issuers
        self._linter = linter
        self._clock = clock
        self._settings = settings
        self._authorities = {i.name: issuer_authority(i) for i in issuers}
        self._roots = {r.name: r for r in roots}
        self._wake = asyncio.Event()
        self._revoked: set[RevocationNotice] = set()
        self._issued: set[tuple[str, str]] = set()
        self._listener: RevocationListener | None = None

    # ------------------------------------------------------------------ triggers

    def certificate_issued(self, issuer: str, serial: str) -> None:
        """A certificate was stored: produce its OCSP responses now."""
        self._issued.add((issuer, serial))
        self._wake.set()

    def _notified(self, notice: RevocationNotice | None) -> None:
        if notice is None:
            log.warning("status.notification_ignored")
            return
        self._revoked.add(notice)
        self._wake.set()

    # ------------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set."""
        await self._listen()
        log.info(
            "status.updater_started",
            issuers=list(self._authorities),
            roots=list(self._roots),
            poll_seconds=self._settings.poll_seconds,
        )
        try:
            await self._guarded("start", lambda: self.publish_all_crls("start"))
            await self._guarded("start", self.refresh_ocsp)
            loop = asyncio.get_running_loop()
            next_poll = loop.time() + self._settings.poll_seconds
            while not stop.is_set():
                timeout = max(0.0, next_poll - loop.time())
                await _wait_any(self._wake, stop, timeout)
                if stop.is_set():
                    break
                self._wake.clear()
                await self._guarded("events", self.handle_events)
                if loop.time() >= next_poll:
                    await self._guarded("poll", self.poll)
                    next_poll = loop.time() + self._settings.poll_seconds
        finally:
            if self._listener is not None:
                await self._listener.aclose()
            log.info("status.updater_stopped")

    async def _guarded(self, step: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run one step; a failure (database blip, HSM error) is logged and retried later."""
        try:
            await work()
        except Exception:
            log.exception("status.update_failed", step=step)

    async def _listen(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()
        self._listener = await self._repository.listen_revocations(self._notified)

    async def handle_events(self) -> None:
        """Revocations notified and certificates issued since the last call."""
        revoked, self._revoked = self._revoked, set()
        issued, self._issued = self._issued, set()
        for issuer in sorted({n.issuer for n in revoked}):
            authority = self._authorities.get(issuer)
            if authority is None:
                continue  # another worker's issuer
            await self._publish(authority, trigger="revocation")
        targets = {(n.issuer, n.serial) for n in revoked} | issued
        if targets:
            await self.refresh_certificates(sorted(targets), trigger="event")

    async def poll(self) -> None:
        """The periodic pass: listener health, due CRLs, due OCSP responses."""
        if self._listener is None or not self._listener.alive:
            log.warning("status.listener_lost")
            await self._listen()
        await self.publish_due_crls()
        await self.refresh_ocsp()

    # ------------------------------------------------------------------ CRLs

    async def _publishes(self, name: str) -> bool:
        """Whether this updater is the one that publishes ``name``'s CRLs now."""
        if self._crl_lock is None:
            return True
        try:
            mine = await self._crl_lock.holds(f"crl:{name}")
        except Exception as exc:
            log.warning("crl.publisher_lock_failed", issuer=name, error=repr(exc))
            return False
        if mine and name in self._standing_by:
            self._standing_by.discard(name)
            log.info("crl.publisher", issuer=name)
        elif not mine and name not in self._standing_by:
            self._standing_by.add(name)
            log.info("crl.standby", issuer=name, detail="another worker publishes this CRL")
        return mine

    async def _publish(self, authority: CrlAuthority, *, trigger: str) -> None:
        if not await self._publishes(authority.name):
            return
        try:
            record = await publish_crl(
                self._repository,
                authority,
                clock=self._clock,
                validity=self._settings.crl_validity,
                linter=self._linter,
                with_entries=authority.name in self._authorities,
                trigger=trigger,
            )
            if record is not None and self._settings.crl_dir is not None:
                await asyncio.to_thread(
                    write_crl_file, self._settings.crl_dir, authority.name, record.der
                )
        except Exception:
            metrics.crl_published(authority.name, ok=False)
            log.exception("crl.publish_failed", issuer=authority.name, trigger=trigger)
        else:
            metrics.crl_published(authority.name, ok=record is not None)  # None: lint failed

    async def publish_all_crls(self, trigger: str = "scheduled") -> None:
        for authority in (*self._authorities.values(), *self._roots.values()):
            await self._publish(authority, trigger=trigger)

    async def publish_due_crls(self) -> None:
        """CRLs older than the interval (CP 4.9.7: 24 h), or not listing exactly today's
        revocations (a lost notification, or an entry whose certificate expired)."""
        now = self._clock.now()
        latest = await self._repository.latest_crls()
        for authority in (*self._authorities.values(), *self._roots.values()):
            crl = latest.get(authority.name)
            if crl is None or crl.this_update <= now - self._settings.crl_interval:
                await self._publish(authority, trigger="interval")
                continue
            if authority.name not in self._authorities:
                continue
            entries = await self._repository.revoked_entries(authority.name, now)
            # A worker thread: 100,000 entries take a while to digest.
            if await asyncio.to_thread(entries_digest, entries) != crl.entries_digest:
                await self._publish(authority, trigger="entries_changed")

    # ------------------------------------------------------------------ OCSP

    async def refresh_ocsp(self) -> None:
        """Every unexpired certificate lacking a current, fresh response, in batches."""
        totals = {"good": 0, "revoked": 0, "failed": 0}
        seen: set[tuple[str, str]] = set()
        while True:
            now = self._clock.now()
            batch = await self._repository.certificates_needing_ocsp(
                list(self._authorities),
                CERT_ID_HASHES,
                now=now,
                fresh_after=now - ocsp_refresh_age(self._settings.ocsp_validity),
                limit=OCSP_BATCH,
            )
            # A certificate whose response could not be stored comes back; once per pass.
            todo = [s for s in batch if (s.issuer, s.serial) not in seen]
            seen.update((s.issuer, s.serial) for s in todo)
            counts = await self._sign_all(todo)
            for key, value in counts.items():
                totals[key] += value
            if len(batch) < OCSP_BATCH or not todo:
                break
            if self._revoked or self._issued:  # a long pass must not delay a revocation
                await self.handle_events()
        if any(totals.values()):
            log.info("ocsp.refreshed", trigger="scheduled", **totals)

    async def refresh_certificates(
        self, targets: Sequence[tuple[str, str]], *, trigger: str
    ) -> None:
        """The responses of these (issuer, serial) certificates, now."""
        statuses = []
        for issuer, serial in targets:
            if issuer not in self._authorities:
                continue
            status = await self._repository.certificate_status(issuer, serial)
            if status is None:
                log.warning("ocsp.unknown_certificate", issuer=issuer, serial=serial)
                continue
            if status.not_after <= self._clock.now():
                continue  # expired: no status service owed (the CRL entry is gone too)
            statuses.append(status)
        counts = await self._sign_all(statuses)
        if any(counts.values()):
            log.info("ocsp.refreshed", trigger=trigger, **counts)

    async def _sign_all(self, statuses: Sequence[CertificateStatus]) -> dict[str, int]:
        counts = {"good": 0, "revoked": 0, "failed": 0}
        for status in statuses:
            try:
                await self.produce_responses(status)
            except Exception:
                log.exception("ocsp.sign_failed", issuer=status.issuer, serial=status.serial)
                counts["failed"] += 1
            else:
                counts["good" if status.revoked_at is None else "revoked"] += 1
        return counts

    async def produce_responses(self, status: CertificateStatus) -> list[OcspResponseRecord]:
        """Sign one response per CertID hash algorithm for this certificate, then store them
        in one statement."""
        issuer = self._issuers.by_name(status.issuer)
        cert_status = (
            CertStatus()
            if status.revoked_at is None
            else CertStatus(status.revoked_at, status.revocation_reason or 0)
        )
        produced = []
        try:
            for algorithm in CERT_ID_HASHES:
                produced_at = self._clock.now().replace(microsecond=0)
                this_update = produced_at
                next_update = this_update + self._settings.ocsp_validity
                der = await sign_ocsp_response(
                    issuer.certificate,
                    issuer.signer,
                    int(status.serial, 16),
                    cert_status,
                    algorithm,
                    this_update=this_update,
                    next_update=next_update,
                    produced_at=produced_at,
                )
                produced.append(
                    OcspResponseRecord(
                        issuer=status.issuer,
                        serial=status.serial,
                        hash_algorithm=algorithm,
                        status=cert_status.name,
                        revocation_reason=cert_status.reason,
                        der=der,
                        this_update=this_update,
                        next_update=next_update,
                        produced_at=produced_at,
                        revoked_at=status.revoked_at,
                    )
                )
        except Exception:
            # As when each was stored once signed: what was signed before a failure is kept.
            if produced:
                await self._repository.store_ocsp_responses(produced)
            raise
        # Stored together: one round trip for the certificate's responses (issue 20).
        kept = await self._repository.store_ocsp_responses(produced)
        stored = []
        for record in produced:
            if record.hash_algorithm in kept:
                stored.append(record)
            else:  # a newer one, or a revoked one, is already there (another worker)
                log.info(
                    "ocsp.not_stored",
                    issuer=status.issuer,
                    serial=status.serial,
                    hash_algorithm=record.hash_algorithm,
                    status=cert_status.name,
                )
        return stored


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def write_crl_file(directory: Path, name: str, der: bytes) -> Path:
    """Write ``<name>.crl`` atomically (rename over the old file), for CDN upload."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.crl"
    partial = directory / f".{name}.crl.tmp"
    partial.write_bytes(der)
    os.replace(partial, target)
    return target
