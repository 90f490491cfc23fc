"""Load shedding: answer at once with 503 and ``Retry-After`` instead of letting clients time
out (RFC 8555 §6.6 lets clients back off; RFC 9110 §15.6.4).

Three bounds, all from the configuration (docs/operations.md, "Load shedding"):

* **Requests in flight** per process (``max_requests_in_flight``, by default 16 per pooled
  database connection): one more is answered ``serverInternal`` 503 before any work.  A
  request that starts new work (newAccount, newOrder) is refused already at half the bound
  (:data:`NEW_WORK_PATHS`), so under overload the requests that finish flows clients have
  begun (challenges, polls, finalize, downloads) keep the other half: shedding delays new
  orders instead of stranding those in progress.
* **Database waits**: the pool's acquire timeout (``database_acquire_timeout_seconds``,
  :class:`acme_ca.db.pool.BoundedPool`) and a database outage (lost connection, server
  restarting) become the same 503, never a 500 with a traceback.  Only a request's first
  wait for a connection is bounded so (:func:`acme_ca.db.pool.request_scope`): one that has
  begun writing is not shed halfway.
* **Connections** (:class:`ConnectionGuard`, wired by :class:`GuardedRunner`): at most
  ``max_connections`` open, a new one above it closes the one idle longest; a connection that
  has not sent its first request's headers within ``header_read_timeout_seconds`` is closed
  (aiohttp has no header-read timeout); idle keep-alive ones close after
  ``keepalive_timeout_seconds``.  2,000 idle sockets and 200 slowloris connections thus
  cannot keep a real client from being served.

The middleware sits inside the problem mapping, so a shed request still gets its problem
document, ``Replay-Nonce`` and ``request.done`` log line.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
from collections import OrderedDict
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError
from acme_ca.db.errors import database_unavailable
from acme_ca.db.pool import request_scope
from acme_ca.wfe import urls
from acme_ca.wfe.settings import LoadSheddingSettings

log = structlog.get_logger(component="acme_ca.wfe.load_shedding")

#: File descriptors kept free for the database pool, log files, DNS and HTTP clients.
FD_RESERVE = 200
#: Requests that start new work: admitted only below :attr:`LoadShedder.new_work_limit`.
NEW_WORK_PATHS = frozenset({urls.NEW_ACCOUNT, urls.NEW_ORDER})


class ConnectionGuard:
    """Counts a server's connections and requests; closes idle and slow-header connections.

    Connections without a request in progress sit in ``_idle`` in the order they became
    idle, so the one idle longest is evicted in O(1) when a new connection goes over
    ``max_connections``.
    """

    def __init__(self, *, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self._header_timeout = header_timeout
        self._open: dict[RequestHandler, asyncio.TimerHandle | None] = {}
        self._idle: OrderedDict[RequestHandler, None] = OrderedDict()
        self._busy: dict[RequestHandler, int] = {}
        self.evicted = 0
        self.header_timeouts = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def opened(self, handler: RequestHandler) -> None:
        """A new connection: start its header clock, and make room if over the cap."""
        loop = asyncio.get_running_loop()
        self._open[handler] = loop.call_later(self._header_timeout, self._slow_headers, handler)
        self._idle[handler] = None
        while len(self._open) > self.max_connections and len(self._idle) > 1:
            oldest, _ = self._idle.popitem(last=False)
            if oldest is handler:  # never the newcomer: put it back at the young end
                self._idle[handler] = None
                continue
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 1000 == 0:
                log.warning(
                    "connections.evicted",
                    open=len(self._open),
                    max_connections=self.max_connections,
                    evicted=self.evicted,
                )
            oldest.force_close()  # connection_lost() will call closed()
            self._forget(oldest)

    def closed(self, handler: RequestHandler) -> None:
        self._forget(handler)

    def _forget(self, handler: RequestHandler) -> None:
        timer = self._open.pop(handler, None)
        if timer is not None:
            timer.cancel()
        self._idle.pop(handler, None)
        self._busy.pop(handler, None)

    def _slow_headers(self, handler: RequestHandler) -> None:
        if handler not in self._open:
            return
        self._open[handler] = None
        self.header_timeouts += 1
        if self.header_timeouts == 1 or self.header_timeouts % 100 == 0:
            log.warning(
                "connections.header_timeout",
                seconds=self._header_timeout,
                closed=self.header_timeouts,
            )
        handler.force_close()
        self._forget(handler)

    def request_started(self, handler: RequestHandler) -> None:
        """Headers are in: the connection is busy, its header clock stops."""
        if handler not in self._open:
            return
        timer = self._open[handler]
        if timer is not None:
            timer.cancel()
            self._open[handler] = None
        self._idle.pop(handler, None)
        self._busy[handler] = self._busy.get(handler, 0) + 1

    def request_finished(self, handler: RequestHandler) -> None:
        """Back to idle (the keep-alive timeout of aiohttp closes it if nothing follows)."""
        if handler not in self._busy:
            return
        self._busy[handler] -= 1
        if self._busy[handler] == 0:
            del self._busy[handler]
            self._idle[handler] = None


class LoadShedder:
    """The per-process bounds of the front end (module docstring)."""

    def __init__(self, settings: LoadSheddingSettings) -> None:
        self.max_in_flight = settings.max_in_flight
        #: Half the bound for new work (never below 2, never above the bound).
        self.new_work_limit = min(self.max_in_flight, max(2, self.max_in_flight // 2))
        self.retry_after = str(settings.retry_after_seconds)
        self.keepalive_timeout = float(settings.keepalive_timeout_seconds)
        self.in_flight = 0
        self.shed = 0
        self.connections = ConnectionGuard(
            max_connections=connection_cap(settings.max_connections),
            header_timeout=float(settings.header_read_timeout_seconds),
        )

    def unavailable(self, detail: str) -> AcmeError:
        return AcmeError(problems.service_unavailable(detail), {"Retry-After": self.retry_after})


def connection_cap(configured: int) -> int:
    """``configured``, kept below the open-files limit: a process out of descriptors stops
    accepting altogether, which would shut real clients out too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - FD_RESERVE))


