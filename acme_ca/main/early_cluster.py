"""``serve --test --ephemeral``'s PostgreSQL, started before the server's modules are imported.

Importing the server takes about a second of CPU; booting the throwaway cluster that holds the
runs' template (``$ACME_CA_HOME/pg-ephemeral``) is mostly a wait on other processes.  The CLI
starts the cluster in a thread as soon as it has read the configuration, so the two overlap
(issue 21 item 8: ready within 1.5 s); :func:`acme_ca.db.database.ephemeral_database` then
claims it.  This module is imported before everything else, so it imports nothing heavy itself.
"""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from acme_ca.embedded_pg import EmbeddedPostgres

StartedCluster = concurrent.futures.Future[tuple["EmbeddedPostgres", str]]
"""The cluster and the DSN of its ``acme_ca`` database, once it runs."""


class EarlyCluster:
    """The cluster starting in a thread; :meth:`claim` hands it over, :meth:`abandon` stops it
    when nothing claimed it (the start failed before the database was needed)."""

    def __init__(self, data_root: Path) -> None:
        self._data_root = data_root
        self._future: StartedCluster = concurrent.futures.Future()
        self._claimed = False
        self._thread = threading.Thread(target=self._run, name="ephemeral-postgres", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            from acme_ca.embedded_pg import EmbeddedPostgres

            embedded = EmbeddedPostgres(self._data_root, throwaway=True)
            self._future.set_result((embedded, embedded.start()))
        except BaseException as exc:  # handed to whoever claims it
            self._future.set_exception(exc)

    def claim(self) -> StartedCluster:
        """The cluster, for the run's database; whoever claims it stops it."""
        self._claimed = True
        return self._future

    def abandon(self) -> None:
        """Stop the cluster unless it was claimed."""
        if self._claimed:
            return
        self._thread.join()
        if self._future.exception() is None:
            embedded, _ = self._future.result()
            embedded.stop()
