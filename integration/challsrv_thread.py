"""The challenge test server (DNS only) on its own event-loop thread, so integration tests
can block in subprocesses and the synchronous ``acme`` library while it answers the CA."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer

_T = TypeVar("_T")


class ThreadedChallengeServer:
    def __init__(self) -> None:
        self.server = ChallengeTestServer(ChallengeServerConfig.ephemeral(http01=False))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="challenge-test-server", daemon=True
        )

    def __enter__(self) -> ThreadedChallengeServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server's loop (its record store belongs to that loop)."""

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    @property
    def resolver(self) -> str:
        """HOST:PORT for the CA's ``--dns-resolver``."""
        return f"127.0.0.1:{self.server.dns_port}"

    def set_txt(self, host: str, value: str) -> None:
        self.call(lambda: self.server.store.set_txt(host, value))
