"""Shared helpers of the integration tests: run the real ``acme-ca`` console script as
subprocesses (``serve``, ``worker``, one-shot commands), wait for them, stop them, and show
their log tails when a test fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pytest

from tests.support.ports import free_port


def acme_ca_exe() -> str:
    """The ``acme-ca`` console script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "acme-ca"
    if beside.is_file():
        return str(beside)
    found = shutil.which("acme-ca")
    if found is None:
        raise FileNotFoundError("the acme-ca console script is not installed (pip install -e .)")
    return found


ACME_CA = acme_ca_exe()
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0
TAIL_LINES = 40


#: The listeners ``serve --test`` opens on fixed ports by default (Pebble's 15000,
#: pebble-challtestsrv's 8053, 8055, 5003 and 5001; 5002 is :func:`free_test_mode_ports`' own case).
TEST_MODE_LISTENERS = (
    "ACME_CA_MANAGEMENT_LISTEN",
    "ACME_CA_CHALLSRV_DNS",
    "ACME_CA_CHALLSRV_MANAGEMENT",
    "ACME_CA_CHALLSRV_HTTPS01",
    "ACME_CA_CHALLSRV_TLSALPN01",
)


def free_test_mode_ports(args: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """A free loopback port for each test-mode listener the test left at its fixed default;
    the test's own value (``off`` included) and the ``--challsrv-*`` flags (which win over
    the variables) stay.  The http-01 listener and the port the CA validates http-01 on
    (5002, not derived from the listener) move together, only when the test set neither."""
    ports = {v: f"127.0.0.1:{free_port()}" for v in TEST_MODE_LISTENERS if v not in env}
    http01 = (
        "ACME_CA_CHALLSRV_HTTP01",
        "ACME_CA_HTTP01_PORT",
        "--challsrv-http01",
        "--http01-port",
    )
    if not any(name in env or name in args for name in http01):
        port = free_port()
        ports.update(ACME_CA_CHALLSRV_HTTP01=f"127.0.0.1:{port}", ACME_CA_HTTP01_PORT=str(port))
    return ports


def base_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any ACME_CA_* setting that would leak into the CA,
    nor Pebble's PEBBLE_* knobs (which ``serve --test`` and Pebble itself obey), so the
    shell a test runs from cannot change what a server under test does; ``extra`` on top.
    The metrics listener is off unless ``extra`` (or a flag) sets one: its fixed default
    ports would collide between the servers and workers tests run at once.  Rate limits are
    off too unless ``extra`` sets ``ACME_CA_RATE_LIMITS``: the harnesses and the benchmark
    make many accounts and certificates from 127.0.0.1 for the same names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACME_CA_", "PEBBLE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["ACME_CA_METRICS_LISTEN"] = "off"
    env["ACME_CA_RATE_LIMITS"] = "false"
    env.update(extra)
    return env


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").rstrip()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) if text else "(empty)"


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """A one-shot ``acme-ca`` command (``init``, ``db migrate``, ``eab ...``)."""
    return subprocess.run(
        [ACME_CA, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def read_log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON objects among the lines of a structlog output file (other lines skipped)."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events


@dataclass
class LoggedProcess:
    """One long-running subprocess whose stdout/stderr go to files, shown (tails) when
    something fails."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str],
        **popen: Any,
    ) -> Self:
        """Start ``argv`` with stdin closed and its output in ``log_dir/name.stdout|stderr``;
        ``popen`` passes on (``cwd``, ``pass_fds``, ``start_new_session`` ...)."""
        log_dir.mkdir(parents=True, exist_ok=True)
        stdout_path = log_dir / f"{name}.stdout"
        stderr_path = log_dir / f"{name}.stderr"
        out = stdout_path.open("wb")
        err = stderr_path.open("wb")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env),
                **popen,
            )
        except BaseException:
            out.close()
            err.close()
            raise
        return cls(
            name=name, proc=proc, stdout_path=stdout_path, stderr_path=stderr_path, files=[out, err]
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tails(self, lines: int = TAIL_LINES) -> str:
        return (
            f"--- {self.name} (pid {self.proc.pid}, exit {self.proc.poll()}) stdout tail ---\n"
            f"{tail(self.stdout_path, lines)}\n"
            f"--- {self.name} stderr tail ---\n{tail(self.stderr_path, lines)}"
        )

    def failure_reason(self) -> str:
        """The reason of the process's ``*.failed`` event, first in a failure message (a CI
        view that shows only the start of a long message still shows why)."""
        for event in reversed(self.log_events()):
            if str(event.get("event", "")).endswith(".failed"):
                reason = f": {event.get('error_type')}: {event.get('reason')}"
                return reason + (f"\n{event['exception']}" if "exception" in event else "")
        return ""

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        return read_log_events(self.stdout_path)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log_events() if e.get("event") == name]

    def wait_event(self, name: str, *, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """The first log event called ``name``, waiting for it; fails if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}\n{self.tails()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name}: no {name!r} event within {timeout:.0f} s\n{self.tails()}"
                )
            time.sleep(0.1)

    def wait_events(
        self,
        name: str,
        *,
        where: Callable[[dict[str, Any]], bool] = lambda event: True,
        count: int = 1,
        timeout: float = READY_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """The events called ``name`` that match ``where``, once there are at least ``count``.

        For what a process logs after the state a test waited on: ``certificate.issued`` is
        logged after the commit that makes the order valid, so a client may hold the
        certificate before the line is written."""
        deadline = time.monotonic() + timeout
        while len(found := [e for e in self.events(name) if where(e)]) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: {len(found)} of {count} {name!r} events\n{self.tails()}")
            time.sleep(0.05)
        return found

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; fails the test (after killing) if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} ignored SIGTERM for {timeout:.0f} s\n{self.tails()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close_files(self) -> None:
        for fh in self.files:
            fh.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, SIGKILL if it has not exited within ``timeout``; then close its files."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:
            self.close_files()


@dataclass
class CaProcess(LoggedProcess):
    """An ``acme-ca`` subprocess: its JSON log events, readiness and SIGTERM stop."""

    base_url: str | None = None

    @property
    def directory_url(self) -> str:
        if self.base_url is None:
            raise AssertionError(f"{self.name} serves no HTTP")
        return self.base_url + "/directory"

    def wait_ready(self, *, cafile: Path | None = None, timeout: float = READY_TIMEOUT) -> None:
        """Poll the directory until it answers 200 (over TLS trusting ``cafile`` if given)."""
        deadline = time.monotonic() + timeout
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with {self.proc.returncode}"
                    f"{self.failure_reason()}\n{self.tails()}"
                )
            context = None
            if cafile is not None:
                if not cafile.exists():
                    time.sleep(0.1)
                    continue
                context = ssl.create_default_context(cafile=str(cafile))
            try:
                with urllib.request.urlopen(self.directory_url, timeout=2, context=context) as r:
                    if r.status == 200:
                        json.loads(r.read())
                        return
                    last_error = f"HTTP {r.status}"
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last_error = exc
            time.sleep(0.1)
        pytest.fail(
            f"{self.name}: {self.directory_url} not ready within {timeout:.0f} s "
            f"(last error: {last_error!r})\n{self.tails()}"
        )


