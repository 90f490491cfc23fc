"""The benchmark's restart policy (issue 20, Benchmark): Pebble, which deadlocks under
concurrency, is restarted when it stops answering and the level run again up to 3 times;
the restarts are reported, and a level it never finished is marked so, with the levels above
it not run.  Any other target is never restarted: its falling over is the finding.

The orchestration is driven without servers: the target is a real idle process (so its CPU is
read from /proc as usual) and the load generator is replaced through ``main``'s ``load``
seam by one whose outcome per level and run is scripted.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.bench import __main__ as bench
from integration.bench.loadgen import LoadResult
from integration.bench.servers import TARGETS, Target

pytestmark = pytest.mark.integration


class _Scripted:
    """A load generator whose server "stops answering" the first ``stalls[clients]`` runs of
    a level (every run if the count is None); probes (duration 0) always succeed."""

    def __init__(self, stalls: dict[int, int | None]) -> None:
        self.stalls = stalls
        self.runs: Counter[int] = Counter()

    async def __call__(
        self, directory_url: str, *, clients: int, duration: float, **_: Any
    ) -> LoadResult:
        if duration == 0:
            return LoadResult(clients=clients)
        self.runs[clients] += 1
        limit = self.stalls.get(clients, 0)
        if limit is None or self.runs[clients] <= limit:
            return LoadResult(
                clients=clients, duration=duration, issuances=2, stopped_answering=True
            )
        return LoadResult(clients=clients, duration=duration, issuances=10, latencies=[0.1] * 10)


def _idle_target(started: list[Path]) -> Any:
    @contextlib.contextmanager
    def start(workdir: Path) -> Iterator[Target]:
        started.append(workdir)
        proc = subprocess.Popen(["sleep", "60"])
        try:
            yield Target(
                name="under-test",
                directory_url="https://127.0.0.1:1/dir",
                cafile=None,
                http01_port=0,
                cpu_pids=lambda: [proc.pid],
                alive=lambda: proc.poll() is None,
                details={"shape": "an idle process"},
                cpu_split={"server": [proc.pid]},
            )
        finally:
            proc.kill()
            proc.wait()

    return start


def _run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, load: _Scripted
) -> tuple[bench.TargetResult, list[Path], bench.Options]:
    started: list[Path] = []
    monkeypatch.setitem(TARGETS, name, _idle_target(started))
    monkeypatch.setattr(bench, "QUIET_WINDOW", 0.01)
    options = bench.Options([1, 5, 50, 200], 1, 1, [name], 10, None, None, None)
    result = bench.TargetResult(name)
    bench.bench_target(result, tmp_path, options, load)
    return result, started, options


def test_pebble_restarted_and_a_level_it_never_finishes_is_marked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load = _Scripted({5: 2, 50: None})
    result, started, options = _run(monkeypatch, tmp_path, "pebble", load)
    assert result.start_error is None
    one, five, fifty, two_hundred = result.levels
    assert (one.attempts, one.failed_attempts, one.stopped_answering) == (1, [], False)
    # Finished on the third run, after two restarts.
    assert five.attempts == 3 and len(five.failed_attempts) == 2 and not five.stopped_answering
    assert five.issuances == 10
    # Never finished in 1 + 3 runs: marked, and nothing above it is run.
    assert fifty.attempts == 4 and len(fifty.failed_attempts) == 3 and fifty.stopped_answering
    assert two_hundred.not_run == "never finished 50 clients in 4 runs"
    assert load.runs == Counter({1: 1, 5: 3, 50: 4})
    assert result.restarts == 5
    # Each restart in a work directory of its own, so every run's logs are kept.
    assert started == [tmp_path, *(tmp_path / f"restart-{n}" for n in range(1, 6))]
    report = bench.markdown([result], options, {"date": "?"} | dict.fromkeys(_MACHINE, "?"))
    assert "restarted 5 times after it stopped answering" in report
    assert (
        "| 50 | issuances/s (higher is better) | never finished (4 runs, restarted between) |"
        in report
    )
    assert "- Pebble at 5 clients, run 2 of 3 (restarted after it): 2 issuances" in report
    assert result.to_json()["restarts"] == 5
    assert result.to_json()["levels"][2]["attempts"] == 4


def test_other_targets_are_not_restarted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    load = _Scripted({5: 1})
    result, started, _ = _run(monkeypatch, tmp_path, "acme_ca", load)
    assert result.restarts == 0 and len(started) == 1
    _, five, fifty, _ = result.levels
    assert five.stopped_answering and five.attempts == 1
    assert fifty.not_run == "stopped answering at 5 clients"


_MACHINE = (
    "cpu_count",
    "cpu_model",
    "memory",
    "os",
    "kernel",
    "python",
    "pebble",
    "postgresql",
    "softhsm2",
    "acme_ca_commit",
)
