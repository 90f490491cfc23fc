"""The storage room's settings: where the database is and how the pools wait for it.

:meth:`DatabaseSettings.from_config` is the one place db/ sees the
:class:`~acme_ca.config.Config` (an import-linter contract keeps the other modules of db/ from
importing it); ``main/``, the CLI and ``admin/`` build it and hand it to
:func:`~acme_ca.db.database.database_dsn`, :func:`~acme_ca.db.database.operator_pool` and
:func:`~acme_ca.db.forensics.admin_storage`, and size their pools from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from acme_ca.config.keys import Config


@dataclass(frozen=True)
class DatabaseSettings:
    """The configured PostgreSQL, or where the embedded clusters live under ``home``."""

    #: ``database_url``; None: the embedded cluster at :attr:`embedded_data_root`.
    url: str | None
    #: The private embedded cluster (``home/pg``), started when no URL is configured.
    embedded_data_root: Path
    #: ``serve --test --ephemeral``: the throwaway cluster its runs' databases live in
    #: (``home/pg-ephemeral``).
    ephemeral_data_root: Path
    #: ``database_pool_size``: connections in a ``serve`` process's pool.
    pool_size: int
    #: ``database_acquire_timeout_seconds``: longest wait for a pooled connection.
    acquire_timeout_seconds: int

    @classmethod
    def from_config(cls, config: Config) -> DatabaseSettings:
        return cls(
            url=config.database_url,
            embedded_data_root=config.home / "pg",
            ephemeral_data_root=config.home / "pg-ephemeral",
            pool_size=config.database_pool_size,
            acquire_timeout_seconds=config.database_acquire_timeout_seconds,
        )
