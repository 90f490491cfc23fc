"""Work counted per issuance (issue 20, target 3): read from the servers, not estimated.

Two sources, each read before and after a level; the difference divided by the issuances
is what the report prints:

* PostgreSQL: ``pg_stat_statements`` (every statement a client sent, ``BEGIN``/``COMMIT``
  included, by calls) and ``pg_stat_database`` (transactions committed and rolled back).
  The benchmark's own reading query is left out of both.
* acme_ca's ``/metrics`` of serve and worker: ACME requests answered, CA signatures (HSM
  calls), pkilint runs and CT round trips (precertificate and final submissions apart).

Background work (CRL publication, the metrics refresher, the key-compromise sweeper) is
counted too: it is work the server does while issuing, and it shrinks per issuance as the
rate grows.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping

import asyncpg

#: The names in the report, in its order.
COUNTS = (
    "sql_statements",
    "sql_transactions",
    "requests",
    "signatures",
    "lint_runs",
    "ct_precert_submissions",
    "ct_final_submissions",
)

#: Prometheus samples summed into each count (``name{labels} value`` lines).
_METRIC_SAMPLES: Mapping[str, tuple[str, str | None]] = {
    # count name: (sample name, required label fragment or None)
    "requests": ("response_time_count", None),
    "signatures": ("signatures_total", None),
    "lint_runs": ("lint_latency_seconds_count", None),
    "ct_precert_submissions": ("ct_submission_time_seconds_count", 'type="precert"'),
    "ct_final_submissions": ("ct_submission_time_seconds_count", 'type="final"'),
}

#: A sample line; label values are quoted and may hold braces (route templates do).
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')

#: One statement, so one transaction, per reading: subtracted from the deltas.
_PG_QUERY = """
SELECT
  (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND query NOT LIKE '%pg_stat_statements%') AS statements,
  (SELECT xact_commit + xact_rollback FROM pg_stat_database
    WHERE datname = current_database()) AS transactions
"""

#: pg_stat_database is flushed by each backend at most once a second when it is idle.
STATS_SETTLE_SECONDS = 1.5


def parse_metrics(text: str) -> dict[str, float]:
    """Sum the samples of :data:`_METRIC_SAMPLES` in a Prometheus text exposition."""
    out = dict.fromkeys(_METRIC_SAMPLES, 0.0)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match[1], match[2] or "", match[3]
        for count, (sample, label) in _METRIC_SAMPLES.items():
            if name == sample and (label is None or label in labels):
                out[count] += float(value)
    return out


def scrape(urls: Iterable[str], timeout: float = 5.0) -> dict[str, float]:
    """The metric counts summed over every process's ``/metrics``."""
    total = dict.fromkeys(_METRIC_SAMPLES, 0.0)
    for url in urls:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            for k, v in parse_metrics(resp.read().decode()).items():
                total[k] += v
    return total


async def _pg(dsn: str) -> tuple[float, float]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(_PG_QUERY)
    finally:
        await conn.close()
    assert row is not None
    return float(row["statements"]), float(row["transactions"])


def enable_statement_counting(dsn: str) -> None:
    """Ask for ``pg_stat_statements`` (takes effect at the next server start); its defaults
    count top-level statements, utility ones (``BEGIN``, ``COMMIT``) included."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await conn.close()

    asyncio.run(run())


def create_extension(dsn: str) -> None:
    """``CREATE EXTENSION pg_stat_statements`` in the CA's database (after the restart)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()

    asyncio.run(run())


def acme_ca_counter(dsn: str, metrics_urls: Iterable[str]) -> Callable[[], dict[str, float]]:
    """A reading of every count of :data:`COUNTS`, for :func:`per_issuance` deltas."""
    urls = list(metrics_urls)

    def read() -> dict[str, float]:
        time.sleep(STATS_SETTLE_SECONDS)
        statements, transactions = asyncio.run(_pg(dsn))
        return {"sql_statements": statements, "sql_transactions": transactions, **scrape(urls)}

    return read


def per_issuance(
    before: Mapping[str, float], after: Mapping[str, float], issuances: int
) -> dict[str, float]:
    """Each count's growth over the level divided by the issuances; the reading's own
    transaction taken out (its statement is not matched)."""
    if issuances <= 0:
        return {}
    own = {"sql_transactions": 1.0}
    return {
        k: (after[k] - before[k] - own.get(k, 0.0)) / issuances
        for k in COUNTS
        if k in before and k in after
    }
