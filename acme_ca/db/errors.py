"""Which exceptions mean "the database cannot serve us now" rather than a bug.

Only ``db/`` imports asyncpg, so the front end asks here: a request that meets a database
outage (the server restarting, a lost connection, a pool whose connections are all busy past
``database_acquire_timeout_seconds``) is answered 503 with ``Retry-After``, never a 500 with
a traceback.
"""

from __future__ import annotations

import asyncpg

#: asyncpg's own "the server went away or refuses us for now" errors.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # lost connection, cannot connect now, too many clients
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    ConnectionError,  # refused / reset while connecting
    TimeoutError,  # the pool's acquire timeout, or the server not answering
    # A multi-host database_url where no host is the primary now: a failover in progress
    # (every host up but none read-write; asyncpg raises this instead of a connection error).
    asyncpg.TargetServerAttributeNotMatched,
    # asyncpg's protocol state broken by a connection the server ended mid-operation (a
    # PostgreSQL SIGKILLed under load: "cannot switch to state 12; another operation (2) is
    # in progress", MagicStack/asyncpg#1069); the pool terminates that connection
    # (db/pool.BoundedPool) and the retry gets a fresh one.
    asyncpg.InternalClientError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a database outage or saturation."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _UNAVAILABLE):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