def stop_leftover_clusters(home: Path, timeout: float = 10.0) -> None:
    """Stop the embedded PostgreSQL clusters of ``home`` that outlived their ``serve``.

    ``pg_ctl`` detaches the server, so a ``serve`` killed with SIGKILL (:meth:`CaProcesses.close`,
    or a stop that timed out) leaves its cluster running; the next start of that home would
    reuse it, but a test's home is never started again.  SIGQUIT is PostgreSQL's immediate
    shutdown: the clusters are throwaway test state."""
    for link in (home / "pg" / "cluster", home / "pg-ephemeral" / "cluster"):
        pid_file = link.resolve() / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError):
            continue  # no cluster, or it already stopped
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_file.exists():
            time.sleep(0.05)


class CaProcesses:
    """Starts ``acme-ca`` subprocesses; :meth:`close` kills whatever is left and prints the
    log tails (pytest shows them only for a failed test).  Also a context manager."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[CaProcess] = []
        self._homes: set[Path] = set()

    def start(
        self,
        name: str,
        *argv: str,
        env: dict[str, str],
        base_url: str | None = None,
        prefix: Sequence[str] = (),
    ) -> CaProcess:
        """``acme-ca <argv...>`` in the background; ``name`` names its log files (unique).
        ``prefix`` runs it through another command (``ip netns exec NAME``)."""
        ca = CaProcess.spawn(name, [*prefix, ACME_CA, *argv], log_dir=self._log_dir, env=env)
        ca.base_url = base_url
        self.started.append(ca)
        if home := env.get("ACME_CA_HOME"):
            self._homes.add(Path(home))
        return ca

    def serve(self, name: str, *args: str, env: dict[str, str], base_url: str) -> CaProcess:
        """``acme-ca serve``; its status listener gets a free port unless the test set one,
        and so does every test-mode listener (:func:`free_test_mode_ports`), so several servers,
        of this suite or of another one running at once, never meet on a fixed port."""
        env = {"ACME_CA_STATUS_LISTEN": f"127.0.0.1:{free_port()}", **env}
        if "--test" in args or env.get("ACME_CA_TEST_MODE", "").lower() in ("1", "true"):
            env = {**env, **free_test_mode_ports(args, env)}
        return self.start(name, "serve", *args, env=env, base_url=base_url)

    def serve_plain(self, name: str, database_url: str, home: Path, **env: str) -> CaProcess:
        port = free_port()
        return self.serve(
            name,
            "--plain-http",
            "--listen",
            f"127.0.0.1:{port}",
            env=base_env(ACME_CA_DATABASE_URL=database_url, ACME_CA_HOME=str(home), **env),
            base_url=f"http://127.0.0.1:{port}",
        )

    def worker(self, name: str, *, env: dict[str, str]) -> CaProcess:
        return self.start(name, "worker", env=env)

    def close(self) -> None:
        for ca in self.started:
            ca.kill()
            ca.close_files()
            # Shown by pytest only when the test failed.
            print(ca.tails())
        for home in self._homes:
            stop_leftover_clusters(home)

    def __enter__(self) -> CaProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
