"""``acme-ca remote-va``: one remote network perspective (BR 3.2.2.9) as a process: its
settings, the mutual-TLS context, the app of :mod:`acme_ca.remote_va.server`, a listener (or the
socket systemd passed), until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from typing import Final

import structlog
from aiohttp import web

from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.main.metrics import metrics_listener
from acme_ca.psl import parse_public_suffix_lists
from acme_ca.remote_va.server import make_remote_va_app
from acme_ca.remote_va.settings import RemoteVaSettings
from acme_ca.va.mtls import server_context
from acme_ca.va.perspectives import MpicConfigError
from acme_ca.va.setup import remote_authority_factory

SD_LISTEN_FDS_START: Final = 3

log = structlog.get_logger(component="acme_ca.remote_va")


def inherited_listen_socket() -> socket.socket | None:
    """The listening socket of systemd-style socket activation, if one was passed."""
    fds = os.environ.pop("LISTEN_FDS", None)
    pid = os.environ.pop("LISTEN_PID", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if fds is None or (pid is not None and pid != str(os.getpid())):
        return None
    if fds != "1":
        raise MpicConfigError(f"remote-va: LISTEN_FDS={fds}; exactly one listening socket expected")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.setblocking(False)
    return sock


async def run_remote_va(config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Serve as one remote perspective until ``stop`` is set or SIGTERM/SIGINT."""
    settings = RemoteVaSettings.from_config(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    context = await asyncio.to_thread(
        server_context, settings.tls_cert, settings.tls_key, settings.client_ca
    )
    # Before listening: no validation parses the Public Suffix List on the event loop.
    await asyncio.to_thread(parse_public_suffix_lists)
    identity = settings.identity
    app = make_remote_va_app(
        identity, remote_authority_factory(settings.va, SystemClock(), identity.perspective_id)
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(metrics_listener(config, "remote-va"))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        sock = inherited_listen_socket()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock, ssl_context=context)
            host, port = sock.getsockname()[:2]
            listen = f"fd:3 ({host}:{port})"
        else:
            site = web.TCPSite(
                runner, settings.host, settings.port, ssl_context=context, reuse_address=True
            )
            listen = config.remote_va_listen
        await site.start()
        log.info(
            "remote_va.ready",
            perspective=identity.perspective_id,
            rir=identity.rir,
            listen=listen,
            dns_resolver=config.dns_resolver,
            dnssec=config.dnssec,
            client_ca=str(settings.client_ca),
        )
        await stop.wait()
        log.info("remote_va.stopping", perspective=identity.perspective_id)
