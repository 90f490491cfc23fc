"""Start and stop the DNS server, http-01 responder and management API as one unit.

Used by the test suite and by ``acme-ca serve --test``; production code never imports it.
Each listener takes a host and port; port 0 binds an ephemeral port, and the bound ports are
read back from the running server so parallel tests never collide.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from acme_ca.clock import Clock
from acme_ca.testsrv.ca_endpoints import CaEndpoints
from acme_ca.testsrv.dns import DnsServer
from acme_ca.testsrv.http01 import https01_ssl_context, make_http01_app
from acme_ca.testsrv.management import PemProvider, make_management_app
from acme_ca.testsrv.store import DEFAULT_IPV4, ChallengeStore
from acme_ca.testsrv.tlsalpn01 import TlsAlpnResponder

_log = structlog.get_logger(component=__name__)


@dataclass(frozen=True)
class BindAddress:
    """Where one listener binds; port 0 asks the OS for a free port."""

    host: str
    port: int


@dataclass(frozen=True)
class ChallengeServerConfig:
    """Pebble's defaults, but bound to loopback and with no AAAA answer unless asked for."""

    dns: BindAddress | None = field(default_factory=lambda: BindAddress("127.0.0.1", 8053))
    """UDP and TCP on the same port; None disables DNS and its management verbs."""
    management: BindAddress = field(default_factory=lambda: BindAddress("127.0.0.1", 8055))
    http01: BindAddress | None = field(default_factory=lambda: BindAddress("127.0.0.1", 5002))
    """None disables the http-01 responder and its management verbs."""
    tlsalpn01: BindAddress | None = None
    """The tls-alpn-01 listener (pebble-challtestsrv's 5001) and its management verbs; None
    (the default here) runs none."""
    https01: BindAddress | None = None
    """pebble-challtestsrv's https-01 listener (5003 there): http-01 answers over TLS, for
    redirect tests; None (the default here) runs none."""
    default_ipv4: str | None = DEFAULT_IPV4
    default_ipv6: str | None = None

    @classmethod
    def ephemeral(
        cls, host: str = "127.0.0.1", *, http01: bool = True, https01: bool = False
    ) -> ChallengeServerConfig:
        """Every listener on a free port of ``host``: what tests want."""
        return cls(
            dns=BindAddress(host, 0),
            management=BindAddress(host, 0),
            http01=BindAddress(host, 0) if http01 else None,
            https01=BindAddress(host, 0) if https01 else None,
        )


async def _start_app(
    stack: contextlib.AsyncExitStack,
    app: web.Application,
    bind: BindAddress,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Run an aiohttp app until the stack closes; returns the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, bind.host, bind.port, ssl_context=ssl_context)
    await site.start()
    port: int = runner.addresses[0][1]
    return port


class ChallengeTestServer:
    """The whole Pebble-style challenge test server; use ``async with`` or start()/stop()."""

    def __init__(
        self,
        config: ChallengeServerConfig | None = None,
        *,
        store: ChallengeStore | None = None,
        roots: PemProvider | None = None,
        intermediates: PemProvider | None = None,
        ca: CaEndpoints | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``ca`` feeds Pebble's management endpoints (keys, certificate status) on the
        management API; ``roots`` and ``intermediates`` alone serve just those two."""
        self.config = config or ChallengeServerConfig()
        self.store = store or ChallengeStore(
            default_ipv4=self.config.default_ipv4,
            default_ipv6=self.config.default_ipv6,
            clock=clock,
        )
        self._roots = roots
        self._intermediates = intermediates
        self._ca = ca
        self._stack: contextlib.AsyncExitStack | None = None
        self._dns_port: int | None = None
        self._http01_port: int | None = None
        self._tlsalpn01: TlsAlpnResponder | None = None
        self._https01_port: int | None = None
        self._management_port: int | None = None

    @property
    def dns_port(self) -> int | None:
        """The bound DNS port (UDP and TCP), or None when DNS is disabled."""
        return self._dns_port

    @property
    def http01_port(self) -> int | None:
        """The bound http-01 port, or None when the responder is disabled."""
        return self._http01_port

    @property
    def https01_port(self) -> int | None:
        """The bound https-01 port, or None when that listener is not run."""
        return self._https01_port

    @property
    def tlsalpn01_port(self) -> int | None:
        """The bound tls-alpn-01 port, or None when that listener is not running."""
        responder = self._tlsalpn01
        return responder.port if responder is not None and responder.running else None

    @property
    def management_port(self) -> int:
        if self._management_port is None:
            raise RuntimeError("challenge test server is not running")
        return self._management_port

    @property
    def management_url(self) -> str:
        """Base URL of the management API, without a trailing slash."""
        return _url(self.config.management.host, self.management_port)

    @property
    def http01_url(self) -> str | None:
        if self.config.http01 is None or self._http01_port is None:
            return None
        return _url(self.config.http01.host, self._http01_port)

    async def start(self) -> None:
        """Bind everything or nothing: a failed bind closes what was already started."""
        if self._stack is not None:
            raise RuntimeError("challenge test server already started")
        try:
            await self._start_all()
        except BaseException:
            self._dns_port = self._http01_port = self._management_port = None
            self._https01_port = None
            raise
        _log.info(
            "testsrv.started",
            dns_port=self._dns_port,
            http01_port=self._http01_port,
            https01_port=self._https01_port,
            management_port=self._management_port,
        )

    async def _start_all(self) -> None:
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            if cfg.dns is not None:
                dns_server = DnsServer(self.store, cfg.dns.host, cfg.dns.port)
                await dns_server.start()
                stack.push_async_callback(dns_server.stop)
                self._dns_port = dns_server.port
            if cfg.http01 is not None:
                self._http01_port = await _start_app(stack, make_http01_app(self.store), cfg.http01)
            if cfg.https01 is not None:
                context = https01_ssl_context(self.store.clock.now())
                self._https01_port = await _start_app(
                    stack, make_http01_app(self.store), cfg.https01, context
                )
            if cfg.tlsalpn01 is not None:
                responder = TlsAlpnResponder(self.store, cfg.tlsalpn01.host, cfg.tlsalpn01.port)
                await responder.start()
                stack.push_async_callback(responder.stop)
                self._tlsalpn01 = responder
            management = make_management_app(
                self.store,
                dns=cfg.dns is not None,
                http01=cfg.http01 is not None or cfg.https01 is not None,
                tlsalpn01=cfg.tlsalpn01 is not None,
                roots=self._roots,
                intermediates=self._intermediates,
                ca=self._ca,
            )
            self._management_port = await _start_app(stack, management, cfg.management)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Idempotent, so fixtures and signal handlers can both call it."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await stack.aclose()
        finally:
            self._dns_port = self._http01_port = self._management_port = None
            self._https01_port = None
            _log.info("testsrv.stopped")

    async def __aenter__(self) -> ChallengeTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _url(host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
