"""``acme-ca serve``: database, schema, front end, listener; until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from acme_ca.app import create_app
from acme_ca.config import Config
from acme_ca.db.database import database_dsn, migrate
from acme_ca.tls import server_ssl_context
from acme_ca.wfe import urls

log = structlog.get_logger(component="acme_ca.serve")


async def serve(config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Run the CA until ``stop`` is set or the process is asked to terminate."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config.database_url is None:
        log.info("database.embedded", home=str(config.home.resolve()))
    async with database_dsn(config) as dsn:
        applied = await migrate(dsn)
        log.info("database.migrated", applied=applied)
        ssl_context = await asyncio.to_thread(server_ssl_context, config)
        runner = web.AppRunner(create_app(config, dsn), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                config.listen_host,
                config.listen_port,
                ssl_context=ssl_context,
                reuse_address=True,
            )
            await site.start()
            log.info(
                "server.ready",
                directory=config.external_base_url + urls.DIRECTORY,
                listen=config.listen,
                tls="off (plain_http)" if ssl_context is None else "on",
                tls_ca=None
                if ssl_context is None or config.tls_cert
                else str((config.home / "tls" / "ca.pem").resolve()),
            )
            await stop.wait()
            log.info("server.stopping")
        finally:
            await runner.cleanup()
