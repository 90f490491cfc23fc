"""``python -m integration.bench``: acme_ca against Pebble, level by level (issue 8).

For each target in turn (``--targets``, default every one of ``servers.TARGETS``): start it
(:mod:`integration.bench.servers`), then for each client count of ``--levels`` wait until the
server is idle, snapshot the CPU of its processes, run the load generator for the level's
duration, snapshot again.  One server serves all levels, as a production server would; a
level after which the server no longer answers (the load generator says so, or one of its
processes died), or at which the load generator could not even register its accounts, is
recorded as such and the target's remaining levels are not run: a server that fell over is
the finding, and restarting it would hide that.  The exception is Pebble (:data:`RETRIES`),
whose in-memory store deadlocks under concurrency (2.4.0): it is restarted and the level run
again, up to 3 more times; the restarts are reported, and a level it never finished is
marked so.

The result is a Markdown table (printed, and written with ``--markdown``) of issuances per
second, latency percentiles, errors by kind, timeouts, answers shed with Retry-After (obeyed
and retried, not errors: RFC 8555 §6.6) and server CPU seconds per issuance for each target
and level, with acme_ca's ratio to Pebble and step-ca and the rate-limits-on row's ratio to
the row without them (issue 16); ``--json`` writes every raw figure,
latencies included, the machine and exactly what was started.

CPU per issuance divides the server's CPU over the whole ``run_load`` call (its setup of
accounts, the measured duration and the wind-down of requests in flight) by the issuances
completed in the measured duration, for both targets alike.  The load generator runs in this
process, on the same machine: its own CPU is reported (``client_cpu_seconds``) so a level
where the client saturated the machine can be told apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from integration.bench import counts, procstat
from integration.bench.servers import (
    REPO,
    TARGETS,
    BenchSetupError,
    Target,
    deb_version,
    pg_version,
)
from integration.bench.step_ca import PACKAGE as STEP_CA_PACKAGE

DEFAULT_LEVELS = (1, 5, 50, 200, 500)
#: The levels from this many clients up take ``--duration-200`` (the goal: no errors at 500
#: clients for 60 s).
LONG_LEVEL = 200
DISPLAY = {
    "pebble": "Pebble",
    "acme_ca": "acme_ca",
    "acme_ca-limits": "acme_ca, rate limits on",
    "acme_ca-mpic": "acme_ca + 5 remote VAs",
    "acme_ca-test": "acme_ca serve --test",
    "acme_ca-readme": "acme_ca, README shape",
    "step-ca": "step-ca",
}
#: Targets restarted when they stop answering, and how many times a level is then run again:
#: Pebble 2.4.0 deadlocks its store under concurrency, a known bug rather than a finding.
RETRIES = {"pebble": 3}
#: The report's ratio columns, (numerator, denominator): acme_ca against each reference, and
#: the limits-on row against the limits-off one (issue 16: at most 5% worse).
RATIOS = (("acme_ca", "pebble"), ("acme_ca", "step-ca"), ("acme_ca-limits", "acme_ca"))
#: A server is idle when it used less than this share of one CPU over QUIET_WINDOW.
QUIET_SHARE = 0.1
QUIET_WINDOW = 0.5
QUIET_MAX_WAIT = 15.0


class LoadOutcome(Protocol):
    """What this module reads of ``integration.bench.loadgen.LoadResult``."""

    @property
    def clients(self) -> int: ...
    @property
    def duration(self) -> float: ...
    @property
    def issuances(self) -> int: ...
    @property
    def latencies(self) -> list[float]: ...
    @property
    def errors(self) -> Counter[str]: ...
    @property
    def timeouts(self) -> Counter[str]: ...
    @property
    def shed(self) -> Counter[str]: ...
    @property
    def stopped_answering(self) -> bool: ...
    @property
    def setup_failed(self) -> str | None: ...
    @property
    def per_second(self) -> float | None: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p90(self) -> float | None: ...
    @property
    def p99(self) -> float | None: ...


#: ``integration.bench.loadgen.run_load``'s signature, as called here.
LoadFn = Callable[..., Coroutine[Any, Any, LoadOutcome]]


@dataclass
class LevelResult:
    """One target at one client count."""

    target: str
    clients: int
    requested_duration: float
    outcome: LoadOutcome | None = None
    #: Server CPU (the target's counted processes) over the level, and its split by part.
    cpu_seconds: float | None = None
    cpu_split: dict[str, float] = field(default_factory=dict)
    #: Shared infrastructure (DNS, CT logs): reported, not counted.
    infra_cpu: dict[str, float] = field(default_factory=dict)
    #: This process (the load generator).
    client_cpu_seconds: float | None = None
    wall_seconds: float | None = None
    stopped_answering: bool = False
    #: Why the level was not run (the server stopped answering at an earlier level).
    not_run: str | None = None
    #: The check after the level that the server still serves a new client (see probe()).
    probe: str | None = None
    #: Work counted per issuance over the level (counts.COUNTS), when the target counts it.
    per_issuance: dict[str, float] = field(default_factory=dict)
    #: Runs of the level (more than one when the target was restarted, see RETRIES) and what
    #: happened to each run before the last.
    attempts: int = 1
    failed_attempts: list[str] = field(default_factory=list)

    @property
    def issuances(self) -> int:
        return self.outcome.issuances if self.outcome else 0

    @property
    def cpu_per_issuance(self) -> float | None:
        if self.cpu_seconds is None or not self.issuances:
            return None
        return self.cpu_seconds / self.issuances

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "clients": self.clients,
            "requested_duration": self.requested_duration,
            "not_run": self.not_run,
            "stopped_answering": self.stopped_answering,
            "probe": self.probe,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "cpu_per_issuance": self.cpu_per_issuance,
            "cpu_split": self.cpu_split,
            "infra_cpu": self.infra_cpu,
            "client_cpu_seconds": self.client_cpu_seconds,
            "per_issuance": self.per_issuance,
            "attempts": self.attempts,
            "failed_attempts": self.failed_attempts,
        }
        if self.outcome is not None:
            o = self.outcome
            out |= {
                "duration": o.duration,
                "issuances": o.issuances,
                "per_second": o.per_second,
                "p50": o.p50,
                "p90": o.p90,
                "p99": o.p99,
                "errors": dict(o.errors),
                "timeouts": dict(o.timeouts),
                "shed": dict(o.shed),
                "setup_failed": o.setup_failed,
                "load_stopped_answering": o.stopped_answering,
                "latencies": list(o.latencies),
            }
            # Whatever else the load generator reports (retries, request counts).
            as_dict = getattr(o, "as_dict", None)
            if callable(as_dict):
                extra = as_dict()
                if isinstance(extra, dict):
                    out |= {k: v for k, v in extra.items() if k not in out}
        return out


@dataclass
class TargetResult:
    name: str
    details: dict[str, Any] = field(default_factory=dict)
    levels: list[LevelResult] = field(default_factory=list)
    start_error: str | None = None
    startup_seconds: float | None = None
    #: Times the target was restarted after it stopped answering (RETRIES).
    restarts: int = 0

    def level(self, clients: int) -> LevelResult | None:
        for level in self.levels:
            if level.clients == clients:
                return level
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "details": self.details,
            "start_error": self.start_error,
            "startup_seconds": self.startup_seconds,
            "restarts": self.restarts,
            "levels": [x.to_json() for x in self.levels],
        }


@dataclass
class Options:
    levels: list[int]
    duration: float
    duration_long: float
    targets: list[str]
    request_timeout: float
    json_path: Path | None
    markdown_path: Path | None
    workdir: Path | None

    def duration_for(self, clients: int) -> float:
        return self.duration_long if clients >= LONG_LEVEL else self.duration


# ------------------------------------------------------------------------------ machine


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _meminfo_total() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return line.split(":", 1)[1].strip()
    return None


def _os_release() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return None


def _postgres_version() -> str | None:
    from acme_ca.embedded_pg import EmbeddedPostgresError, find_postgres_binaries

    try:
        return pg_version(find_postgres_binaries().version)
    except EmbeddedPostgresError:
        return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    commit = None
    with contextlib.suppress(OSError):
        import subprocess

        run = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        commit = run.stdout.strip() or None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory": _meminfo_total(),
        "os": _os_release(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pebble": deb_version("pebble"),
        "postgresql": _postgres_version(),
        "softhsm2": deb_version("softhsm2"),
        "step_ca": deb_version(STEP_CA_PACKAGE),
        "acme_ca_commit": commit,
        "loadavg_at_start": os.getloadavg(),
    }


# ------------------------------------------------------------------------------ running


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_quiet(target: Target) -> None:
    """Wait (bounded) until the target has finished the previous level's work, so that work
    is not charged to the next level."""
    deadline = time.monotonic() + QUIET_MAX_WAIT
    while time.monotonic() < deadline:
        before = procstat.cpu_seconds(target.cpu_pids())
        time.sleep(QUIET_WINDOW)
        used = procstat.cpu_seconds(target.cpu_pids()) - before
        if used < QUIET_SHARE * QUIET_WINDOW:
            return


def run_level(
    target: Target, clients: int, duration: float, options: Options, load: LoadFn
) -> LevelResult:
    """One level against a running target, with the server's CPU measured around it."""
    result = LevelResult(target.name, clients, duration)
    wait_quiet(target)
    groups = {**target.cpu_split, **target.infra_split}
    counted_before = target.counters() if target.counters else None
    before = procstat.snapshot(groups)
    client_before = _self_cpu()
    started = time.monotonic()
    outcome = asyncio.run(
        load(
            target.directory_url,
            clients=clients,
            duration=duration,
            http01_port=target.http01_port,
            http01_host=target.http01_host,
            cafile=target.cafile,
            request_timeout=options.request_timeout,
        )
    )
    result.wall_seconds = time.monotonic() - started
    result.client_cpu_seconds = _self_cpu() - client_before
    after = procstat.snapshot(groups)
    result.outcome = outcome
    deltas = procstat.delta_seconds(before, after)
    result.cpu_split = {k: deltas[k] for k in target.cpu_split}
    result.infra_cpu = {k: deltas[k] for k in target.infra_split}
    result.cpu_seconds = sum(result.cpu_split.values())
    if target.counters and counted_before is not None and target.alive():
        # After the CPU reading (the counts' settle wait is idle time) and once the last
        # requests' work is done, so it is not charged to the next level.
        wait_quiet(target)
        result.per_issuance = counts.per_issuance(
            counted_before, target.counters(), outcome.issuances
        )
    result.stopped_answering = outcome.stopped_answering or not target.alive()
    if not result.stopped_answering:
        result.probe = probe(target, options, load)
        result.stopped_answering = result.probe != "ok"
    return result


