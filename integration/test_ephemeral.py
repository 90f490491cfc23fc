"""``serve --test --ephemeral`` (issue 21 item 8): every start gets a throwaway home (a new
hierarchy) and a new database, both removed at exit, as Pebble forgets everything; what stays
in ``$ACME_CA_HOME`` is the HTTPS listener's certificate (``tls/``, so clients keep trusting
it) and the throwaway cluster holding the migrated template the runs' databases copy
(``pg-ephemeral/``), and the next run's hierarchy (``ephemeral-spare/``: made once a run is
ready, moved into the next run's throwaway home instead of generating; discarded when the next
run asks for another shape).

The start-up time is measured and printed (the target is 1.5 s; Pebble's own start is about
1.4 s): a report, not an assertion, so a loaded CI machine does not fail the suite.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.processes import CaProcesses
from integration.testmode_server import QuietProcesses, RunningTestCa, http_get, start_test_mode

pytestmark = pytest.mark.integration

TARGET_SECONDS = 1.5


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CaProcesses]:
    with QuietProcesses(tmp_path / "logs", request.session) as procs:
        yield procs


#: How long a run may take to make the next run's spare hierarchy.
SPARE_WITHIN = 120.0


def _spare_made(ca: RunningTestCa, home: Path) -> dict[str, Any]:
    """The run's ``testmode.ephemeral_spare_made`` event. serve starts the spare's builder at
    SCHED_IDLE, so that it never takes CPU from requests; on a saturated runner that starves
    it (a run with six CPU burners beside the suite waited 120 s in vain), so the test puts
    this home's builder back at normal priority as soon as it appears: what it builds and
    when serve waits for it are unchanged."""
    deadline = time.monotonic() + SPARE_WITHIN
    lifted: set[int] = set()
    while not (made := ca.proc.events("testmode.ephemeral_spare_made")):
        assert ca.proc.alive(), ca.proc.tails()
        assert time.monotonic() < deadline, f"no spare within {SPARE_WITHIN:g} s"
        for pid in _builders_of(home):
            # Every pass: the builder lowers itself once its imports are done, after it
            # appeared here; each of its threads has its own policy.
            for task in _threads(pid):
                with contextlib.suppress(OSError):  # gone already
                    if os.sched_getscheduler(task) != os.SCHED_OTHER:
                        os.sched_setscheduler(task, os.SCHED_OTHER, os.sched_param(0))
                        lifted.add(pid)
                    if os.getpriority(os.PRIO_PROCESS, task) != 0:
                        os.setpriority(os.PRIO_PROCESS, task, 0)
                        lifted.add(pid)
        time.sleep(0.05)
    print(f"spare made; builders put back at normal priority: {sorted(lifted)}")
    return made[0]


def _threads(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


def _builders_of(home: Path) -> Iterator[int]:
    """The pids of the spare builders working for ``home`` (their command line names it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"acme_ca.testsrv.ephemeral_spare" in argv and any(
            Path(os.fsdecode(arg)).resolve() == home.resolve() for arg in argv[-2:] if arg
        ):
            yield int(entry.name)


def _run(
    processes: CaProcesses, home: Path, name: str, env: dict[str, str] | None = None
) -> tuple[RunningTestCa, Path, bytes]:
    ca = start_test_mode(processes, name, home, args=("--ephemeral",), env=env)
    throwaway = Path(ca.proc.wait_event("testmode.ephemeral_home")["home"])
    status, _, root = http_get(ca.management_url + "/roots/0")
    assert status == 200
    return ca, throwaway, root


def test_ephemeral_home_new_each_start_and_removed_at_exit(
    tmp_path: Path, processes: CaProcesses
) -> None:
    home = tmp_path / "ca-home"
    figures = []
    roots = []
    # Run 2 asks for Pebble's chain length 2: the spare run 1 made (default shape) is discarded.
    for run, env in enumerate([None, None, {"PEBBLE_CHAIN_LENGTH": "2"}]):
        ca, throwaway, root = _run(processes, home, f"ephemeral-{run}", env)
        figures.append(ca.startup_seconds)
        roots.append(root)
        assert throwaway.is_dir() and not throwaway.is_relative_to(home)
        assert (throwaway / "pki" / "issuers.toml").exists()
        assert not (home / "pki").exists(), "no hierarchy is kept in ACME_CA_HOME"
        # Once ready, the run makes the next run's hierarchy; waited for here so that a slow
        # machine still shows the next start taking it (a stop would wait for it, bounded).
        assert _spare_made(ca, home)["made"]
        ca.stop()
        assert not throwaway.exists(), "the throwaway home is removed at exit"
        assert ca.proc.events("testmode.ephemeral_home_removed")
        (created,) = ca.proc.events("database.ephemeral_created")
        (dropped,) = ca.proc.events("database.ephemeral_dropped")
        assert created["database"] == dropped["database"], "the run's database is dropped"
        # The first run copies the template; it leaves a spare copy the second run renames
        # (CREATE DATABASE ... TEMPLATE is off the second start's path to ready).
        assert created["spare"] is (run > 0)
        # Likewise the hierarchy: generated by the first run, the spare taken by the second;
        # the third asks for another chain shape, so it discards the spare and generates.
        used = ca.proc.events("testmode.ephemeral_spare_used")
        generated = ca.proc.events("pki.development_hierarchy_created")
        assert (len(used), len(generated)) == ((1, 0) if run == 1 else (0, 1))
        discarded = ca.proc.events("testmode.ephemeral_spare_discarded")
        assert [e["reason"] for e in discarded] == (
            ["made for other settings: chain_length"] if run == 2 else []
        )
    assert len(set(roots)) == 3, "a new hierarchy each start, the spare's included"
    assert sorted(p.name for p in home.iterdir()) == ["ephemeral-spare", "pg-ephemeral", "tls"]
    print(
        f"serve --test --ephemeral ready in {figures[0]:.2f} s (first start, TLS made), "
        f"{figures[1]:.2f} s (second, spare hierarchy) and {figures[2]:.2f} s (spare "
        f"discarded, hierarchy generated); target {TARGET_SECONDS} s"
    )
