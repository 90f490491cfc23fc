"""The ACME web application: storage, the RA's authorities and the front end, from one Config.

Each resource with a lifetime is its own ``cleanup_ctx`` entry, set up before ``yield`` and
torn down in ``finally`` (aiohttp tears down in reverse order, and only the entries whose
set-up finished): the storage pool, the background tasks (drained before the pool closes),
the order-completion listener, the validator this app built, then the front end that uses
them all and its maintenance loops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import structlog
from aiohttp import web

from acme_ca import metrics
from acme_ca.clock import Clock, SystemClock
from acme_ca.config import Config
from acme_ca.config.pebble import read_pebble_config
from acme_ca.db.audit_chain import ensure_partitions
from acme_ca.db.completions import OrderCompletions
from acme_ca.db.organizations import OrganizationRepository
from acme_ca.db.ratelimits import RateLimitRepository
from acme_ca.db.requests import RequestRecorder
from acme_ca.db.settings import DatabaseSettings
from acme_ca.db.storage import Storage, open_storage
from acme_ca.main.metrics import report_database
from acme_ca.main.profiles import profile_catalog
from acme_ca.memory import release_free_memory
from acme_ca.ra.accounts import AccountAuthority
from acme_ca.ra.challenges import ChallengeAuthority, Validator
from acme_ca.ra.finalize import FinalizeAuthority
from acme_ca.ra.identifiers import IdentifierPolicy
from acme_ca.ra.keys import KeyPolicy
from acme_ca.ra.orders import OrderAuthority, OrderPolicy
from acme_ca.ra.organizations import OrganizationPolicy
from acme_ca.ra.profiles import AccountGate
from acme_ca.ra.ratelimits import RateLimiter
from acme_ca.ra.revocation import RevocationAuthority
from acme_ca.remote_va.primary import build_validator
from acme_ca.tasks import BackgroundTasks
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.registry import enabled_methods
from acme_ca.va.settings import VASettings
from acme_ca.wfe.middleware.load_shedding import LOAD_SHEDDER, setup_load_shedding
from acme_ca.wfe.middleware.request_store import REQUEST_SINK
from acme_ca.wfe.nonces import NonceService
from acme_ca.wfe.routes import setup_front_end
from acme_ca.wfe.services import FRONT_END, FrontEnd
from acme_ca.wfe.settings import LoadSheddingSettings, WfeSettings
from acme_ca.wfe.urls import Urls

STORAGE = web.AppKey("storage", Storage)
TASKS = web.AppKey("tasks", BackgroundTasks)
COMPLETIONS = web.AppKey("completions", OrderCompletions)
VALIDATOR = web.AppKey("validator", Validator)
NONCE_PURGE_INTERVAL = 300.0
#: Validations are renewed every third of their lease: a lapsed one is found within seconds.
STALE_VALIDATION_SCAN_INTERVAL = 5.0
#: How often an idle front end gives freed memory back to the system, and what is worth a log.
MEMORY_TRIM_INTERVAL = 5.0
MEMORY_RELEASE_LOGGED = 16 * 2**20
AUDIT_PARTITION_INTERVAL = 86400.0
log = structlog.get_logger(component="acme_ca.main.app")


def create_app(
    config: Config,
    dsn: str,
    *,
    clock: Clock | None = None,
    validator: Validator | None = None,
    debian_weak_rsa_sizes: frozenset[int] | None = None,
) -> web.Application:
    """Build the ACME server for ``config`` on the database at ``dsn``.

    ``validator`` replaces the validation authority built from ``config`` (the multi-
    perspective wrapper passes itself here; its owner closes it).  ``debian_weak_rsa_sizes``:
    a production deployment's RSA sizes its Debian weak-key lists cover; keys of other sizes
    are refused (BR 6.1.1.3, :mod:`acme_ca.deployment`).
    """
    clock = clock or SystemClock()
    app = web.Application(client_max_size=config.max_request_bytes)
    setup_front_end(app)
    # innermost: inside the problem mapping
    setup_load_shedding(app, LoadSheddingSettings.from_config(config))
    database = DatabaseSettings.from_config(config)

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORAGE] = await open_storage(
            dsn,
            max_size=database.pool_size,
            acquire_timeout=database.acquire_timeout_seconds,
        )
        unreport = report_database(app[STORAGE], "acme", clock)
        try:
            yield
        finally:
            unreport()
            await app[STORAGE].close()

    async def requests_ctx(app: web.Application) -> AsyncIterator[None]:
        recorder = RequestRecorder(app[STORAGE].pool)
        recorder.start()
        app[REQUEST_SINK] = recorder
        try:
            yield
        finally:
            await recorder.aclose()  # the listener is closed: write the last rows

    async def tasks_ctx(app: web.Application) -> AsyncIterator[None]:
        app[TASKS] = BackgroundTasks()
        try:
            yield
        finally:
            await app[TASKS].drain()  # validations in flight, before the pool closes

    async def completions_ctx(app: web.Application) -> AsyncIterator[None]:
        app[COMPLETIONS] = OrderCompletions(app[STORAGE].pool)
        try:
            if config.finalize_wait_seconds > 0:
                await app[COMPLETIONS].listen()  # a failure is logged, retried by finalizes
            yield
        finally:
            await app[COMPLETIONS].aclose()

    async def validator_ctx(app: web.Application) -> AsyncIterator[None]:
        built = None
        if validator is None:
            app[VALIDATOR] = built = build_validator(VASettings.from_config(config), clock)
        else:
            app[VALIDATOR] = validator
        try:
            yield
        finally:
            if isinstance(built, ValidationAuthority):
                await built.aclose()

    async def front_end_ctx(app: web.Application) -> AsyncIterator[None]:
        async with _rate_limits(config, dsn, database) as limits:
            app[FRONT_END] = await _front_end(
                config,
                clock,
                app[STORAGE],
                app[TASKS],
                app[COMPLETIONS],
                app[VALIDATOR],
                debian_weak_rsa_sizes,
                limits,
            )
            yield

    async def maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
        fe = app[FRONT_END]
        loops = [
            asyncio.create_task(_every(NONCE_PURGE_INTERVAL, "nonces.purge", fe.nonces.purge)),
            asyncio.create_task(
                _every(MEMORY_TRIM_INTERVAL, "memory.trim", lambda: _trim_memory(app))
            ),
            asyncio.create_task(
                _every(
                    STALE_VALIDATION_SCAN_INTERVAL,
                    "validations.recover",
                    fe.challenges.recover_stale,
                )
            ),
            asyncio.create_task(
                _every(
                    AUDIT_PARTITION_INTERVAL,
                    "audit.partitions",
                    lambda: ensure_partitions(app[STORAGE].pool, clock.now()),
                )
            ),
        ]
        if config.rate_limits_enabled:  # full buckets are the same as none: drop them
            purge = RateLimitRepository(app[STORAGE].pool).purge
            loops.append(
                asyncio.create_task(
                    _every(NONCE_PURGE_INTERVAL, "ratelimits.purge", lambda: purge(clock.now()))
                )
            )
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.cleanup_ctx.extend(
        [
            storage_ctx,
            requests_ctx,
            tasks_ctx,
            completions_ctx,
            validator_ctx,
            front_end_ctx,
            maintenance_ctx,
        ]
    )
    return app


@contextlib.asynccontextmanager
async def _rate_limits(
    config: Config, dsn: str, database: DatabaseSettings
) -> AsyncIterator[RateLimitRepository | None]:
    """The rate limits' buckets on a pool of their own (reported as ``pool=ratelimits``), or
    None when the limits are off."""
    if not config.rate_limits_enabled:
        yield None
        return
    limits = await RateLimitRepository.open(dsn, acquire_timeout=database.acquire_timeout_seconds)
    unreport = metrics.register_pool("ratelimits", limits.pool)
    try:
        yield limits
    finally:
        unreport()
        await limits.close()


async def _front_end(
    config: Config,
    clock: Clock,
    storage: Storage,
    tasks: BackgroundTasks,
    completions: OrderCompletions,
    va: Validator,
    debian_weak_rsa_sizes: frozenset[int] | None,
    rate_limits: RateLimitRepository | None = None,
) -> FrontEnd:
    """The RA's authorities over ``storage`` and the front end's read-only repositories;
    ``rate_limits``: the buckets the limits are enforced with (None: no limits)."""
    urls = Urls(config.external_base_url)
    limits = RateLimiter(rate_limits, clock) if rate_limits is not None else None
    orders = OrderAuthority(
        storage.orders,
        IdentifierPolicy(
            max_names=config.max_names_per_order,
            blocked_names=config.blocked_names,
            special_use_names=config.special_use_names,
        ),
        OrderPolicy(
            order_lifetime=timedelta(seconds=config.order_lifetime_seconds),
            pending_authz_lifetime=timedelta(seconds=config.pending_authz_lifetime_seconds),
            authz_reuse=timedelta(days=config.authz_reuse_days),
            authz_reuse_percent=config.authz_reuse_percent,
        ),
        clock,
        enabled_methods(config.challenge_types),
        profiles=await profile_catalog(config, clock),
        account_gate=_account_gate(storage, clock),
        limits=limits,
    )
    # Reads the weak-key lists: a blocking start-up step, kept off the loop.
    key_policy = await asyncio.to_thread(
        KeyPolicy,
        weak_key_blocklist_paths=[Path(p) for p in config.weak_key_blocklists],
        blocked_key_lookup=storage.issuance.is_key_blocked,
        debian_weak_rsa_sizes=debian_weak_rsa_sizes,
    )
    return FrontEnd(
        settings=WfeSettings.from_config(config),
        clock=clock,
        urls=urls,
        nonces=NonceService(
            storage.nonces,
            await storage.nonces.shared_secret(),
            timedelta(seconds=config.nonce_lifetime_seconds),
            clock,
            reject_percent=config.nonce_reject_percent,
        ),
        accounts=AccountAuthority(
            storage.accounts,
            storage.eab_keys,
            key_policy,
            clock,
            terms_of_service=config.terms_of_service,
            external_account_required=config.external_account_required,
            shared_eab_keys=await _pebble_eab_keys(config),
            limits=limits,
        ),
        orders=orders,
        challenges=ChallengeAuthority(
            storage.orders,
            storage.accounts,
            va,
            tasks,
            clock,
            account_uri=urls.account,
            reuse_period=orders.reuse_period,
            lease=timedelta(seconds=config.validation_lease_seconds),
            max_delay_seconds=config.validation_delay_seconds,
            wait_seconds=config.challenge_wait_seconds,
            retry_after_seconds=config.retry_after_seconds,
            limits=limits,
        ),
        finalize=FinalizeAuthority(
            orders,
            storage.orders,
            storage.issuance,
            key_policy,
            va,
            clock,
            account_uri=urls.account,
            completions=completions,
            wait_seconds=config.finalize_wait_seconds,
            limits=limits,
        ),
        revocation=RevocationAuthority(storage.certificates, clock),
        account_reads=storage.accounts,
        order_reads=storage.orders,
        certificate_reads=storage.certificates,
    )


async def _pebble_eab_keys(config: Config) -> dict[str, bytes]:
    """Test mode's ``--pebble-config``: its MAC keys, shared by any number of accounts; the
    members we apply and those we ignore are logged once, here."""
    if config.pebble_config is None:
        return {}
    known = frozenset(f.name for f in fields(Config))
    pebble = await asyncio.to_thread(read_pebble_config, config.pebble_config, known)
    log.warning(
        "testmode.pebble_config",
        path=str(config.pebble_config),
        applied=sorted(pebble.settings),
        ignored=list(pebble.ignored),
        eab_kids=sorted(pebble.eab_keys),
        eab_required=config.external_account_required,
    )
    return pebble.eab_keys


def _account_gate(storage: Storage, clock: Clock) -> AccountGate:
    """Organization profiles (``ov``): only accounts bound by EAB to a vetted organization,
    and only while that organization may be used (revoked, BR 4.2.1 reuse)."""
    organizations = OrganizationRepository(storage.pool)

    async def bound(account_id: int) -> bool:
        return await organizations.organization_for_account(account_id) is not None

    return AccountGate(bound, OrganizationPolicy(organizations, clock).check, clock)


async def _trim_memory(app: web.Application) -> int:
    """After a load spike, give the freed memory back (:mod:`acme_ca.memory`); skipped while
    requests are being served.  Logs ``memory.released`` when it gave back much."""
    if app[LOAD_SHEDDER].in_flight > 0:
        return 0
    before, after = await asyncio.to_thread(release_free_memory)
    if before - after > MEMORY_RELEASE_LOGGED:
        log.info(
            "memory.released",
            released_mb=round((before - after) / 2**20),
            resident_mb=round(after / 2**20),
        )
    return 0


async def _every(seconds: float, name: str, job: Callable[[], Awaitable[int]]) -> None:
    """Run ``job`` now and then every ``seconds``; a failure is logged, never fatal."""
    while True:
        try:
            done = await job()
            if done:
                log.info(name, count=done)
        except Exception as exc:
            log.warning(f"{name}_failed", error=repr(exc))
        await asyncio.sleep(seconds)