def probe(target: Target, options: Options, load: LoadFn) -> str:
    """After a level, one client registering one account (no issuance): "ok", or why not.

    Why: a server can wedge while still answering the requests that touch no state (Pebble
    2.4.0 deadlocks its in-memory store under concurrency yet keeps handing out nonces), and
    in-flight requests cut off at the end of the window are not errors.  Outside the CPU
    measurement."""
    outcome = asyncio.run(
        load(
            target.directory_url,
            clients=1,
            duration=0.0,
            http01_port=target.http01_port,
            http01_host=target.http01_host,
            cafile=target.cafile,
            request_timeout=options.request_timeout,
        )
    )
    if outcome.setup_failed:
        return f"probe failed: {outcome.setup_failed}"
    if outcome.stopped_answering:
        return "probe failed: stopped answering"
    return "ok"


def _describe_level(level: LevelResult) -> str:
    o = level.outcome
    if o is None:
        return f"not run: {level.not_run}"
    parts = [f"{o.issuances} issuances in {o.duration:.1f} s"]
    if o.per_second is not None:
        parts.append(f"{o.per_second:.2f}/s")
    if o.p50 is not None:
        parts.append(f"p50 {o.p50 * 1000:.0f} ms")
    errors = sum(o.errors.values())
    parts.append(f"{errors} errors" + (f" ({_errors_cell(o.errors)})" if errors else ""))
    parts.append(f"{sum(o.timeouts.values())} timeouts")
    parts.append(f"shed: {_shed_cell(o.shed)}")
    if level.cpu_per_issuance is not None:
        parts.append(f"CPU {level.cpu_per_issuance * 1000:.1f} ms/issuance")
    if o.setup_failed:
        parts.append(f"setup failed: {o.setup_failed}")
    if level.stopped_answering:
        parts.append(
            "STOPPED ANSWERING" + (f" ({level.probe})" if level.probe not in (None, "ok") else "")
        )
    return ", ".join(parts)


