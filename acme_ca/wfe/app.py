"""The aiohttp application: middlewares, routes, and the lifetimes of pool and services.

Resources with a lifetime are ``cleanup_ctx`` entries: set up before ``yield``, torn down
after, and only if their set-up finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from aiohttp import web

from acme_ca.clock import Clock, SystemClock
from acme_ca.config import Config
from acme_ca.db.storage import Storage, open_storage
from acme_ca.ra.accounts import AccountAuthority
from acme_ca.ra.keys import KeyPolicy
from acme_ca.wfe import account, directory, nonce, urls
from acme_ca.wfe.middleware.problems import setup_problems
from acme_ca.wfe.middleware.protocol_headers import setup_protocol_headers
from acme_ca.wfe.middleware.request_log import setup_request_log
from acme_ca.wfe.nonces import NonceService
from acme_ca.wfe.services import FRONT_END, FrontEnd
from acme_ca.wfe.urls import Urls

STORAGE = web.AppKey("storage", Storage)
NONCE_PURGE_INTERVAL = 300.0
log = structlog.get_logger(component="acme_ca.wfe.app")


def create_app(config: Config, dsn: str, *, clock: Clock | None = None) -> web.Application:
    """Build the ACME front end for ``config`` on the database at ``dsn``."""
    clock = clock or SystemClock()
    app = web.Application(client_max_size=config.max_request_bytes)
    setup_request_log(app)
    setup_protocol_headers(app)
    setup_problems(app)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        storage = await open_storage(dsn, max_size=config.database_pool_size)
        app[STORAGE] = storage
        app[FRONT_END] = FrontEnd(
            config=config,
            clock=clock,
            urls=Urls(config.external_base_url),
            nonces=NonceService(
                storage.nonces,
                await storage.nonces.shared_secret(),
                timedelta(seconds=config.nonce_lifetime_seconds),
                clock,
            ),
            accounts=AccountAuthority(
                storage.accounts,
                storage.eab_keys,
                KeyPolicy(),
                clock,
                terms_of_service=config.terms_of_service,
                external_account_required=config.external_account_required,
            ),
            account_reads=storage.accounts,
        )
        yield
        await storage.close()

    async def nonce_purge_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_purge_nonces_forever(app[FRONT_END].nonces))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(nonce_purge_ctx)
    _add_routes(app)
    return app


async def _purge_nonces_forever(nonces: NonceService) -> None:
    while True:
        try:
            removed = await nonces.purge()
            if removed:
                log.info("nonces.purged", removed=removed)
        except Exception as exc:
            log.warning("nonces.purge_failed", error=repr(exc))
        await asyncio.sleep(NONCE_PURGE_INTERVAL)


def _add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(urls.DIRECTORY, directory.get_directory)
    r.add_route("HEAD", urls.NEW_NONCE, nonce.head_new_nonce)
    r.add_get(urls.NEW_NONCE, nonce.get_new_nonce, allow_head=False)
    r.add_post(urls.NEW_ACCOUNT, account.post_new_account)
    r.add_post(urls.ACCOUNT, account.post_account)
    r.add_post(urls.ACCOUNT_ORDERS, account.post_account_orders)
    r.add_post(urls.KEY_CHANGE, account.post_key_change)
