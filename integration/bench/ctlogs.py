"""The CT test logs of the acme_ca benchmark target, in a process of their own.

Why a separate process: left unset, ``ct_log_list`` makes ``acme-ca worker`` start the test
logs inside itself, so every SCT the logs sign would be charged to the CA's CPU.  In
production the logs are remote services; here
:func:`acme_ca.testsrv.ct_logs_runner.ct_test_logs` (the same logs, keys and roots the CA
would start itself) runs beside the CA, and the worker reaches them over HTTP through the
log list it writes to ``HOME/ct/log_list.json``.

Usage: ``python -m integration.bench.ctlogs --home HOME``; runs until SIGTERM or SIGINT.
``HOME`` is the CA's home (its ``pki/issuers.toml`` names the roots to accept).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

import structlog

from acme_ca.config import load_config
from acme_ca.log import configure_logging
from acme_ca.testsrv.ct_logs_runner import ct_test_logs, log_list_path

log = structlog.get_logger(component="integration.bench.ctlogs")


async def run(home: Path) -> None:
    """Serve the test logs until asked to stop; the log list is written (atomically) once
    they listen, so its appearance means they are ready."""
    config = load_config(env={"ACME_CA_HOME": str(home)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ct_test_logs(config):
        log.info("bench_ct_logs.ready", log_list=str(log_list_path(config)))
        await stop.wait()
        log.info("bench_ct_logs.stopping")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.bench.ctlogs")
    parser.add_argument("--home", type=Path, required=True, help="the CA's home directory")
    args = parser.parse_args(argv)
    configure_logging("json", "info")
    asyncio.run(run(args.home))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