def bench_target(result: TargetResult, workdir: Path, options: Options, load: LoadFn) -> None:
    """Start one target, run every level on it (filling ``result`` as it goes, so an
    interruption keeps what was measured), stop it.  A target of :data:`RETRIES` that stops
    answering is restarted (in a work directory of its own, so each run's logs are kept) and
    the level run again."""
    name = result.name
    retries = RETRIES.get(name, 0)
    _progress(f"{name}: starting")
    started = time.monotonic()
    running = contextlib.ExitStack()
    try:
        target = running.enter_context(TARGETS[name](workdir))
        result.startup_seconds = time.monotonic() - started
        result.details = target.details
        _progress(f"{name}: ready in {result.startup_seconds:.1f} s at {target.directory_url}")
        given_up: str | None = None
        for clients in options.levels:
            duration = options.duration_for(clients)
            if given_up is not None:
                result.levels.append(LevelResult(name, clients, duration, not_run=given_up))
                continue
            _progress(f"{name}: {clients} clients for {duration:g} s")
            failed: list[str] = []
            level = run_level(target, clients, duration, options, load)
            while level.stopped_answering and len(failed) < retries:
                failed.append(_describe_level(level))
                result.restarts += 1
                _progress(
                    f"{name}: {clients} clients: {failed[-1]}; restarting {name} "
                    f"(retry {len(failed)} of {retries})"
                )
                running.close()
                running = contextlib.ExitStack()
                try:
                    target = running.enter_context(
                        TARGETS[name](workdir / f"restart-{result.restarts}")
                    )
                except BenchSetupError as exc:
                    level.attempts = len(failed)
                    level.failed_attempts = failed[:-1]
                    result.levels.append(level)
                    raise BenchSetupError(f"restart after {clients} clients: {exc}") from exc
                level = run_level(target, clients, duration, options, load)
            level.attempts = 1 + len(failed)
            level.failed_attempts = failed
            result.levels.append(level)
            _progress(f"{name}: {clients} clients: {_describe_level(level)}")
            if level.stopped_answering:
                given_up = (
                    f"never finished {clients} clients in {level.attempts} runs"
                    if level.attempts > 1
                    else f"stopped answering at {clients} clients"
                )
            elif level.outcome is not None and level.outcome.setup_failed:
                given_up = f"setup failed at {clients} clients"
        _progress(f"{name}: stopping")
        running.close()
    except BenchSetupError as exc:
        result.start_error = str(exc)
        _progress(f"{name}: could not start or stop:\n{exc}")
    finally:
        running.close()


