"""``serve --test --ephemeral``: a throwaway ``ACME_CA_HOME``, as Pebble forgets everything.

Each start gets a new directory (so a new hierarchy, TLS certificate and embedded PostgreSQL
cluster); at exit the directory is removed, and with it the cluster's data directory when the
embedded PostgreSQL keeps it outside the home (as root: ``/var/lib/acme-ca/pg-<hash>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from acme_ca.embedded_pg.cluster import SHARED_CLUSTER_ROOT

log = structlog.get_logger(component="acme_ca.testsrv.ephemeral")

PREFIX = "acme-ca-ephemeral-"


def _remove(home: Path) -> list[str]:
    """Remove ``home`` and a cluster it links to under the shared root; what was removed."""
    removed = []
    link = home / "pg" / "cluster"
    if link.is_symlink():
        real = link.resolve()
        if real.parent == SHARED_CLUSTER_ROOT and real.name.startswith("pg-"):
            shutil.rmtree(real, ignore_errors=True)
            removed.append(str(real))
    shutil.rmtree(home, ignore_errors=True)
    removed.append(str(home))
    return removed


@contextlib.asynccontextmanager
async def ephemeral_home() -> AsyncIterator[Path]:
    """A new, empty home for one run of the server; removed when the run ends."""
    home = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=PREFIX))
    log.warning("testmode.ephemeral_home", home=str(home))
    try:
        yield home
    finally:
        removed = await asyncio.to_thread(_remove, home)
        log.info("testmode.ephemeral_home_removed", removed=removed)
