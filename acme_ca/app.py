"""The composition root: builds storage, the authorities and the front end from one Config.

It is the only module that knows every room; the rooms themselves only know their
neighbours (see docs/architecture.md and the import-linter contracts in pyproject.toml).
Resources with a lifetime are ``cleanup_ctx`` entries: set up before ``yield``, torn down
after, and only if their set-up finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import structlog
from aiohttp import web

from acme_ca.clock import Clock, SystemClock
from acme_ca.config import Config
from acme_ca.db.completions import OrderCompletions
from acme_ca.db.storage import Storage, open_storage
from acme_ca.ra.accounts import AccountAuthority
from acme_ca.ra.challenges import ChallengeAuthority, Validator
from acme_ca.ra.finalize import FinalizeAuthority
from acme_ca.ra.identifiers import IdentifierPolicy
from acme_ca.ra.keys import KeyPolicy
from acme_ca.ra.orders import OrderAuthority, OrderPolicy
from acme_ca.ra.revocation import RevocationAuthority
from acme_ca.ra.tasks import BackgroundTasks
from acme_ca.remote_va.primary import build_validator
from acme_ca.wfe.nonces import NonceService
from acme_ca.wfe.routes import setup_front_end
from acme_ca.wfe.services import FRONT_END, FrontEnd
from acme_ca.wfe.urls import Urls

STORAGE = web.AppKey("storage", Storage)
TASKS = web.AppKey("tasks", BackgroundTasks)
NONCE_PURGE_INTERVAL = 300.0
STALE_VALIDATION_SCAN_INTERVAL = 30.0
log = structlog.get_logger(component="acme_ca.app")


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
    perspective wrapper passes itself here).  ``debian_weak_rsa_sizes``: a production
    deployment's RSA sizes its Debian weak-key lists cover; keys of other sizes are refused
    (BR 6.1.1.3, :mod:`acme_ca.deployment`).
    """
    clock = clock or SystemClock()
    app = web.Application(client_max_size=config.max_request_bytes)
    setup_front_end(app)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        storage = await open_storage(dsn, max_size=config.database_pool_size)
        tasks = BackgroundTasks()
        app[STORAGE], app[TASKS] = storage, tasks
        urls = Urls(config.external_base_url)
        orders = OrderAuthority(
            storage.orders,
            IdentifierPolicy(
                max_names=config.max_names_per_order, blocked_names=config.blocked_names
            ),
            OrderPolicy(
                order_lifetime=timedelta(seconds=config.order_lifetime_seconds),
                pending_authz_lifetime=timedelta(seconds=config.pending_authz_lifetime_seconds),
                authz_reuse=timedelta(days=config.authz_reuse_days),
                authz_reuse_percent=config.authz_reuse_percent,
            ),
            clock,
        )
        key_policy = await asyncio.to_thread(
            KeyPolicy,
            weak_key_blocklist_paths=[Path(p) for p in config.weak_key_blocklists],
            blocked_key_lookup=storage.issuance.is_key_blocked,
            debian_weak_rsa_sizes=debian_weak_rsa_sizes,
        )
        va = validator or build_validator(config, clock)
        completions = OrderCompletions(storage.pool)
        if config.finalize_wait_seconds > 0:
            await completions.listen()  # a failure is logged and retried by later finalizes
        app[FRONT_END] = FrontEnd(
            config=config,
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
            ),
            finalize=FinalizeAuthority(
                orders,
                storage.orders,
                storage.issuance,
                key_policy,
                va,
                clock,
                account_uri=urls.account,
                rsa_issuer=config.rsa_issuer,
                ecdsa_issuer=config.ecdsa_issuer,
                completions=completions,
                wait_seconds=config.finalize_wait_seconds,
            ),
            revocation=RevocationAuthority(storage.certificates, clock),
            account_reads=storage.accounts,
            order_reads=storage.orders,
            certificate_reads=storage.certificates,
        )
        yield
        await tasks.drain()
        await completions.aclose()
        await storage.close()

    async def maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
        fe = app[FRONT_END]
        loops = [
            asyncio.create_task(_every(NONCE_PURGE_INTERVAL, "nonces.purge", fe.nonces.purge)),
            asyncio.create_task(
                _every(
                    STALE_VALIDATION_SCAN_INTERVAL,
                    "validations.recover",
                    fe.challenges.recover_stale,
                )
            ),
        ]
        yield
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(maintenance_ctx)
    return app


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
