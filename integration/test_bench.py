"""Smoke test of the benchmark (``python -m integration.bench``, scripts/bench.sh): each target
is started in its benchmark shape, driven by the real load generator at one client for a few
seconds, measured and stopped.

Only functional facts are asserted (certificates were issued, no errors, CPU was charged to
the server's processes, acme_ca's certificates were signed by the separate worker, nothing is
left running), never timings: those are what the benchmark reports, not what it must meet.

Without Pebble (or SoftHSM2) the target is skipped with the reason, except as root under
``CI=true``, where the packages are installable and a skip would hide a broken benchmark.
The CPU accounting and the report are also checked on their own, without servers.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from integration.bench import counts, procstat
from integration.bench.__main__ import LevelResult, Options, TargetResult, markdown
from integration.bench.loadgen import RETRY_AFTER_CAP, retry_after_seconds, run_load
from integration.bench.servers import REPO, override_limits, pebble_missing
from integration.processes import CaProcesses, acme_ca_exe, read_log_events
from integration.testmode_server import start_test_mode
from tests.support.ports import free_port
from tests.support.requirements import unavailable
from tests.support.softhsm import softhsm_available

pytestmark = pytest.mark.integration

DURATION = 3


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A work directory PostgreSQL's unprivileged user can reach when we are root (pytest's
    tmp_path is 0700), so the benchmark's cluster lives inside it and goes with it."""
    path = Path(tempfile.mkdtemp(prefix="acme-ca-test-bench-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _gone(pid: int) -> bool:
    """Exited (a zombie whose parent has not reaped it yet counts as exited)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _last_name_per_client(names: list[str]) -> set[str]:
    """The last name each load-generator client asked for (``RUN-CLIENT-N.suffix``)."""
    last: dict[str, tuple[int, str]] = {}
    for name in names:
        run_client, _, rest = name.partition(".")[0].rpartition("-")
        if rest.isdigit() and int(rest) >= last.get(run_client, (0, ""))[0]:
            last[run_client] = (int(rest), name)
    return {name for _, name in last.values()}


def _run_bench(target: str, workdir: Path) -> dict[str, Any]:
    [result] = _run_benches([target], workdir)
    return result


def _run_benches(targets: list[str], workdir: Path) -> list[dict[str, Any]]:
    """One benchmark run of ``targets`` at one client; each target's raw results, checked
    for what every target must show."""
    out = workdir / "bench.json"
    table = workdir / "bench.md"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "integration.bench",
            "--targets",
            ",".join(targets),
            "--levels",
            "1",
            "--duration",
            str(DURATION),
            "--json",
            str(out),
            "--markdown",
            str(table),
            "--workdir",
            str(workdir / "runs"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150 * len(targets),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    report = f"exit {run.returncode}\n--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"
    assert run.returncode == 0, report
    raw: dict[str, Any] = json.loads(out.read_text())
    assert table.read_text().startswith("# acme_ca vs Pebble"), report
    assert [r["name"] for r in raw["targets"]] == targets
    for result in raw["targets"]:
        _check_target(result, report)
    return list(raw["targets"])


def _check_target(result: dict[str, Any], report: str) -> None:
    assert result["start_error"] is None, report
    [level] = result["levels"]
    assert level["clients"] == 1
    assert level["not_run"] is None
    assert level["setup_failed"] is None, report
    assert not level["stopped_answering"], report
    assert level["probe"] == "ok", report
    assert level["issuances"] >= 1, report
    assert level["errors"] == {}, report
    # Counted apart (issue 17): none at one client, and present in the raw results.
    assert level["timeouts"] == {}, report
    assert level["shed"] == {}, report
    assert level["cpu_seconds"] > 0
    assert level["cpu_per_issuance"] > 0
    assert len(level["latencies"]) == level["issuances"]
    # Every process the target started is gone once the benchmark has exited.
    left = {name: pid for name, pid in result["details"]["processes"].items() if not _gone(pid)}
    assert not left, f"still running after the benchmark: {left}"


def test_bench_pebble(workdir: Path) -> None:
    problem = pebble_missing()
    if problem is not None:
        unavailable(problem)
    result = _run_bench("pebble", workdir)
    [level] = result["levels"]
    assert set(level["cpu_split"]) == {"pebble"}
    assert result["details"]["environment"]["PEBBLE_VA_NOSLEEP"] == "1"


def test_bench_acme_ca_production_shape_with_five_remote_vas(workdir: Path) -> None:
    """The production shape, in its row with five remote VAs (``acme_ca-mpic``, a superset of
    the ``acme_ca`` row: the same start-up plus the remotes), so CI starts it once."""
    if not softhsm_available():
        unavailable("SoftHSM2 is not installed (apt-get install softhsm2)")
    if shutil.which("pebble-challtestsrv") is None:
        unavailable("pebble-challtestsrv (the DNS server of both targets) is not installed")
    result = _run_bench("acme_ca-mpic", workdir)
    [level] = result["levels"]
    assert result["details"]["environment"]["ACME_CA_RATE_LIMITS"] == "false"
    # serve, worker, the PostgreSQL tree and the remote VAs each did part of the work.
    assert set(level["cpu_split"]) == {"serve", "worker", "postgres", "remote_vas"}
    assert all(seconds > 0 for seconds in level["cpu_split"].values()), level["cpu_split"]
    assert set(level["infra_cpu"]) == {"dns", "ct_logs"}
    # Signed by the separate worker (in the HSM), never by serve; SCTs from the helper's logs.
    logs = Path(result["details"]["logs"])
    issued = [
        e for e in read_log_events(logs / "worker.stdout") if e.get("event") == "certificate.issued"
    ]
    assert len(issued) >= level["issuances"]
    serve_events = read_log_events(logs / "serve.stdout")
    assert not [e for e in serve_events if e.get("event") == "certificate.issued"]
    # Every validation was corroborated by the five remotes (BR 3.2.2.9), but for the last
    # name of a client, whose validation the window's close can cut off: the run's http-01
    # responder stops while remote perspectives may still be fetching (a CI run saw that).
    quorums = [e for e in serve_events if e.get("event") == "va.mpic.quorum"]
    last = _last_name_per_client([str(e.get("identifier")) for e in quorums])
    failed = [e for e in quorums if not e.get("ok") and e.get("identifier") not in last]
    assert quorums and not failed, json.dumps(failed[:3], indent=1)
    assert any(e.get("ok") for e in quorums), quorums[-1:]
    assert any(str(e.get("quorum", "")).endswith("/5") for e in quorums), quorums[-1:]
    ct_events = read_log_events(logs / "ct-logs.stdout")
    logged = Counter(e.get("log") for e in ct_events if e.get("event") == "ct_log.logged")
    assert len(logged) >= 2 and min(logged.values()) >= 1, ct_events[-3:]
    assert any(e.get("event") == "bench_ct_logs.stopping" for e in ct_events), ct_events[-3:]
    # Target 3 of issue 20: the work per issuance is counted by the servers themselves.
    counted = level["per_issuance"]
    assert set(counted) == set(counts.COUNTS), counted
    assert counted["requests"] >= 1 and counted["sql_statements"] >= 1, counted
    assert counted["sql_transactions"] >= 1 and counted["lint_runs"] >= 1, counted
    assert counted["signatures"] >= 2 and counted["ct_precert_submissions"] >= 2, counted


def test_bench_serve_test_and_readme_shapes(workdir: Path) -> None:
    """``acme-ca serve --test`` and the README's ``acme-ca serve`` (issue 20's other shapes):
    serve, its worker child and its embedded PostgreSQL, each charged for (target 2: the
    worker on a core of its own)."""
    if shutil.which("pebble-challtestsrv") is None:
        unavailable("pebble-challtestsrv (the README shape's DNS server) is not installed")
    for result in _run_benches(["acme_ca-test", "acme_ca-readme"], workdir):
        [level] = result["levels"]
        assert set(level["cpu_split"]) == {"serve", "worker", "postgres"}, result["name"]
        assert all(seconds > 0 for seconds in level["cpu_split"].values()), level["cpu_split"]
        assert ("--test" in result["details"]["argv"]) == (result["name"] == "acme_ca-test")


def test_issue_16_limits_on_row_overrides_every_bucket_the_load_generator_meets(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    """The benchmark's limits-on row (target ``acme_ca-limits``, the production shape with
    ``rate_limits = true``) raises the limits with :func:`override_limits` so the load
    generator is never refused.  Checked on a ``serve --test`` with the limits on: twelve
    accounts from 127.0.0.1 (the default allows 10 per address range) issue with not one 429,
    every newOrder and finalize having been checked against the buckets."""
    http01_port = free_port()
    ca = start_test_mode(
        processes,
        "serve-limits",
        tmp_path / "ca-home",
        dsn=dsn,
        challsrv_http01="off",
        http01_port=http01_port,
        env={"ACME_CA_RATE_LIMITS": "true", "ACME_CA_LOG_FORMAT": "json"},
    )
    logs = tmp_path / "limits-logs"
    logs.mkdir()
    clients = 12
    override_limits(acme_ca_exe(), {**ca.env, "ACME_CA_DATABASE_URL": dsn}, logs, dsn, clients)
    result = asyncio.run(
        run_load(
            ca.directory_url,
            clients=clients,
            duration=6.0,
            http01_port=http01_port,
            cafile=ca.cafile,
        )
    )
    summary = result.as_dict()
    assert result.setup_failed is None, summary
    assert result.errors == Counter() and result.timeouts == Counter(), summary
    assert result.shed == Counter(), summary
    assert result.issuances >= 1, summary
    served = read_log_events(ca.proc.stdout_path)
    assert not [e for e in served if e.get("event") == "ratelimits.refused"]
    commands = (logs / "limits.log").read_text()
    assert "new_accounts_per_ip_range 127.0.0.1" in commands, commands
    assert "certificates_per_domain example.com" in commands, commands


def test_rfc8555_6_6_retry_after_read_as_a_client_reads_it() -> None:
    """503 and 429 with Retry-After (seconds or an HTTP-date) mean "come back then", capped;
    anything else, a 503 without it or a 500 included, is an answer the client reports."""
    assert retry_after_seconds(503, {"Retry-After": "2"}) == 2.0
    assert retry_after_seconds(429, {"Retry-After": "7"}) == 7.0
    assert retry_after_seconds(503, {"Retry-After": "86400"}) == RETRY_AFTER_CAP
    later = email.utils.formatdate(time.time() + 5, usegmt=True)
    wait = retry_after_seconds(503, {"Retry-After": later})
    assert wait is not None and 3.0 <= wait <= 5.0
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after_seconds(503, {"Retry-After": past}) == 0.0
    assert retry_after_seconds(503, {}) is None
    assert retry_after_seconds(503, {"Retry-After": "soon"}) is None
    assert retry_after_seconds(500, {"Retry-After": "2"}) is None
    assert retry_after_seconds(409, {"Retry-After": "1"}) is None


def test_rfc8555_6_6_load_generator_obeys_load_shedding_and_counts_it_apart(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    """Against a real ``serve --test`` holding one request in flight, eight clients are
    shed (503 ``serverInternal`` with Retry-After): the load generator waits as told and
    sends the same request again, so they still issue, and every shed answer is counted in
    ``shed``, none as an error or a timeout (issue 17)."""
    http01_port = free_port()
    ca = start_test_mode(
        processes,
        "serve-shedding",
        tmp_path / "ca-home",
        dsn=dsn,
        challsrv_http01="off",
        http01_port=http01_port,
        env={
            "ACME_CA_MAX_REQUESTS_IN_FLIGHT": "1",
            "ACME_CA_OVERLOAD_RETRY_AFTER_SECONDS": "1",
            "ACME_CA_LOG_FORMAT": "json",
        },
    )
    result = asyncio.run(
        run_load(
            ca.directory_url,
            clients=8,
            # Each issuance needs about eight admitted requests, and every shed one waits 1 s:
            # on a loaded runner 4 s could end before the first certificate (flake audit).
            duration=10.0,
            http01_port=http01_port,
            cafile=ca.cafile,
        )
    )
    summary = result.as_dict()
    assert result.setup_failed is None, summary
    assert not result.stopped_answering, summary
    assert result.errors == Counter(), summary
    assert result.timeouts == Counter(), summary
    assert result.issuances >= 1, summary
    assert sum(result.shed.values()) >= 1, summary
    assert all(kind.startswith("503 serverInternal (") for kind in result.shed), summary
    assert result.shed_wait_seconds >= sum(result.shed.values()) * 0.99, summary
    served = read_log_events(ca.proc.stdout_path)
    assert len([e for e in served if e.get("event") == "requests.shed"]) >= 1


# ------------------------------------------------------------------------------------------
# the parts, without servers


def test_counts_read_prometheus_samples_with_braces_in_labels() -> None:
    """Route templates (``/acme/order/{order_id}``) put braces inside label values."""
    text = "\n".join(
        [
            "# HELP response_time_count x",
            'response_time_count{endpoint="/acme/order/{order_id}",method="POST",code="200"} 5.0',
            'response_time_count{endpoint="/acme/new-order",method="POST",code="201"} 2.0',
            'ct_submission_time_seconds_count{log="a",type="final",status="success"} 3.0',
            'ct_submission_time_seconds_count{log="a",type="precert",status="success"} 4.0',
            'signatures_total{backend="pkcs11",key="k"} 6.0',
            'signatures_created{backend="pkcs11",key="k"} 1.7e9',
        ]
    )
    read = counts.parse_metrics(text)
    assert read["requests"] == 7.0
    assert read["ct_final_submissions"] == 3.0
    assert read["ct_precert_submissions"] == 4.0
    assert read["signatures"] == 6.0
    before = {k: 0.0 for k in counts.COUNTS}
    after = {**{k: 10.0 for k in counts.COUNTS}, "sql_transactions": 11.0}
    per = counts.per_issuance(before, after, 5)
    # The reading's own transaction is not the server's work.
    assert per["sql_transactions"] == 2.0 and per["requests"] == 2.0


def test_cpu_of_a_tree_counts_children_that_exited() -> None:
    """A shell running short-lived CPU burners: their CPU reaches the shell's cutime when
    they exit, and the tree's delta includes it (PostgreSQL backends come and go so)."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    script = f"sleep 0.3; for i in 1 2; do {sys.executable} -c '{burn}'; done; exec sleep 30"
    shell = subprocess.Popen(["bash", "-c", script])
    try:
        before = procstat.snapshot({"shell": [shell.pid]})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.2)
            after = procstat.snapshot({"shell": [shell.pid]})
            if after.pids["shell"] == {shell.pid}:  # back to the shell alone: both have exited
                used = procstat.delta_seconds(before, after)["shell"]
                if used >= 0.6:
                    break
        else:
            pytest.fail("the burners' CPU never reached the tree")
        assert procstat.cpu_seconds([shell.pid, shell.pid]) == procstat.cpu_seconds([shell.pid])
    finally:
        shell.kill()
        shell.wait()
    assert procstat.cpu_seconds([shell.pid]) == 0.0


