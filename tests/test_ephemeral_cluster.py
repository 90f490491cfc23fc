"""``serve --test --ephemeral``'s embedded cluster is a throwaway (issue 21 item 8): created
with initdb ``--no-sync`` and run with fsync off, since it is removed at exit; every other
cluster keeps PostgreSQL's durable defaults.  ``integration/test_ephemeral.py`` runs it."""

from __future__ import annotations

from pathlib import Path

from acme_ca.embedded_pg.settings import configured_port, write_settings

THROWAWAY = ("fsync = off", "synchronous_commit = off", "full_page_writes = off")


def _cluster(tmp_path: Path) -> Path:
    (tmp_path / "postgresql.conf").write_text("shared_buffers = 128MB\n")
    return tmp_path


def test_throwaway_cluster_runs_without_fsync(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    write_settings(cluster, 54321, throwaway=True)
    text = (cluster / "postgresql.conf").read_text()
    assert all(line in text.splitlines() for line in THROWAWAY)
    # the port moves (the block is rewritten): still a throwaway, still one block
    write_settings(cluster, 54322, throwaway=True)
    text = (cluster / "postgresql.conf").read_text()
    assert text.count("fsync = off") == 1
    assert configured_port(cluster) == 54322


def test_durable_cluster_keeps_fsync(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    write_settings(cluster, 54321)
    text = (cluster / "postgresql.conf").read_text()
    assert not any(line in text for line in THROWAWAY)
    assert text.startswith("shared_buffers = 128MB\n")
