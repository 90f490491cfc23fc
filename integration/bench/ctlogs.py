"""The CT test logs of the acme_ca benchmark target, in a process of their own.

Why a separate process: left unset, ``ct_log_list`` makes ``acme-ca worker`` start the test
logs inside itself, so every SCT the logs sign would be charged to the CA's CPU.  In
production the logs are remote services; here they run beside the CA (same logs, same keys
and roots as :mod:`acme_ca.ct_testlogs`), and the worker reaches them over HTTP through the
log list this process writes.

Usage: ``python -m integration.bench.ctlogs --home HOME --log-list PATH``; runs until SIGTERM
or SIGINT.  ``HOME`` is the CA's home (its ``pki/issuers.toml`` names the roots to accept).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

import structlog

from acme_ca.config import load_config
from acme_ca.ct_testlogs import accepted_roots, load_or_create_key
from acme_ca.log import configure_logging
from acme_ca.testsrv.ct_log import TestCtLogs, default_specs

log = structlog.get_logger(component="integration.bench.ctlogs")


async def run(home: Path, log_list: Path) -> None:
    """Serve the three default test logs until asked to stop; the log list is written once
    they listen (atomically, so its appearance means they are ready)."""
    config = load_config(env={"ACME_CA_HOME": str(home)})
    keys = [load_or_create_key(home / "ct" / f"test-log-{x}.pem") for x in "abc"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with TestCtLogs(default_specs(keys), accepted_roots(config)) as logs:
        logs.write_log_list(log_list)
        log.info("bench_ct_logs.ready", log_list=str(log_list),
                 logs=[{"log": x.name, "url": x.url} for x in logs.logs])
        await stop.wait()
        log.info("bench_ct_logs.stopping",
                 entries={x.name: x.entries for x in logs.logs})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.bench.ctlogs")
    parser.add_argument("--home", type=Path, required=True, help="the CA's home directory")
    parser.add_argument("--log-list", type=Path, required=True, help="where to write the list")
    args = parser.parse_args(argv)
    configure_logging("json", "info")
    asyncio.run(run(args.home, args.log_list))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
