"""The loopback ports tests hand out (tests/support/ports.py) stay apart between the
pytest-xdist workers scripts/test.sh runs the suite on: each worker draws from its own
residue class, so two workers never race for one port between the check and the bind."""

from __future__ import annotations

import pytest

from tests.support import ports


@pytest.mark.parametrize(("worker", "count"), [("gw0", "2"), ("gw1", "2"), ("gw2", "3")])
def test_free_port_stays_in_its_workers_class(
    monkeypatch: pytest.MonkeyPatch, worker: str, count: str
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", count)
    index, total = ports.worker_slot()
    assert (index, total) == (int(worker[2:]), int(count))
    drawn = [ports.free_port(udp=True) for _ in range(20)]
    assert all(p % total == index for p in drawn), drawn
    assert all(ports.LOWEST <= p < ports._ephemeral_start() for p in drawn), drawn
    assert len(set(drawn)) == len(drawn)


@pytest.mark.parametrize(
    "env", [{}, {"PYTEST_XDIST_WORKER": "master"}, {"PYTEST_XDIST_WORKER_COUNT": "x"}]
)
def test_free_port_outside_xdist_uses_the_whole_range(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ports.worker_slot() == (0, 1)
