"""The metrics listener of every process (``metrics_listen``): ``GET /metrics`` in the
Prometheus text format, on its own plain-HTTP port, never the ACME port; and the database
gauges each process with a pool reports (docs/operations.md, "Metrics and alerts").

Served on the event loop by aiohttp: ``generate_latest`` takes well under a millisecond for
the families of :mod:`acme_ca.metrics`, and the database gauges are read by one or two
indexed queries at most every :data:`acme_ca.metrics.REFRESH_SECONDS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import structlog
from aiohttp import web
from prometheus_client import generate_latest

from acme_ca import metrics
from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.db.gauges import GaugeReads
from acme_ca.db.storage import Storage
from acme_ca.main.status import StatusServer, start_plain_listener

METRICS_PATH = "/metrics"
#: The text exposition format every Prometheus (2.x and 3.x) parses; the names here are all
#: legacy-valid, so prometheus-client writes exactly it whatever version it labels "latest".
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
log = structlog.get_logger(component="acme_ca.main.metrics")


async def _metrics(request: web.Request) -> web.Response:
    await metrics.refresh()
    return web.Response(
        body=generate_latest(metrics.REGISTRY), headers={"Content-Type": TEXT_FORMAT}
    )


def create_metrics_app() -> web.Application:
    app = web.Application(client_max_size=1024)
    app.router.add_get(METRICS_PATH, _metrics)
    return app


@contextlib.asynccontextmanager
async def metrics_listener(config: Config, process: str) -> AsyncIterator[StatusServer | None]:
    """The listener of ``process`` (serve, worker, remote-va) on its ``metrics_listen``
    address, until the context exits; None when that is ``off``.  A port that cannot be
    bound stops the process (an operator who configured scraping expects it to work)."""
    listen = config.metrics_address(process)
    if listen == "off":
        log.info("metrics.off", process=process)
        yield None
        return
    try:
        server = await start_plain_listener(create_metrics_app(), listen)
    except OSError:
        log.exception("metrics.listen_failed", listen=listen, process=process)
        raise
    log.info("metrics.ready", url=server.url + METRICS_PATH, listen=listen, process=process)
    try:
        yield server
    finally:
        await server.aclose()


def report_database(
    storage: Storage, name: str, clock: Clock, crl_issuers: Sequence[str] = ()
) -> Callable[[], None]:
    """Report the use of ``storage``'s pool as ``pool=name`` and, from its database, the
    issuance queue and the newest CRLs, until the returned function is called (before the
    pool closes). ``crl_issuers`` (the worker's: every CRL it publishes) get a CRL age from
    the start, +Inf until their first CRL, so the alert cannot miss an issuer never published."""
    reads = GaugeReads(storage.pool)

    async def issuance_queue() -> None:
        state = await reads.issuance_queue()
        oldest = state.oldest_created_at
        age = 0.0 if oldest is None else max(0.0, (clock.now() - oldest).total_seconds())
        metrics.set_issuance_queue(state.queued, state.running, age)

    async def crls() -> None:
        now = clock.now()
        metrics.set_crl_times(
            [
                (
                    c.issuer,
                    (now - c.this_update).total_seconds(),
                    (c.next_update - now).total_seconds(),
                )
                for c in await reads.newest_crls()
            ],
            crl_issuers,
        )

    stops = [
        metrics.register_pool(name, storage.pool),
        metrics.add_refresher("issuance_queue", issuance_queue),
        metrics.add_refresher("crls", crls),
    ]

    def stop() -> None:
        for undo in stops:
            undo()

    return stop
