"""The embedded PostgreSQL clusters a test session's CA homes left in the shared root.

Run as root, a CA whose home the server user cannot reach (pytest's 0700 ``/tmp/pytest-of-root``)
keeps its cluster in ``/var/lib/acme-ca/pg-<hash>``, with ``<home>/.../cluster`` a symlink to it
(:mod:`acme_ca.embedded_pg`): right for an operator's CA, a leak for a test's throwaway home
(about 60 MB each, three per suite run). Only clusters reached through a symlink under this
session's own temporary directory are removed, and a postmaster still running there (orphaned
by a process killed mid-test) is stopped first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from acme_ca.embedded_pg import SHARED_CLUSTER_ROOT


def clusters_linked_from(base: Path) -> Iterator[Path]:
    """The shared-root clusters that ``cluster`` symlinks under ``base`` point to."""
    for directory, subdirs, files in os.walk(base):  # symlinks are listed, not followed
        link = Path(directory, "cluster")
        if "cluster" in subdirs + files and link.is_symlink():
            target = Path(os.path.realpath(link))
            if target.parent == SHARED_CLUSTER_ROOT:
                yield target


def remove_cluster(cluster: Path, *, wait: float = 10.0) -> None:
    """Stop a postmaster still serving ``cluster`` (immediate shutdown), then delete it."""
    pid = _postmaster(cluster)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(cluster, ignore_errors=True)


def _postmaster(cluster: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process is a postgres serving ``cluster``."""
    try:
        pid = int((cluster / "postmaster.pid").read_text().split()[0])
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if os.fsencode(str(cluster)) in argv else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
