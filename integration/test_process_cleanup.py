"""The suite leaves no PostgreSQL behind: a ``serve`` killed with SIGKILL (what
``CaProcesses.close`` does to whatever a test left running) cannot stop the embedded cluster
``pg_ctl`` detached, so ``close`` stops the clusters of the homes it started processes in
(``integration/processes.stop_leftover_clusters``).  Four such clusters were found still
running after one CI run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acme_ca.embedded_pg import EmbeddedPostgres
from integration.processes import stop_leftover_clusters

pytestmark = pytest.mark.integration


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent (init) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("data_root", ["pg", "pg-ephemeral"])
def test_leftover_cluster_of_a_killed_serve_is_stopped(tmp_path: Path, data_root: str) -> None:
    home = tmp_path / "ca-home"
    home.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(home, 0o755)
    pg = EmbeddedPostgres(home / data_root, throwaway=True)
    pg.start()  # as serve would, and then serve is SIGKILLed: nobody calls pg.stop()
    assert pg.cluster_dir is not None
    pid_file = pg.cluster_dir / "postmaster.pid"
    pid = int(pid_file.read_text().split("\n", 1)[0])
    assert _running(pid)

    stop_leftover_clusters(home)

    assert not pid_file.exists()
    assert not _running(pid)
    stop_leftover_clusters(home)  # nothing left: a no-op, not an error


def test_home_without_a_cluster_is_a_no_op(tmp_path: Path) -> None:
    stop_leftover_clusters(tmp_path / "never-started")