# ------------------------------------------------------------------------------ report


def _errors_cell(errors: Counter[str]) -> str:
    if not sum(errors.values()):
        return "0"
    return ", ".join(f"{kind} {count}" for kind, count in errors.most_common())


def _shed_cell(shed: Counter[str]) -> str:
    """``N 503s with Retry-After`` (and 429s, when a rate limit refused), or 0."""
    by_status = Counter(kind.split(" ", 1)[0] for kind in shed.elements())
    if not by_status:
        return "0"
    return ", ".join(
        f"{count} {status}s with Retry-After" for status, count in sorted(by_status.items())
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.1f}"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "—"
    return f"{ours / theirs:.2f}"


#: (label, getter, formatter, compared): the table's figures per level.
_Figure = tuple[str, Callable[[LevelResult], Any], Callable[[Any], str], bool]
FIGURES: list[_Figure] = [
    (
        "issuances/s (higher is better)",
        lambda lv: lv.outcome.per_second if lv.outcome else None,
        _rate,
        True,
    ),
    (
        "p50 latency ms (lower is better)",
        lambda lv: lv.outcome.p50 if lv.outcome else None,
        _ms,
        True,
    ),
    (
        "p90 latency ms (lower is better)",
        lambda lv: lv.outcome.p90 if lv.outcome else None,
        _ms,
        True,
    ),
    (
        "p99 latency ms (lower is better)",
        lambda lv: lv.outcome.p99 if lv.outcome else None,
        _ms,
        True,
    ),
    (
        "errors (by kind)",
        lambda lv: lv.outcome.errors if lv.outcome else None,
        lambda v: "—" if v is None else _errors_cell(v),
        False,
    ),
    (
        "timeouts",
        lambda lv: lv.outcome.timeouts if lv.outcome else None,
        lambda v: "—" if v is None else str(sum(v.values())),
        False,
    ),
    (
        "shed (answers obeyed, then retried)",
        lambda lv: lv.outcome.shed if lv.outcome else None,
        lambda v: "—" if v is None else _shed_cell(v),
        False,
    ),
    ("CPU ms/issuance (lower is better)", lambda lv: lv.cpu_per_issuance, _ms, True),
]


