"""Running the PostgreSQL programs: a clean environment, optional run-as, log tails.

Why apart from the cluster: every program (initdb, pg_ctl, pg_isready, createdb, the version
probe) runs through the same environment cleaning, and the server's own commands drop root
the same way; one place keeps them alike.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

LOG_TAIL_LINES = 30


class EmbeddedPostgresError(RuntimeError):
    """The private cluster could not be set up, started or stopped."""


class Logger(Protocol):
    """The part of a structlog logger this package uses, so any bound logger fits."""

    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account that server commands run as when we are root."""

    name: str
    uid: int
    gid: int


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus libpq/server variables (PGPORT, PGDATA, ...) that would
    silently redirect our commands, with C messages so failures read the same everywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("LANGUAGE", None)
    env["LC_ALL"] = "C"
    env.update(extra)
    return env


def tail(path: Path, lines: int = LOG_TAIL_LINES, start: int = 0) -> str:
    """The last lines of a log, read from ``start`` on, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    text = data.decode("utf-8", errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) if text else "(empty)"


def run(
    cmd: Sequence[str],
    *,
    run_as: RunAs | None,
    server_log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    stdout: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one program, as ``run_as`` when given (root dropped for the server user).

    Output goes to ``stdout`` when given (pg_ctl start, whose server inherits it: a pipe
    would keep us waiting for the server's whole life), otherwise it is captured. A timeout
    raises with the tail of ``server_log``.
    """
    capture = subprocess.PIPE if stdout is None else stdout
    try:
        proc = subprocess.run(  # noqa: S603 - argv built by the caller, no shell
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=capture,
            stderr=subprocess.PIPE if stdout is None else subprocess.STDOUT,
            env=env if env is not None else clean_env(),
            cwd="/",
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedPostgresError(
            f"{cmd[0]} did not finish in {exc.timeout} s\n"
            f"--- tail of {server_log} ---\n{tail(server_log)}"
        ) from exc
    out = proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else ""
    err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else ""
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
