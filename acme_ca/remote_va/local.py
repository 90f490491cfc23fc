"""``serve --test --perspectives N``: N remote VAs in the CA's own process, for trying out
corroboration on one machine.

Each runs the real remote VA application (:func:`make_remote_va_app`) on its own
127.0.0.1 port behind mutual TLS with material written to ``home/mpic-test`` by
:func:`create_mpic_material`, and resolves through the same challenge test server as the
primary -- so they all see the same answers, and they are **not** distinct network
perspectives: this is a demonstration, said so in a warning.  Ids are ``test-1`` ..
``test-N``; RIRs are assigned in turn (ARIN, RIPE NCC, APNIC, LACNIC, AFRINIC), so two or
more span two RIRs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from acme_ca.clock import Clock, SystemClock
from acme_ca.remote_va.server import make_remote_va_app
from acme_ca.remote_va.settings import RemoteIdentity
from acme_ca.va.mtls import create_mpic_material, server_context
from acme_ca.va.perspectives import MpicSetup, Perspective
from acme_ca.va.quorum import RIRS
from acme_ca.va.settings import VASettings
from acme_ca.va.setup import remote_authority_factory

log = structlog.get_logger(component="acme_ca.remote_va.local")


@contextlib.asynccontextmanager
async def local_remote_vas(
    settings: VASettings, home: Path, clock: Clock | None = None
) -> AsyncIterator[MpicSetup]:
    """Start ``settings.mpic.test_perspectives`` remote VAs, their mutual-TLS material under
    ``home/mpic-test``; yields the primary's setup for them."""
    clock = clock or SystemClock()
    count = settings.mpic.test_perspectives
    ids = [f"test-{i}" for i in range(1, count + 1)]
    material = await asyncio.to_thread(create_mpic_material, home / "mpic-test", ids)
    perspectives: list[Perspective] = []
    async with contextlib.AsyncExitStack() as stack:
        for index, pid in enumerate(ids):
            rir = RIRS[index % len(RIRS)]
            cert, key = material.remotes[pid]
            context = server_context(cert, key, material.ca_cert)
            app = make_remote_va_app(
                RemoteIdentity(pid, rir), remote_authority_factory(settings, clock, pid)
            )
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            port = runner.addresses[0][1]
            perspectives.append(Perspective(pid, rir, f"https://127.0.0.1:{port}"))
        log.warning(
            "testmode.perspectives",
            detail=f"{count} remote VA(s) in this process, all resolving through the challenge "
            "test server: corroboration can be tried out, but these are not distinct network "
            "perspectives",
            perspectives=[{"id": p.id, "rir": p.rir, "url": p.url} for p in perspectives],
            mtls=str(material.directory),
        )
        yield MpicSetup(
            perspectives=tuple(perspectives),
            strict=False,
            source=f"serve --test --perspectives {count}",
            client_cert=material.primary_cert,
            client_key=material.primary_key,
            server_ca=material.ca_cert,
            timeout_seconds=float(settings.mpic.timeout_seconds),
            grace_seconds=settings.mpic.grace_milliseconds / 1000,
        )