def _cell(
    level: LevelResult | None, getter: Callable[[LevelResult], Any], fmt: Callable[[Any], str]
) -> str:
    if level is None:
        return "—"
    if level.not_run is not None:
        return f"not run ({level.not_run})"
    if level.stopped_answering:
        if level.attempts > 1:
            return f"never finished ({level.attempts} runs, restarted between)"
        return "stopped answering"
    if level.outcome is not None and level.outcome.setup_failed:
        return "setup failed"
    return fmt(getter(level))


def _number(level: LevelResult | None, getter: Callable[[LevelResult], Any]) -> float | None:
    """A figure fit for a ratio: only from a level that ran cleanly to the end."""
    if level is None or level.not_run or level.stopped_answering or level.outcome is None:
        return None
    if level.outcome.setup_failed:
        return None
    value = getter(level)
    return float(value) if isinstance(value, int | float) else None


def _counts_table(results: Sequence[TargetResult]) -> list[str]:
    """The per-issuance counts (issue 20, target 3) as Markdown lines, if any were counted."""
    rows = []
    for r in results:
        for level in r.levels:
            if level.per_issuance:
                cells = [f"{level.per_issuance.get(k, 0.0):.2f}" for k in counts.COUNTS]
                rows.append(
                    f"| {DISPLAY.get(r.name, r.name)} | {level.clients} | "
                    + " | ".join(cells)
                    + " |"
                )
    if not rows:
        return []
    header = " | ".join(c.replace("_", " ") for c in counts.COUNTS)
    return [
        "Work per issuance (counted by the servers over the level: pg_stat_statements, "
        "pg_stat_database, /metrics):",
        "",
        f"| target | clients | {header} |",
        "|---|---:|" + "---:|" * len(counts.COUNTS),
        *rows,
        "",
    ]


