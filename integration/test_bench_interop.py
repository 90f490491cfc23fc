"""The interop wall-time benchmark (``python -m integration.bench interop``, issue 21 item 11):
its report on its own, and one smoke run of both servers with one fast client.

Never a timing assertion: the figures are what the benchmark publishes
(docs/testing-with-acme-ca.md), not what CI must meet on a shared machine. The smoke run uses
uacme (a C client that polls at once, about a second a flow) for one issuance on each server,
so it costs the two start-ups and little more.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.bench import interop_walltime
from integration.bench.interop_walltime import FlowResult, Run, report
from integration.bench.servers import pebble_missing
from tests.support.requirements import unavailable

pytestmark = pytest.mark.integration

MACHINE = {
    "date": "2026-12-03T21:35:38+00:00",
    "cpu_count": 2,
    "loadavg_at_start": (1.0, 0.5, 0.25),
    "loadavg_at_end": (2.0, 1.0, 0.5),
    "pebble": "2.4.0",
    "certbot": "certbot 5.8.0",
    "lego": "4.9.1",
    "dehydrated": "0.7.0",
    "uacme": "uacme: version 1.7.4",
    "acme_ca_commit": "abc1234",
}


def _run(flows: list[FlowResult]) -> Run:
    startup = {"pebble": 0.2, "acme_ca": 4.5, "acme_ca_worker": 6.0}
    run = Run(dict(MACHINE), startup=startup, flows=flows)
    run.skipped["uacme"] = "uacme is not installed"
    return run


def test_report_totals_per_client_with_the_ratio_and_the_target() -> None:
    text = report(
        _run(
            [
                FlowResult("pebble", "certbot", "http01-ecdsa-p256", 3.0),
                FlowResult("acme_ca", "certbot", "http01-ecdsa-p256", 2.5),
                FlowResult("pebble", "lego", "http01-ecdsa-p256", 6.0),
                FlowResult("acme_ca", "lego", "http01-ecdsa-p256", 1.0),
            ]
        ),
        ["certbot", "lego", "uacme"],
    )
    assert "| certbot | 1 | 3.0 | 2.5 | 0.83 |" in text
    assert "| lego | 1 | 6.0 | 1.0 | 0.17 |" in text
    assert "| uacme | skipped: uacme is not installed | | | |" in text
    assert "| **total** | 2 | 9.0 | 3.5 | 0.39 |" in text
    assert "load average at start 1.00 / 0.50 / 0.25; at end 2.00 / 1.00 / 0.50" in text
    assert "| **total with start-up** | | 9.2 | 9.5 | 1.03 |" in text
    assert (
        "start-up: Pebble 0.20 s to the directory answering; acme_ca 4.50 s to the directory, "
        "6.00 s to its signing worker ready" in text
    )
    assert text.endswith("Target (acme_ca total ≤ Pebble total): met.")


def test_report_a_slower_or_failed_run_does_not_meet_the_target() -> None:
    slower = report(
        _run(
            [
                FlowResult("pebble", "certbot", "renew", 2.0),
                FlowResult("acme_ca", "certbot", "renew", 2.5),
            ]
        ),
        ["certbot"],
    )
    assert slower.endswith("NOT met.")
    # A failed flow may be fast because it did nothing: never counted as meeting the target.
    failed = report(
        _run(
            [
                FlowResult("pebble", "certbot", "renew", 2.0),
                FlowResult("acme_ca", "certbot", "renew", 0.1, "exit 1"),
            ]
        ),
        ["certbot"],
    )
    assert "| certbot | renew | 2.00 | 0.10 FAILED |" in failed
    assert "- acme_ca certbot renew: exit 1" in failed
    assert failed.endswith("NOT met.")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Readable by PostgreSQL's unprivileged user when we are root (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="acme-ca-test-interop-bench-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_smoke_one_uacme_issuance_on_pebble_and_on_serve_test(workdir: Path) -> None:
    """Both servers start, the interop suite's uacme issues on each, the report and the JSON
    carry both wall times, and nothing is left running."""
    problem = pebble_missing()
    if problem is not None:
        unavailable(problem)
    if shutil.which("uacme") is None:
        unavailable("uacme is not installed (scripts/bootstrap.sh test installs it)")
    raw_path = workdir / "interop.json"
    started = time.monotonic()
    code = interop_walltime.main(
        ["--clients", "uacme", "--minimal", "--workdir", str(workdir), "--json", str(raw_path)]
    )
    print(f"interop wall-time smoke run: {time.monotonic() - started:.1f} s")
    raw = json.loads(raw_path.read_text())
    if "uacme" in raw["skipped"]:
        unavailable(raw["skipped"]["uacme"])
    flows = raw["flows"]
    if any("unshare" in (f["error"] or "") for f in flows):
        unavailable("uacme needs `unshare --mount` (root) to trust the test CAs")
    assert code == 0, [f["detail"] for f in flows if f["error"]]
    assert [(f["target"], f["client"], f["flow"]) for f in flows] == [
        ("pebble", "uacme", "http01-ecdsa-p256"),
        ("acme_ca", "uacme", "http01-ecdsa-p256"),
    ]
    assert all(f["error"] is None and f["seconds"] > 0 for f in flows), flows
    assert set(raw["startup"]) == {"pebble", "acme_ca", "acme_ca_worker"}
    assert len(raw["machine"]["loadavg_at_start"]) == 3
    # Every server stopped: no process still has the run's directory on its command line.
    leftovers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and _cmdline_mentions(int(pid), str(workdir))
    ]
    assert not leftovers, leftovers


def _cmdline_mentions(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