LOAD_SHEDDER = web.AppKey("load_shedder", LoadShedder)


@web.middleware
async def load_shedding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    shedder = request.app[LOAD_SHEDDER]
    protocol = request.protocol
    shedder.connections.request_started(protocol)
    try:
        with request_scope():
            return await _bounded(shedder, request, handler)
    finally:
        shedder.connections.request_finished(protocol)


async def _bounded(
    shedder: LoadShedder, request: web.Request, handler: Handler
) -> web.StreamResponse:
    limit = shedder.max_in_flight
    if request.method == "POST" and request.path in NEW_WORK_PATHS:
        limit = shedder.new_work_limit
    if shedder.in_flight >= limit:
        shedder.shed += 1
        if shedder.shed == 1 or shedder.shed % 100 == 0:
            log.warning(
                "requests.shed",
                in_flight=shedder.in_flight,
                max_in_flight=shedder.max_in_flight,
                limit=limit,
                shed=shedder.shed,
            )
        raise shedder.unavailable(
            "the server is at its limit of requests in flight; retry after the Retry-After delay"
        )
    shedder.in_flight += 1
    try:
        return await handler(request)
    except Exception as exc:
        if isinstance(exc, AcmeError | web.HTTPException) or not database_unavailable(exc):
            raise
        log.warning("request.database_unavailable", error=repr(exc))
        raise shedder.unavailable(
            "the database is unavailable or busy; retry after the Retry-After delay"
        ) from None
    finally:
        shedder.in_flight -= 1


def setup_load_shedding(app: web.Application, settings: LoadSheddingSettings) -> LoadShedder:
    """Register the middleware (innermost: inside the problem mapping) and its bounds."""
    shedder = LoadShedder(settings)
    app[LOAD_SHEDDER] = shedder
    app.middlewares.append(load_shedding_middleware)
    return shedder


class _GuardedServer(web.Server):
    """aiohttp's connection manager, telling the guard of every connection."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._guard.opened(handler)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._guard.closed(handler)


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose server reports connections to the app's :class:`LoadShedder`
    and closes idle keep-alive connections after its ``keepalive_timeout``."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._server_kwargs = kwargs
        for runner_only in ("handle_signals", "shutdown_timeout"):
            self._server_kwargs.pop(runner_only, None)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up
        shedder = self.app[LOAD_SHEDDER]
        return _GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            guard=shedder.connections,
            keepalive_timeout=shedder.keepalive_timeout,
            **self._server_kwargs,
        )


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    handshake_timeout: float,
) -> asyncio.Server:
    """Listen for ``runner`` as aiohttp's ``TCPSite`` does, and bound the TLS handshake by
    ``handshake_timeout``: a connection that never completes its handshake (an idle socket on
    the TLS port) never reaches the connection guard, and asyncio's default wait is 60 s."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    return await asyncio.get_running_loop().create_server(
        server,
        host,
        port,
        ssl=ssl_context,
        reuse_address=True,
        ssl_handshake_timeout=handshake_timeout if ssl_context is not None else None,
    )


async def close_listener(listener: asyncio.Server) -> None:
    """Stop accepting; the runner's clean-up, after this, closes the connections.  Not
    ``wait_closed()``: from Python 3.12 on it waits for those connections, which only that
    clean-up closes."""
    listener.close()
