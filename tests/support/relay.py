"""A TCP relay in front of PostgreSQL that a test cuts and restores: a real database outage
(every connection closed, new ones refused) without stopping the server the other tests
share.  Used by tests/test_load_shedding.py and tests/test_db_failover.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit


class Relay:
    """A TCP relay in front of PostgreSQL that the test can cut (closing every relayed
    connection and refusing new ones) and restore on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port or 0, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._pipes):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._pipes.update({writer, up_writer})

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pipes.difference_update({writer, up_writer})

    def dsn(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by the relay's."""
        parts = urlsplit(dsn)
        creds = parts.netloc.rsplit("@", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{creds}@127.0.0.1:{self.port}"))


@contextlib.asynccontextmanager
async def relay_to(dsn: str) -> AsyncIterator[Relay]:
    """A started relay to the server of ``dsn``, cut on exit."""
    parts = urlsplit(dsn)
    assert parts.hostname is not None and parts.port is not None
    relay = Relay(parts.hostname, parts.port)
    await relay.start()
    try:
        yield relay
    finally:
        with contextlib.suppress(AssertionError):
            await relay.cut()
