"""The signing-worker process: storage, the issuer keys, a warm linter, the CT log list, a
validator for CAA rechecks, and beside the :class:`~acme_ca.ca.worker.SigningWorker` the
status updater (CRLs and OCSP, signed with the same keys) and the key-compromise sweeper.

This is where ``ca/`` and ``status/`` meet: the worker tells the updater of each
precertificate through ``on_issued``; neither room imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

import structlog

from acme_ca.ca.ct.loglist import FileLogList, LogListSource
from acme_ca.ca.ct.settings import CtSettings
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.issuance_profiles import profile_settings_factory
from acme_ca.ca.issuers import IssuerSet, load_issuers
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import IssuanceSettings, IssuerSettings
from acme_ca.ca.signing_checks import SigningGuard
from acme_ca.ca.worker import SigningWorker
from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.db.advisory import AdvisoryLocks
from acme_ca.db.organizations import OrganizationRepository
from acme_ca.db.settings import DatabaseSettings
from acme_ca.db.status import StatusRepository
from acme_ca.db.storage import Storage, open_storage
from acme_ca.main.metrics import report_database
from acme_ca.main.profiles import profile_catalog
from acme_ca.psl import parse_public_suffix_lists
from acme_ca.ra.identifiers import IdentifierPolicy
from acme_ca.ra.organizations import OrganizationPolicy
from acme_ca.remote_va.primary import build_validator
from acme_ca.status.key_compromise import KeyCompromiseSweeper
from acme_ca.status.settings import StatusSettings
from acme_ca.status.updater import (
    StatusUpdater,
    close_authorities,
    open_root_authorities,
)
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.mpic import MpicValidator
from acme_ca.va.perspectives import MpicSetup
from acme_ca.va.settings import VASettings

log = structlog.get_logger(component="acme_ca.main.worker")


def ct_log_source(config: Config, given: LogListSource | None) -> LogListSource:
    """The log list the worker submits to: ``given`` (the in-process test logs) or the
    configured ``ct_log_list`` file; there is no issuance without one (CP 4.3.1)."""
    if given is not None:
        return given
    if config.ct_log_list is None:
        raise RuntimeError(
            "no Certificate Transparency log list: set ct_log_list (docs/ct.md); only serve "
            "and worker start test logs when it is unset"
        )
    return FileLogList(config.ct_log_list)


@contextlib.asynccontextmanager
async def _storage(config: Config, dsn: str) -> AsyncIterator[Storage]:
    # Two connections stay LISTENing (issuance jobs, revocations) and one holds the CRL
    # publisher locks; the rest run queries, about one per job in flight (each job's
    # queries are short and sequential).
    storage = await open_storage(
        dsn,
        max_size=4 + min(config.worker_concurrency, 8),
        acquire_timeout=DatabaseSettings.from_config(config).acquire_timeout_seconds,
    )
    try:
        yield storage
    finally:
        await storage.close()


@contextlib.asynccontextmanager
async def _issuers(config: Config, clock: Clock) -> AsyncIterator[IssuerSet]:
    issuers = await load_issuers(IssuerSettings.from_config(config), clock=clock)
    try:
        yield issuers
    finally:
        await issuers.aclose()


@contextlib.asynccontextmanager
async def _ct(
    config: Config, logs: LogListSource, clock: Clock
) -> AsyncIterator[CertificateTransparency]:
    ct = CertificateTransparency(logs, clock, CtSettings.from_config(config))
    try:
        yield ct
    finally:
        await ct.aclose()


@contextlib.asynccontextmanager
async def _caa_validator(
    config: Config,
    clock: Clock,
    account_uri: Callable[[int], str] | None,
    mpic: MpicSetup | None,
) -> AsyncIterator[ValidationAuthority | MpicValidator | None]:
    if account_uri is None:
        log.warning(
            "worker.no_caa_recheck",
            detail="no account_uri: orders whose CAA check "
            "is older than 8 hours are refused (BR 3.2.2.8)",
        )
        yield None
        return
    # Its validators read the Public Suffix List on first use: parsed here, off the event loop
    # (a cache hit when serve already parsed it).
    await asyncio.to_thread(parse_public_suffix_lists)
    validator = build_validator(VASettings.from_config(config), clock, mpic)
    try:
        yield validator
    finally:
        if isinstance(validator, ValidationAuthority):
            await validator.aclose()


async def run_worker(
    config: Config,
    dsn: str,
    stop: asyncio.Event,
    clock: Clock,
    *,
    ct_logs: LogListSource | None = None,
    account_uri: Callable[[int], str] | None = None,
    production: bool = True,
    signing_guard: SigningGuard | None = None,
    mpic: MpicSetup | None = None,
) -> None:
    """The worker with everything it needs, the status updater and the key-compromise
    sweeper beside it, until ``stop`` is set.

    Any task failing stops the others and surfaces its error.  ``production`` (fail closed
    by default) and ``signing_guard`` are the signing-time re-checks of :class:`SigningWorker`;
    ``account_uri`` names an account as the front end does (CAA ``accounturi``, RFC 8657):
    without it the worker cannot recheck CAA and refuses orders whose CAA check is older than
    8 hours; ``mpic`` is the corroboration setup (by default read from ``config``), so CAA
    rechecks are corroborated as validations are.
    """
    logs = ct_log_source(config, ct_logs)
    logs.current()  # an unreadable log list stops the worker now, not at the first job
    async with contextlib.AsyncExitStack() as stack:
        validator = await stack.enter_async_context(
            _caa_validator(config, clock, account_uri, mpic)
        )
        ct = await stack.enter_async_context(_ct(config, logs, clock))
        storage = await stack.enter_async_context(_storage(config, dsn))
        issuers = await stack.enter_async_context(_issuers(config, clock))
        # A profile the BRs of today forbid never signs (the front end refuses it too).
        await profile_catalog(config, clock)
        linter = await asyncio.to_thread(CertificateLinter)
        roots = await open_root_authorities(IssuerSettings.from_config(config))
        stack.push_async_callback(close_authorities, roots)
        # Every CRL this worker publishes has an age series from now (+Inf before the first).
        crl_issuers = [*issuers.names(), *(root.name for root in roots)]
        stack.callback(report_database(storage, "worker", clock, crl_issuers))
        # One publisher per issuer's CRLs among all workers (docs/ha.md).
        crl_lock = AdvisoryLocks(storage.pool)
        stack.push_async_callback(crl_lock.aclose)
        updater = StatusUpdater(
            StatusRepository(storage.pool),
            issuers,
            linter,
            clock,
            StatusSettings.from_config(config),
            roots=roots,
            crl_lock=crl_lock,
        )
        # The OV rule is the RA's; the worker asks it again at signing time (OrganizationCheck).
        organizations = OrganizationPolicy(OrganizationRepository(storage.pool), clock)
        worker = SigningWorker(
            storage.issuance,
            issuers,
            linter,
            clock,
            ct=ct,
            profile_for=profile_settings_factory(IssuanceSettings.from_config(config)),
            on_issued=updater.certificate_issued,
            poll_seconds=float(config.worker_poll_seconds),
            concurrency=config.worker_concurrency,
            lint_final=config.lint_final_certificates,
            lease=timedelta(seconds=config.issuance_lease_seconds),
            hsm_deadline=timedelta(seconds=config.hsm_deadline_seconds),
            production=production,
            signing_guard=signing_guard,
            caa=validator,
            account_uri=account_uri,
            organizations=organizations,
            organization_subject=organizations.subject,
            internal_name_waiver=IdentifierPolicy(special_use_names=True).is_special_use
            if config.special_use_names
            else None,
        )
        await _run_together(
            (worker.run(stop), "signing-worker"),
            (updater.run(stop), "status-updater"),
            # revokes every certificate of a compromised key
            (KeyCompromiseSweeper.for_storage(storage, clock).run(stop), "key-compromise-sweeper"),
        )


async def _run_together(*coroutines: tuple[Coroutine[Any, Any, None], str]) -> None:
    """Run the tasks until all end; the first failure cancels the others and is raised as
    raised (not an ExceptionGroup)."""
    tasks = [asyncio.create_task(coro, name=name) for coro, name in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
