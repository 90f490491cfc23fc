"""Fixtures shared by the integration tests (the root conftest adds tests/fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.challsrv_thread import ThreadedChallengeServer
from integration.processes import CaProcesses


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[CaProcesses]:
    """``acme-ca`` subprocesses, killed at the end; their log tails shown on failure."""
    with CaProcesses(tmp_path / "logs") as procs:
        yield procs


@pytest.fixture
def challenge_dns() -> Iterator[ThreadedChallengeServer]:
    """A DNS server answering every name with 127.0.0.1, TXT records set by the test."""
    with ThreadedChallengeServer() as server:
        yield server
