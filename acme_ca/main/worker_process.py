"""serve's signing worker as a child process (``serve_worker``, unless
``serve_worker_in_process``), so ``serve --test`` and the embedded defaults use two cores.

serve starts ``python -m acme_ca worker --serve-child`` with its own interpreter and hands it,
through the child's stdin, one :class:`WorkerLaunch`: serve's configuration with the DSN of the
database serve runs on (embedded and ephemeral ones included; their lifetime stays serve's),
serve's deployment assessment (the child signs under the verdict serve started with) and the
corroboration set-up (``--perspectives``' remote VAs run in serve).  With ``ct_log_list``
unset the child starts the CT test logs itself, as ``acme-ca worker`` does: the worker is
their only client, and their share of the CPU is then off serve's core (docs/performance.md,
issue 20 target 2).  A serve that is killed takes the child with it, as it took its
in-process worker: on Linux the kernel SIGKILLs the child (``PR_SET_PDEATHSIG``); elsewhere
the stdin pipe, left open as a lifeline, reaches end of file and the child stops as on
SIGTERM.

The child writes its JSON log lines to serve's stdout (inherited), one ``write`` per line
(:mod:`acme_ca.log`), each naming ``process: worker``.  It runs in a session of its own, so a
Ctrl-C at a terminal reaches serve only, which stops the child first: SIGTERM, then SIGKILL
after :data:`STOP_SECONDS` (a killed worker's jobs are taken over at once by the next worker on
the host: their holder's process is gone).  A child that exits while serve runs takes serve
down (:class:`WorkerExited`), as a failed in-process worker always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import IO

import structlog

from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.deployment import Assessment, signing_guard
from acme_ca.main.metrics import metrics_listener
from acme_ca.own_python import own_python
from acme_ca.va.perspectives import MpicSetup
from acme_ca.wfe import urls

log = structlog.get_logger(component="acme_ca.main.worker_process")

#: How the child is started (after this interpreter and ``-P``, :func:`own_python`): the
#: ``acme-ca worker`` command.
CHILD_ARGS = ("-m", "acme_ca", "worker", "--serve-child")
#: How long a stopping child may finish its jobs in flight after SIGTERM before it is killed.
STOP_SECONDS = 20.0
_LENGTH = struct.Struct(">Q")


class WorkerExited(ChildProcessError):
    """serve's worker child exited while serve was running."""


@dataclass(frozen=True)
class WorkerLaunch:
    """What serve hands its worker child (pickled on the child's stdin: same interpreter,
    same code, a pipe only the two share)."""

    config: Config
    """serve's configuration, ``database_url`` the DSN serve runs on."""
    assessment: Assessment
    mpic: MpicSetup
    parent_pid: int = field(default_factory=os.getpid)
    """serve's pid: the child checks it is still its parent once it will die with it."""


def child_config(config: Config, dsn: str) -> Config:
    """The child's configuration: serve's, on serve's database; its metrics listener the
    worker's default when ``metrics_listen`` is unset, else off (an address set for serve
    is serve's)."""
    return replace(
        config,
        database_url=dsn,
        metrics_listen=None if config.metrics_listen is None else "off",
    )


class WorkerProcess:
    """The running child: :meth:`exited` ends when it does; :meth:`stop` ends it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._stopping = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def exited(self) -> None:
        """Return when the child exits on its own, after logging why; raises
        :class:`WorkerExited` (serve goes down with it)."""
        code = await self._proc.wait()
        if self._stopping:
            return
        reason = _describe(code)
        log.error("worker.process_exited", pid=self.pid, returncode=code, reason=reason)
        raise WorkerExited(f"the signing worker process (pid {self.pid}) {reason}")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within :data:`STOP_SECONDS`; waits.
        Once: serve calls it first thing at stop, and again on its way out."""
        if self._stopping:
            return
        self._stopping = True
        proc = self._proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_SECONDS)
            except TimeoutError:
                log.warning("worker.process_killed", pid=proc.pid, after_seconds=STOP_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        log.info("worker.process_stopped", pid=proc.pid, returncode=proc.returncode)


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


@contextlib.asynccontextmanager
async def worker_process(launch: WorkerLaunch) -> AsyncIterator[WorkerProcess]:
    """Start the child, hand it ``launch``, and stop it when the context exits."""
    payload = pickle.dumps(launch, protocol=pickle.HIGHEST_PROTOCOL)
    argv, env = own_python(*CHILD_ARGS)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    child = WorkerProcess(proc)
    try:
        assert proc.stdin is not None
        proc.stdin.write(_LENGTH.pack(len(payload)) + payload)
        await proc.stdin.drain()
        log.info("worker.process_started", pid=proc.pid, argv=argv)
        yield child
    finally:
        await child.stop()


# ---------------------------------------------------------------------------------- child


def read_launch(stream: IO[bytes]) -> WorkerLaunch:
    """The child's side: the one :class:`WorkerLaunch` serve writes first on its stdin."""
    head = stream.read(_LENGTH.size)
    if len(head) != _LENGTH.size:
        raise ChildProcessError("serve closed the worker's stdin before handing it its launch")
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) != length:
        raise ChildProcessError("serve closed the worker's stdin in the middle of its launch")
    # serve's own bytes, on a pipe only serve and this child hold: not untrusted input.
    launch = pickle.loads(body)  # noqa: S301
    if not isinstance(launch, WorkerLaunch):
        raise ChildProcessError(f"not a worker launch: {type(launch).__name__}")
    return launch


def die_with_parent(launch: WorkerLaunch) -> None:
    """Linux: the kernel SIGKILLs this process when serve dies; if serve died before that
    was set (this process was adopted by another), exit now."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != launch.parent_pid:
        raise ChildProcessError(f"serve (pid {launch.parent_pid}) is gone")


class _Lifeline(asyncio.Protocol):
    """The read end of serve's stdin pipe: end of file (serve gone) sets ``stop``."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        if not self._stop.is_set():
            log.warning("worker.parent_gone", detail="serve closed the lifeline: stopping")
            self._stop.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop.set()


async def run_child(launch: WorkerLaunch) -> None:
    """The child's life: the signing worker on serve's database until SIGTERM, SIGINT or
    serve's end, with its CT test logs when ``ct_log_list`` is unset."""
    from acme_ca.main.worker import run_worker  # the heavy imports, after the launch is read

    config = launch.config
    assert config.database_url is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lifeline, _ = await loop.connect_read_pipe(
        lambda: _Lifeline(stop), os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(lifeline.close)
        await stack.enter_async_context(metrics_listener(config, "worker"))
        from acme_ca.testsrv.ct_logs_runner import ct_test_logs  # None: ct_log_list is set

        ct_logs = await stack.enter_async_context(ct_test_logs(config))
        await run_worker(
            config,
            config.database_url,
            stop,
            SystemClock(),
            ct_logs=ct_logs,
            production=launch.assessment.production,
            signing_guard=signing_guard(launch.assessment),
            account_uri=urls.Urls(config.external_base_url).account,
            mpic=launch.mpic,
        )