@dataclass
class _Outcome:
    clients: int
    duration: float
    issuances: int
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    shed: Counter[str] = field(default_factory=Counter)
    stopped_answering: bool = False
    setup_failed: str | None = None
    per_second: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


def test_report_ratios_and_stopped_servers() -> None:
    options = Options([1, 200], 30, 60, ["pebble", "acme_ca"], 10, None, None, None)
    pebble = TargetResult(
        "pebble",
        {"shape": "x"},
        [
            LevelResult(
                "pebble",
                1,
                30,
                _Outcome(1, 30, 300, [0.1] * 300, per_second=10.0, p50=0.1, p90=0.1, p99=0.1),
                cpu_seconds=3.0,
            ),
            LevelResult(
                "pebble",
                200,
                60,
                _Outcome(200, 60, 0, stopped_answering=True, errors=Counter(timeout=5)),
                cpu_seconds=1.0,
                stopped_answering=True,
            ),
        ],
    )
    ours = TargetResult(
        "acme_ca",
        {"shape": "y"},
        [
            LevelResult(
                "acme_ca",
                1,
                30,
                _Outcome(1, 30, 150, [0.2] * 150, per_second=5.0, p50=0.2, p90=0.2, p99=0.2),
                cpu_seconds=6.0,
            ),
            LevelResult(
                "acme_ca",
                200,
                60,
                _Outcome(200, 60, 600, per_second=10.0, errors=Counter(badNonce=2, timeout=1)),
                cpu_seconds=30.0,
            ),
        ],
    )
    machine = {
        k: "?"
        for k in (
            "date",
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
    }
    text = markdown([pebble, ours], options, machine)
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
        for line in text.splitlines()
        if line.startswith("| 1 ") or line.startswith("| 200 ")
    }
    assert rows[("1", "issuances/s (higher is better)")].endswith("| 10.00 | 5.00 | 0.50 |")
    assert rows[("1", "p50 latency ms (lower is better)")].endswith("| 100.0 | 200.0 | 2.00 |")
    assert rows[("1", "CPU ms/issuance (lower is better)")].endswith("| 10.0 | 40.0 | 4.00 |")
    assert rows[("1", "errors (by kind)")].endswith("| 0 | 0 |  |")
    assert rows[("200", "issuances/s (higher is better)")].endswith(
        "| stopped answering | 10.00 | — |"
    )
    assert rows[("200", "errors (by kind)")].endswith(
        "| stopped answering | badNonce 2, timeout 1 |  |"
    )