def markdown(
    results: Sequence[TargetResult], options: Options, machine_info: dict[str, Any]
) -> str:
    """The report: machine, targets, the comparison table and acme_ca's CPU split."""
    names = [r.name for r in results]
    title = "# acme_ca vs Pebble" + (" and step-ca" if "step-ca" in names else "")
    lines = [title, ""]
    m = machine_info
    long_levels = [c for c in options.levels if c >= LONG_LEVEL]
    lines += [
        f"- date: {m['date']}",
        f"- machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory']}, {m['os']}, "
        f"kernel {m['kernel']}, Python {m['python']}",
        f"- versions: pebble {m['pebble']}, PostgreSQL {m['postgresql']}, "
        f"SoftHSM2 {m['softhsm2']}, step-ca {m.get('step_ca')}, acme_ca {m['acme_ca_commit']}",
        f"- levels: {', '.join(map(str, options.levels))} clients; {options.duration:g} s each"
        + (
            f" ({options.duration_long:g} s at {', '.join(map(str, long_levels))})"
            if long_levels
            else ""
        )
        + f"; request timeout {options.request_timeout:g} s",
    ]
    for r in results:
        shape = r.details.get("shape", "")
        if r.start_error:
            shape = f"FAILED TO START: {r.start_error.splitlines()[0]}"
        if r.restarts:
            times = "time" if r.restarts == 1 else "times"
            shape += f"; restarted {r.restarts} {times} after it stopped answering"
        lines.append(f"- {DISPLAY.get(r.name, r.name)}: {shape}")
    lines += [
        "- CPU ms/issuance: server CPU over the whole level (account setup and the requests "
        "still in flight at the end included) divided by the issuances completed in it; "
        "Pebble: the pebble process; step-ca: the step-ca process; acme_ca: serve + worker "
        "+ its PostgreSQL server.",
        "",
    ]
    ratios = [(a, b) for a, b in RATIOS if a in names and b in names]
    header = ["clients", "figure", *(DISPLAY.get(n, n) for n in names)]
    header += [
        "limits on / off" if (a, b) == ("acme_ca-limits", "acme_ca") else f"{a} / {DISPLAY[b]}"
        for a, b in ratios
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:", "---", *(["---:"] * (len(header) - 2))]) + "|")
    by_name = {r.name: r for r in results}
    for clients in options.levels:
        for label, getter, fmt, compared in FIGURES:
            row = [str(clients), label]
            row += [_cell(by_name[n].level(clients), getter, fmt) for n in names]
            row += [
                _ratio(
                    _number(by_name[a].level(clients), getter),
                    _number(by_name[b].level(clients), getter),
                )
                if compared
                else ""
                for a, b in ratios
            ]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    split_rows = []
    for r in results:
        for level in r.levels:
            if level.outcome is None or level.cpu_seconds is None:
                continue
            parts = ", ".join(f"{k} {v:.2f}" for k, v in level.cpu_split.items())
            infra = ", ".join(f"{k} {v:.2f}" for k, v in level.infra_cpu.items())
            per = level.cpu_per_issuance
            split_rows.append(
                f"| {DISPLAY.get(r.name, r.name)} | {level.clients} | {level.cpu_seconds:.2f} "
                f"| {parts} | {_ms(per)} | {infra} | {level.client_cpu_seconds or 0:.2f} |"
            )
    if split_rows:
        lines += [
            "CPU seconds per level (counted parts; shared infrastructure and the load "
            "generator reported, not counted):",
            "",
            "| target | clients | server CPU s | split (s) | ms/issuance | not counted (s) "
            "| load generator s |",
            "|---|---:|---:|---|---:|---|---:|",
            *split_rows,
            "",
        ]
    lines += _counts_table(results)
    notes = []
    for r in results:
        for level in r.levels:
            for run, what in enumerate(level.failed_attempts, 1):
                notes.append(
                    f"- {DISPLAY.get(r.name, r.name)} at {level.clients} clients, run {run} "
                    f"of {level.attempts} (restarted after it): {what}"
                )
            if level.outcome is not None and level.outcome.setup_failed:
                notes.append(
                    f"- {r.name} at {level.clients} clients: setup failed: "
                    f"{level.outcome.setup_failed}"
                )
    if notes:
        lines += ["Notes:", "", *notes, ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of client counts: {text!r}") from exc
    if not levels or any(x < 1 for x in levels):
        raise argparse.ArgumentTypeError(f"client counts must be positive: {text!r}")
    return levels


def _targets(text: str) -> list[str]:
    targets = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in targets if x not in TARGETS]
    if unknown or not targets:
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}"
        )
    return targets


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m integration.bench",
        description="Benchmark acme_ca (production shape) against Pebble and step-ca.",
    )
    parser.add_argument(
        "--levels",
        type=_levels,
        default=list(DEFAULT_LEVELS),
        help="client counts, run in order (default 1,5,50,200,500)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="measured seconds per level (default 30)",
    )
    parser.add_argument(
        "--duration-200",
        type=float,
        default=60.0,
        metavar="SECONDS",
        dest="duration_long",
        help=f"measured seconds of each level from {LONG_LEVEL} clients up (default 60)",
    )
    parser.add_argument(
        "--targets",
        type=_targets,
        default=list(TARGETS),
        help=f"comma-separated, run in order (default {','.join(TARGETS)})",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per-request timeout of the load generator (default 10)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        dest="json_path",
        metavar="PATH",
        help="write the raw results (latencies included) as JSON",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        dest="markdown_path",
        metavar="PATH",
        help="write the results table as Markdown",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep servers' logs, configs and data under DIR/run-<time> "
        "(default: a temporary directory, removed after a clean run)",
    )
    args = parser.parse_args(argv)
    return Options(
        levels=args.levels,
        duration=args.duration,
        duration_long=args.duration_long,
        targets=args.targets,
        request_timeout=args.request_timeout,
        json_path=args.json_path,
        markdown_path=args.markdown_path,
        workdir=args.workdir,
    )


