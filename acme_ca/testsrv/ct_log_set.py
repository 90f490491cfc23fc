"""Several in-process test CT logs run together, with their log list and test mode's defaults.

:class:`TestCtLogs` starts each :class:`~acme_ca.testsrv.ct_log.TestCtLog` on its own port
(0 = a free one) and produces their log list in Chrome's v3 format; :func:`default_specs` is
the three-operator set test mode and the embedded defaults run.  Production code never
imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.clock import Clock
from acme_ca.testsrv.ct_log import LogList, LogListOperator, TestCtLog, TestLogSpec, rfc3339

_log = structlog.get_logger(component=__name__)


def log_list_json(logs: Sequence[TestCtLog], *, version: str = "acme-ca test logs") -> LogList:
    """The v3 log list naming ``logs`` (RFC 6962 logs under ``logs``, static-ct-api logs under
    ``tiled_logs``), operators in order of first appearance."""
    operators: dict[str, LogListOperator] = {}
    for ct_log in logs:
        op = operators.setdefault(
            ct_log.operator,
            {
                "name": ct_log.operator,
                "email": ["ct-logs@example.test"],
                "logs": [],
                "tiled_logs": [],
            },
        )
        (op["logs"] if ct_log.spec.mode == "rfc6962" else op["tiled_logs"]).append(
            ct_log.log_list_entry()
        )
    return {
        "version": version,
        "log_list_timestamp": rfc3339(datetime.now(UTC)),
        "operators": list(operators.values()),
    }


class TestCtLogs:
    """Several test logs, each on its own listener; ``async with`` or start()/stop()."""

    __test__ = False

    def __init__(
        self,
        specs: Sequence[TestLogSpec],
        roots: Sequence[x509.Certificate],
        *,
        host: str = "127.0.0.1",
        clock: Clock | None = None,
    ) -> None:
        self.host = host
        self.logs = [TestCtLog(spec, roots, clock) for spec in specs]
        self._runners: list[web.AppRunner] = []

    def __getitem__(self, name: str) -> TestCtLog:
        for ct_log in self.logs:
            if ct_log.name == name:
                return ct_log
        raise KeyError(name)

    def by_operator(self, operator: str) -> list[TestCtLog]:
        return [x for x in self.logs if x.operator == operator]

    def log_list(self) -> LogList:
        return log_list_json(self.logs)

    def write_log_list(self, path: Path) -> Path:
        """Write the log list atomically (rename over the old file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_text(json.dumps(self.log_list(), indent=2) + "\n")
        partial.replace(path)
        return path

    def clear_faults(self) -> None:
        for ct_log in self.logs:
            ct_log.faults.clear()

    async def start(self) -> TestCtLogs:
        try:
            for ct_log in self.logs:
                runner = web.AppRunner(ct_log.app(), access_log=None, shutdown_timeout=0.5)
                await runner.setup()
                self._runners.append(runner)
                site = web.TCPSite(runner, self.host, ct_log.spec.port)
                await site.start()
                port = runner.addresses[0][1]
                ct_log.url = f"http://{self.host}:{port}/"
        except BaseException:
            await self.stop()
            raise
        listed = self.log_list()
        for ct_log in self.logs:
            ct_log.log_list_json = listed
        _log.info(
            "ct_logs.started", logs=[(x.name, x.operator, x.spec.mode, x.url) for x in self.logs]
        )
        return self

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> TestCtLogs:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def default_specs(
    keys: Sequence[ec.EllipticCurvePrivateKey], now: datetime | None = None
) -> list[TestLogSpec]:
    """The three logs of test mode and the embedded defaults, one per operator:

    * ``acme-ca test log A`` (operator A, RFC 6962), notAfter in [Jan 1 of last year,
      Jan 1 two years on);
    * ``acme-ca test log B`` (operator B, RFC 6962), [Jan 1 of last year, Jan 1 three years on);
    * ``acme-ca test log C`` (operator C, static-ct-api), [Jan 1 this year, Jan 1 two years on).

    Every interval covers the notAfter of any certificate of up to a year issued now.
    """
    year = (now or datetime.now(UTC)).year

    def jan1(y: int) -> datetime:
        return datetime(y, 1, 1, tzinfo=UTC)

    a, b, c = keys
    return [
        TestLogSpec(
            "acme-ca test log A",
            "acme-ca test operator A",
            a,
            jan1(year - 1),
            jan1(year + 2),
            "rfc6962",
        ),
        TestLogSpec(
            "acme-ca test log B",
            "acme-ca test operator B",
            b,
            jan1(year - 1),
            jan1(year + 3),
            "rfc6962",
        ),
        TestLogSpec(
            "acme-ca test log C",
            "acme-ca test operator C",
            c,
            jan1(year),
            jan1(year + 2),
            "static-ct-api",
        ),
    ]


__all__ = ["TestCtLogs", "default_specs", "log_list_json"]
