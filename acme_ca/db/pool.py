"""The asyncpg pool: JSON codecs registered once per connection through ``init=``."""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import asyncpg

#: A request's later waits for a connection, as a multiple of the acquire timeout (below).
BEGUN_WAIT_FACTOR = 5


class _Request:
    """The current request: when it began, and whether it has had a connection yet."""

    __slots__ = ("begun", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.begun = False


_REQUEST: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "acme_ca_db_request", default=None
)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """One request's database work: only its first wait for a connection is bounded by the
    acquire timeout (load shedding, before anything is written).  Once it has had one, its
    later waits may take :data:`BEGUN_WAIT_FACTOR` times as long: a request that has already
    changed state (a challenge set processing, an order finalized) and then answered 503
    would leave its client a retry that meets 409 or ``orderNotReady`` instead.  Background
    work the request starts (its validation) inherits the begun state."""
    token = _REQUEST.set(_Request())
    try:
        yield
    finally:
        _REQUEST.reset(token)


def request_age() -> float:
    """Seconds since the current request's :func:`request_scope` began (0 outside one):
    the answers that wait for work (challenge, finalize) count their wait from the request's
    arrival, so time it spent queueing under load is not added to it."""
    current = _REQUEST.get()
    return 0.0 if current is None else time.monotonic() - current.started


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook that skips asyncpg's default reset query.

    The default runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release: one more round trip per pooled query, about 5 % of the server's CPU under load.
    Nothing here changes session state: no SET, no advisory locks, no cursors outside a
    transaction, and the two LISTEN connections UNLISTEN before they go back.  asyncpg
    still rolls back a transaction left open and drops Python-side listeners before this
    hook runs.
    """
    del conn


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no type stubs
    """A pool whose ``acquire()`` waits at most ``acquire_timeout`` seconds by default.

    Every repository call goes through ``acquire()`` (asyncpg's ``fetch``/``execute``
    helpers included), so one bound covers them all: a full pool or an unreachable server
    raises ``TimeoutError`` (:func:`acme_ca.db.errors.database_unavailable`) instead of
    queueing a request into its client's timeout.
    """

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        if timeout is None:
            timeout = self._acquire_timeout
            current = _REQUEST.get()
            if current is not None and timeout is not None:
                if current.begun:
                    timeout *= BEGUN_WAIT_FACTOR
                else:
                    return _DiscardBroken(super().acquire(timeout=timeout), current)
        return _DiscardBroken(super().acquire(timeout=timeout))


class _DiscardBroken:
    """asyncpg's acquire context, which terminates a connection whose protocol state broke
    (``InternalClientError``) before it goes back to the pool.

    A server that dies mid-operation (a Patroni primary SIGKILLed) can leave a connection that
    asyncpg does not see as closed but that fails every later operation with "cannot switch
    to state N" (MagicStack/asyncpg#1069); returned to the pool, it would fail the next
    requests too.  ``await pool.acquire()`` passes through unchanged.
    """

    __slots__ = ("_con", "_inner", "_request")

    def __init__(self, inner: Any, request: _Request | None = None) -> None:
        self._inner = inner
        self._con: asyncpg.Connection | None = None
        self._request = request

    async def __aenter__(self) -> asyncpg.Connection:
        self._con = await self._inner.__aenter__()
        if self._request is not None:
            self._request.begun = True  # request_scope: this request has begun
        return self._con

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, asyncpg.InternalClientError) and self._con is not None:
            self._con.terminate()
        await self._inner.__aexit__(exc_type, exc, tb)

    def __await__(self) -> Any:
        return self._acquired().__await__()

    async def _acquired(self) -> asyncpg.Connection:
        con = await self._inner
        if self._request is not None:
            self._request.begun = True
        return con


async def create_pool(
    dsn: str,
    *,
    max_size: int = 10,
    acquire_timeout: float | None = None,
    server_settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """Open a pool; raises ``OSError``/``asyncpg.PostgresError`` when the server is unreachable.

    ``acquire_timeout``: the longest wait for a connection (None: unbounded, for the CLI's
    one-shot commands); ``server_settings``: session settings of every connection."""
    pool = BoundedPool(
        dsn,
        server_settings=dict(server_settings) if server_settings else None,
        acquire_timeout=acquire_timeout,
        min_size=1,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        reset=_keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=30,
    )
    await pool
    return pool


async def rows_by_id(
    pool: asyncpg.Pool, query: str, *args: object, batch: int
) -> AsyncIterator[asyncpg.Record]:
    """Every row of ``query`` in id order, read ``batch`` at a time by keyset (no OFFSET, so a
    long walk costs the same per row).  ``query`` gets the last id seen as $1 (0 at first: ids
    are positive), ``args`` as $2..., and ``batch`` last; it ends ``ORDER BY id LIMIT $n``."""
    after = 0
    while True:
        rows = await pool.fetch(query, after, *args, batch)
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = rows[-1]["id"]