def test_report_counts_shed_and_timeouts_apart_and_the_limits_ratio() -> None:
    """Issue 17: timeouts and answers shed with Retry-After have rows of their own, apart
    from errors; issue 16: the limits-on row is divided by the limits-off one."""
    options = Options([500], 30, 60, ["acme_ca", "acme_ca-limits"], 10, None, None, None)
    shed = Counter({"503 serverInternal (newOrder)": 40, "503 serverInternal (authz)": 2})
    off = TargetResult(
        "acme_ca",
        {"shape": "x"},
        [
            LevelResult(
                "acme_ca",
                500,
                60,
                _Outcome(
                    500,
                    60,
                    600,
                    per_second=10.0,
                    p50=1.0,
                    errors=Counter({"serverInternal HTTP 500 (finalize)": 1}),
                    timeouts=Counter({"timeout (finalize)": 3}),
                    shed=shed,
                ),
                cpu_seconds=60.0,
            )
        ],
    )
    on = TargetResult(
        "acme_ca-limits",
        {"shape": "y"},
        [
            LevelResult(
                "acme_ca-limits",
                500,
                60,
                _Outcome(
                    500, 60, 570, per_second=9.5, p50=1.1, shed=Counter({"429 rateLimited (x)": 1})
                ),
                cpu_seconds=60.0,
            )
        ],
    )
    machine = {k: "?" for k in ("date", "cpu_count", "cpu_model", "memory", "os", "kernel")}
    machine |= {k: "?" for k in ("python", "pebble", "postgresql", "softhsm2", "acme_ca_commit")}
    text = markdown([off, on], options, machine)
    assert "| clients | figure | acme_ca | acme_ca, rate limits on | limits on / off |" in text
    rows = {
        line.strip("|").split("|")[1].strip(): line
        for line in text.splitlines()
        if line.startswith("| 500 ")
    }
    assert rows["issuances/s (higher is better)"].endswith("| 10.00 | 9.50 | 0.95 |")
    assert rows["errors (by kind)"].endswith("| serverInternal HTTP 500 (finalize) 1 | 0 |  |")
    assert rows["timeouts"].endswith("| 3 | 0 |  |")
    assert rows["shed (answers obeyed, then retried)"].endswith(
        "| 42 503s with Retry-After | 1 429s with Retry-After |  |"
    )
    assert rows["CPU ms/issuance (lower is better)"].endswith("| 100.0 | 105.3 | 1.05 |")
