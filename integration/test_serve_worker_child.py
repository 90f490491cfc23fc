"""``acme-ca serve --test``'s signing worker is a child process of serve (issue 20 target 2:
both cores used), and serve owns its life (docs/operations.md, "Serve's worker child"):

* its lines are on serve's stdout, whole, each naming ``process: worker``;
* serve stopped: the child is stopped first, exits 0, before serve's other parts stop;
* the child dies: serve logs why and exits 1;
* serve killed: the child dies with it.

Each test runs its own ``serve --test`` on the test's PostgreSQL (no embedded cluster to make).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from integration.processes import CaProcesses, read_log_events
from integration.testmode_server import RunningTestCa, start_test_mode

pytestmark = pytest.mark.integration

#: The worker starts after serve's listener, importing its modules on a loaded machine.
WORKER_START_TIMEOUT = 60.0


def _ppid(pid: int) -> int | None:
    """The parent of ``pid`` (None once it has gone); a zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else int(fields[1])


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _ppid(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _started(dsn: str, tmp_path: Path, processes: CaProcesses) -> tuple[RunningTestCa, int]:
    """serve --test and its worker child, started; the child's pid."""
    ca = start_test_mode(processes, "serve", tmp_path / "home", dsn=dsn)
    child = ca.proc.wait_event("worker.process_started")["pid"]
    started = ca.proc.wait_event("worker.started", timeout=WORKER_START_TIMEOUT)
    assert started["process"] == "worker", started
    assert ca.proc.wait_event("server.ready")["worker"] == "child process"
    return ca, child


def test_serve_test_worker_is_a_child_process_stopped_first(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca, child = _started(dsn, tmp_path, processes)
    assert child != ca.proc.pid
    assert _ppid(child) == ca.proc.pid
    # One write per line from two processes: every line of the shared stdout is whole JSON.
    lines = ca.proc.stdout_path.read_text().splitlines()
    assert len(read_log_events(ca.proc.stdout_path)) == len(lines), ca.proc.tails()

    ca.stop()  # SIGTERM; asserts exit 0
    events = [e["event"] for e in ca.proc.log_events()]
    assert events.index("worker.stopped") < events.index("worker.process_stopped"), events
    assert events.index("worker.process_stopped") < events.index("testsrv.stopped"), events
    [stopped] = ca.proc.events("worker.process_stopped")
    assert stopped["returncode"] == 0, ca.proc.tails()
    assert _gone(child, 5)


def test_a_dead_worker_child_takes_serve_down_with_the_reason(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca, child = _started(dsn, tmp_path, processes)
    os.kill(child, signal.SIGKILL)
    assert ca.proc.proc.wait(timeout=30) == 1, ca.proc.tails()
    [exited] = ca.proc.events("worker.process_exited")
    assert exited["level"] == "error"
    assert (exited["pid"], exited["returncode"]) == (child, -signal.SIGKILL)
    assert exited["reason"] == "was killed by SIGKILL"
    [failed] = ca.proc.events("serve.failed")
    assert f"(pid {child}) was killed by SIGKILL" in failed["reason"], failed


def test_killed_serve_takes_its_worker_child_with_it(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    ca, child = _started(dsn, tmp_path, processes)
    ca.proc.kill()
    assert _gone(child, 10), f"worker child {child} outlived its serve\n{ca.proc.tails()}"