def _make_workdir(options: Options) -> tuple[Path, bool]:
    """The run's directory and whether it is temporary.  A temporary one is made readable
    (0755) so PostgreSQL's unprivileged user, when we are root, can keep its cluster in it."""
    if options.workdir is None:
        path = Path(tempfile.mkdtemp(prefix="acme-ca-bench-"))
        path.chmod(0o755)
        return path, True
    stamp = dt.datetime.now(dt.UTC).strftime("run-%Y%m%dT%H%M%SZ")
    path = options.workdir.resolve() / stamp
    path.mkdir(parents=True)
    return path, False


def _sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the benchmark the way Ctrl-C does: servers are stopped on the way out."""
    raise KeyboardInterrupt


def write_outputs(
    results: Sequence[TargetResult],
    options: Options,
    machine_info: dict[str, Any],
    *,
    interrupted: bool = False,
) -> str:
    report = markdown(results, options, machine_info)
    if interrupted:
        report = "**Interrupted: partial results.**\n\n" + report
    if options.markdown_path is not None:
        options.markdown_path.write_text(report + "\n")
    if options.json_path is not None:
        raw = {
            "machine": machine_info,
            "options": {
                "levels": options.levels,
                "duration": options.duration,
                "duration_200": options.duration_long,
                "targets": options.targets,
                "request_timeout": options.request_timeout,
            },
            "interrupted": interrupted,
            "targets": [r.to_json() for r in results],
        }
        options.json_path.write_text(json.dumps(raw, indent=1, default=str) + "\n")
    return report


def main(argv: Sequence[str] | None = None, *, load: LoadFn | None = None) -> int:
    """Run the benchmark; ``load`` replaces the load generator (tests of the orchestration).
    ``interop`` as the first argument runs the interop suite's wall-time comparison instead
    (:mod:`integration.bench.interop_walltime`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["interop"]:
        from integration.bench import interop_walltime

        return interop_walltime.main(args[1:])
    options = parse_args(args)
    if load is None:
        from integration.bench.loadgen import run_load

        load = run_load
    signal.signal(signal.SIGTERM, _sigterm)
    machine_info = machine()
    workdir, temporary = _make_workdir(options)
    _progress(f"work directory {workdir}")
    results: list[TargetResult] = []
    try:
        for name in options.targets:
            results.append(TargetResult(name))
            bench_target(results[-1], workdir, options, load)
    except KeyboardInterrupt:
        write_outputs(results, options, machine_info, interrupted=True)
        _progress(f"interrupted; logs kept in {workdir}")
        return 130
    except Exception:
        write_outputs(results, options, machine_info, interrupted=True)
        _progress(f"failed; logs kept in {workdir}")
        raise
    report = write_outputs(results, options, machine_info)
    print(report)
    failed = [r.name for r in results if r.start_error]
    if temporary and not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        _progress(f"logs kept in {workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
