"""The status listener (``status_listen``) of ``acme-ca serve``: the key-less app of
:mod:`acme_ca.status.server` on its own plain-HTTP port.  :func:`start_plain_listener` also
serves the metrics listener (:mod:`acme_ca.main.metrics`)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.status.server import create_status_app


@dataclass
class StatusServer:
    """The running listener; :meth:`aclose` stops it."""

    runner: web.AppRunner
    url: str

    async def aclose(self) -> None:
        await self.runner.cleanup()


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


async def start_plain_listener(app: web.Application, listen: str) -> StatusServer:
    """Serve ``app`` over plain HTTP on ``listen`` (HOST:PORT; port 0: any free port); the
    URL names the port bound."""
    host, port = _host_port(listen)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 - a URL only
    if ":" in shown:
        shown = f"[{shown}]"
    return StatusServer(runner, f"http://{shown}:{bound}")


async def start_status_server(
    config: Config, dsn: str, *, clock: Clock | None = None
) -> StatusServer:
    """Listen on ``config.status_listen`` (port 0: any free port); the URL names the port."""
    return await start_plain_listener(
        create_status_app(config.pki_path, dsn, clock=clock), config.status_listen
    )
