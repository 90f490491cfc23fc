"""Reused TCP connections to a DNS resolver (RFC 7766 §6.2.1) for the VA's DNS client.

:class:`TcpConnection` is dnspython's asyncio stream socket plus what reuse needs;
:func:`exchange` sends one query over it and reads its reply (RFC 1035 §4.2.2 framing), parsed
as far as the VA reads it (:mod:`acme_ca.va.dns_reply`); :class:`TcpPool` keeps one
nameserver's idle connections, closes them after an idle timeout, and never hands out one the
peer closed or one from another event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable
from typing import TypeVar

import dns._asyncbackend
import dns.exception
import dns.inet
import dns.message

from acme_ca.va.dns_reply import parse_reply, query_wire

_T = TypeVar("_T")


async def _within(awaitable: Awaitable[_T], seconds: float | None) -> _T:
    """``awaitable`` with dnspython's timeout exception, as its socket methods raise."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise dns.exception.Timeout from None


class TcpConnection(dns._asyncbackend.StreamSocket):  # dns.asyncbackend's, re-exported
    """One TCP connection to a resolver, for :func:`exchange`.

    dnspython's asyncio stream socket plus what reuse needs: ``received`` counts the reply bytes
    read for the current query (a reused connection that fails before the first one was closed
    by the server and the query may be asked again; after it, the stream is mid-message and the
    connection is only fit to be closed) and :meth:`reusable` notices a peer that closed it.
    """

    def __init__(
        self,
        host: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(dns.inet.af_for_address(host), socket.SOCK_STREAM)
        self.reader = reader
        self.writer = writer
        self.loop = loop
        self.received = 0
        self.idle_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, host: str, port: int, seconds: float) -> TcpConnection:
        reader, writer = await _within(asyncio.open_connection(host, port), seconds)
        return cls(host, reader, writer, asyncio.get_running_loop())

    # dnspython's socket interface names the argument ``timeout``.
    async def sendall(self, what: bytes, timeout: float | None) -> None:  # noqa: ASYNC109
        self.writer.write(what)
        await _within(self.writer.drain(), timeout)

    async def recv(self, size: int, timeout: float | None) -> bytes:  # noqa: ASYNC109
        data = await _within(self.reader.read(size), timeout)
        self.received += len(data)
        return data

    async def getpeername(self) -> object:
        return self.writer.get_extra_info("peername")

    async def getsockname(self) -> object:
        return self.writer.get_extra_info("sockname")

    async def close(self) -> None:
        self.shut()

    def reusable(self) -> bool:
        """Still open both ways as far as we know: no EOF, error or close seen."""
        return not (
            self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None
        )

    def shut(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if not self.writer.is_closing():
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                self.writer.close()


async def exchange(
    conn: TcpConnection, query: dns.message.Message, seconds: float
) -> dns.message.Message:
    """Send ``query`` over ``conn`` and read its reply, all within ``seconds``.

    Raises ``dns.exception.Timeout``, ``EOFError`` (the peer closed the connection; nothing of
    the reply read if ``conn.received`` is 0), ``OSError``, what dnspython raises for a
    malformed reply, and ``dns.query.BadResponse`` for one that does not answer ``query``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    wire = query_wire(query)
    await conn.sendall(struct.pack("!H", len(wire)) + wire, seconds)

    async def read_exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = await conn.recv(size - len(data), max(deadline - loop.time(), 0.0))
            if not chunk:
                raise EOFError("the resolver closed the connection")
            data += chunk
        return data

    (length,) = struct.unpack("!H", await read_exactly(2))
    return parse_reply(query, await read_exactly(length))


class TcpPool:
    """The idle TCP connections to one nameserver; the most recently used goes out first."""

    def __init__(self, size: int, idle_timeout: float) -> None:
        self._size = size
        self._idle_timeout = idle_timeout
        self._idle: list[TcpConnection] = []
        self.closed = False

    def take(self) -> TcpConnection | None:
        """An idle connection still open, on the running event loop; None if there is none."""
        loop = asyncio.get_running_loop()
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_timer is not None:
                conn.idle_timer.cancel()
                conn.idle_timer = None
            if conn.loop is loop and conn.reusable():
                conn.received = 0
                return conn
            conn.shut()
        return None

    def put(self, conn: TcpConnection) -> None:
        """Keep a connection whose last exchange completed; close it if there is no room."""
        if self.closed or len(self._idle) >= self._size or not conn.reusable():
            conn.shut()
            return
        conn.idle_timer = conn.loop.call_later(self._idle_timeout, self._expire, conn)
        self._idle.append(conn)

    def _expire(self, conn: TcpConnection) -> None:
        conn.idle_timer = None
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        conn.shut()

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their query ends."""
        self.closed = True
        while self._idle:
            self._idle.pop().shut()

    def __len__(self) -> int:
        return len(self._idle)
