"""The process's Prometheus metrics: one registry, every family defined once, here.

The rooms record through the small functions below (a label lookup and an add each, a few
microseconds), so no room knows about registries or exposition; ``acme_ca.main.metrics``
serves :data:`REGISTRY` on the ``metrics_listen`` listener.  Names follow Boulder's where it
has the same measurement (``response_time``, ``validation_latency``, ``signatures``,
``signature_errors``, ``ct_submission_time_seconds``, ``nonce_redeems``, ``certificates``,
``crl_updater_generated``, ``ratelimits_spend_latency``, ``db_*``); prometheus-client adds
``_total`` to counters.  Labels take bounded values only (route templates, problem types,
issuer and log names), never a path, name or serial.

Gauges read from the database (queue, CRLs) are refreshed by :func:`refresh` just before a
scrape, at most every :data:`REFRESH_SECONDS`, through the readers main/ registers with
:func:`add_refresher`; connection-pool gauges are read from the pools registered with
:func:`register_pool` at collection time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Final, Protocol

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = structlog.get_logger(component="acme_ca.metrics")

# The *_created series double every counter and histogram and no alert here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

REGISTRY: Final = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

#: Boulder's ``metrics.InternetFacingBuckets``: calls that cross the Internet (validations,
#: CT logs, remote perspectives).
INTERNET_FACING_BUCKETS: Final = (0.1, 0.5, 1, 5, 10, 30, 45)
#: Local work measured in milliseconds to seconds (signing, linting, issuance steps).
LOCAL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Ages of OCSP responses when served: the refresh interval is 48 h, the validity 96 h.
AGE_BUCKETS: Final = tuple(float(h * 3600) for h in (1, 6, 12, 24, 36, 48, 60, 72, 84, 96))
#: How often a scrape may cause the database gauges to be read again.
REFRESH_SECONDS: Final = 10.0
REFRESH_TIMEOUT_SECONDS: Final = 5.0

# --------------------------------------------------------------------------- front end
RESPONSE_TIME: Final = Histogram(
    "response_time",
    "Time taken to respond to an ACME request, by endpoint (route template), method and "
    "HTTP status code; its _count is the request count.",
    ["endpoint", "method", "code"],
    registry=REGISTRY,
)
IN_FLIGHT_REQUESTS: Final = Gauge(
    "in_flight_requests",
    "ACME requests being handled now, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
ACME_PROBLEMS: Final = Counter(
    "acme_problems",
    "RFC 8555 problem documents sent, by endpoint and problem type (urn:...:error:<type>).",
    ["endpoint", "type"],
    registry=REGISTRY,
)
NONCE_REDEEMS: Final = Counter(
    "nonce_redeems",
    "Replay-Nonce checks by result (valid, invalid) and error (malformed, expired, used, "
    "test_knob; empty when valid).",
    ["result", "error"],
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- validation
VALIDATION_LATENCY: Final = Histogram(
    "validation_latency",
    "Validations (operation dcv) and CAA rechecks (operation caa): latency by perspective "
    "('all' is the CA's decision, corroboration included; a remote VA reports its own id), "
    "challenge type, problem type and result (pass, fail).",
    ["operation", "perspective", "challenge_type", "problem_type", "result"],
    buckets=INTERNET_FACING_BUCKETS,
    registry=REGISTRY,
)
MPIC_PERSPECTIVE_RESULTS: Final = Counter(
    "mpic_perspective_results",
    "Each remote perspective's answer to a corroboration (BR 3.2.2.9): corroborated, "
    "not_corroborated (disagreed, failed, unreachable) or not_awaited (decided without it).",
    ["operation", "perspective", "result"],
    registry=REGISTRY,
)
MPIC_QUORUM_RESULTS: Final = Counter(
    "mpic_quorum_results",
    "Multi-perspective quorum decisions (BR 3.2.2.9) by operation and result (pass, fail).",
    ["operation", "result"],
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- issuance
ISSUANCE_QUEUE_DEPTH: Final = Gauge(
    "issuance_queue_depth",
    "Issuance jobs not finished, by status (queued, running), read from the database.",
    ["status"],
    registry=REGISTRY,
)
ISSUANCE_QUEUE_OLDEST_AGE: Final = Gauge(
    "issuance_queue_oldest_age_seconds",
    "Age of the oldest unfinished issuance job (0 when the queue is empty).",
    registry=REGISTRY,
)
ISSUANCE_STEP_LATENCY: Final = Histogram(
    "issuance_step_latency_seconds",
    "Time of each signing-worker step (queued, prepared, precert_signed, scts_collected, "
    "issued) by result: advanced (to the next step or done), stopped (refused, deferred, "
    "taken over) or error (left for a retry).",
    ["step", "result"],
    buckets=LOCAL_BUCKETS,
    registry=REGISTRY,
)
CERTIFICATES: Final = Counter(
    "certificates", "Certificates issued (stored), by issuer.", ["issuer"], registry=REGISTRY
)

# --------------------------------------------------------------------------- signing
SIGNATURES: Final = Counter(
    "signatures",
    "Signatures made by the CA keys, by backend (pkcs11, software) and key (label or file).",
    ["backend", "key"],
    registry=REGISTRY,
)
SIGNATURE_ERRORS: Final = Counter(
    "signature_errors",
    "Signing calls that failed, by backend, key and error type (exception class).",
    ["backend", "key", "type"],
    registry=REGISTRY,
)
SIGNATURE_LATENCY: Final = Histogram(
    "signature_latency_seconds",
    "Time of one signing call, waiting for a session included, by backend and key.",
    ["backend", "key"],
    buckets=LOCAL_BUCKETS,
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- CT, linting
CT_SUBMISSION_TIME: Final = Histogram(
    "ct_submission_time_seconds",
    "Time taken to submit to a CT log, by log, type (precert, final) and status (success, "
    "timeout, unavailable, rejected, invalid_sct, error, canceled).",
    ["log", "type", "status"],
    buckets=INTERNET_FACING_BUCKETS,
    registry=REGISTRY,
)
LINT_FINDINGS: Final = Counter(
    "lint_findings",
    "pkilint findings by lint kind (DV-PRE-CERTIFICATE, DV-FINAL-CERTIFICATE, CRL) and "
    "severity (FATAL, ERROR, WARNING, NOTICE, INFO); FATAL and ERROR stop issuance.",
    ["kind", "severity"],
    registry=REGISTRY,
)
LINT_LATENCY: Final = Histogram(
    "lint_latency_seconds",
    "Time of one pkilint run, by lint kind.",
    ["kind"],
    buckets=LOCAL_BUCKETS,
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- CRL and OCSP
CRL_UPDATER_GENERATED: Final = Counter(
    "crl_updater_generated",
    "CRL publications by issuer and result (success, failed).",
    ["issuer", "result"],
    registry=REGISTRY,
)
CRL_AGE: Final = Gauge(
    "crl_age_seconds",
    "Age (now - thisUpdate) of the newest published CRL, per issuer, read from the database; "
    "+Inf for an issuer the worker publishes for that has no CRL yet.",
    ["issuer"],
    registry=REGISTRY,
)
CRL_NEXT_UPDATE: Final = Gauge(
    "crl_next_update_seconds",
    "Seconds until the newest CRL's nextUpdate, per issuer (negative: lapsed).",
    ["issuer"],
    registry=REGISTRY,
)
OCSP_RESPONSES: Final = Counter(
    "ocsp_responses",
    "OCSP requests answered by the status listener, by result (good, revoked, unauthorized, "
    "malformed).",
    ["result"],
    registry=REGISTRY,
)
OCSP_RESPONSE_AGE: Final = Histogram(
    "ocsp_response_age_seconds",
    "Age (now - thisUpdate) of each signed OCSP response served, by issuer.",
    ["issuer"],
    buckets=AGE_BUCKETS,
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- rate limits
RATELIMITS_SPEND_LATENCY: Final = Histogram(
    "ratelimits_spend_latency",
    "Rate-limit checks by limit and decision (allowed, denied); the _count of "
    "decision=denied is the refusals per limit.",
    ["limit", "decision"],
    buckets=(0.0005, 0.0015, 0.0045, 0.0135, 0.0405, 0.1215, 0.3645, 1.0935),
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- this module
METRICS_REFRESH_ERRORS: Final = Counter(
    "metrics_refresh_errors",
    "Database gauge refreshes that failed or timed out (their gauges keep the values read "
    "before), by refresher.",
    ["refresher"],
    registry=REGISTRY,
)


# =========================================================================== recording


class _Problem(Protocol):
    @property
    def short_type(self) -> str: ...


class _Record(Protocol):
    """What the validation metrics read of a ``va.records.ValidationRecord``."""

    @property
    def perspective(self) -> str: ...

    @property
    def error(self) -> str | None: ...

    @property
    def corroborated(self) -> bool | None: ...

    @property
    def quorum(self) -> str | None: ...

    @property
    def result(self) -> str | None: ...


class CheckOutcome(Protocol):
    """What the validation metrics read of a ``va.records.CheckResult`` (this module imports
    no room, so any room may import it)."""

    @property
    def ok(self) -> bool: ...

    @property
    def problem(self) -> _Problem | None: ...

    @property
    def records(self) -> Sequence[_Record]: ...


def observe_request(
    endpoint: str, method: str, code: int, seconds: float, problem_type: str | None
) -> None:
    """One ACME request answered (``problem_type``: the short type of a problem sent)."""
    RESPONSE_TIME.labels(endpoint, method, str(code)).observe(seconds)
    if problem_type:
        ACME_PROBLEMS.labels(endpoint, problem_type).inc()


def observe_nonce(error: str | None) -> None:
    """A nonce checked: ``error`` None when it was good, else why it was refused."""
    if error is None:
        NONCE_REDEEMS.labels("valid", "").inc()
    else:
        NONCE_REDEEMS.labels("invalid", error).inc()


def observe_validation(
    operation: str,
    perspective: str,
    challenge_type: str,
    result: CheckOutcome | None,
    seconds: float,
) -> None:
    """One validation or CAA recheck finished (``result`` None: it crashed).  For the CA's
    decision (``perspective`` 'all') each remote's summary and the quorum record of the
    result's records are counted as well."""
    if result is None:
        ok, problem = False, "serverInternal"
    else:
        ok = result.ok
        problem = result.problem.short_type if result.problem is not None else ""
    VALIDATION_LATENCY.labels(
        operation, perspective, challenge_type, problem, "pass" if ok else "fail"
    ).observe(seconds)
    if result is None or perspective != "all":
        return
    for record in result.records:
        if record.quorum is not None:
            MPIC_QUORUM_RESULTS.labels(operation, record.result or "fail").inc()
        elif record.corroborated is not None:
            MPIC_PERSPECTIVE_RESULTS.labels(
                operation,
                record.perspective,
                _perspective_result(record.corroborated, record.error),
            ).inc()


def _perspective_result(corroborated: bool, error: str | None) -> str:
    if corroborated:
        return "corroborated"
    if error is not None and error.startswith("not awaited"):
        return "not_awaited"
    return "not_corroborated"


def observe_issuance_step(step: str, result: str, seconds: float) -> None:
    ISSUANCE_STEP_LATENCY.labels(step, result).observe(seconds)


def certificate_issued(issuer: str) -> None:
    CERTIFICATES.labels(issuer).inc()


def observe_signature(backend: str, key: str, seconds: float, error: BaseException | None) -> None:
    """One signing call; ``error`` the exception it raised, if any."""
    SIGNATURE_LATENCY.labels(backend, key).observe(seconds)
    if error is None:
        SIGNATURES.labels(backend, key).inc()
    else:
        SIGNATURE_ERRORS.labels(backend, key, type(error).__name__).inc()


async def measured_signature(backend: str, key: str, signing: Awaitable[bytes]) -> bytes:
    """Await ``signing`` (one signer call), recording its latency and success or error."""
    started = time.perf_counter()
    try:
        signature = await signing
    except Exception as exc:
        observe_signature(backend, key, time.perf_counter() - started, exc)
        raise
    observe_signature(backend, key, time.perf_counter() - started, None)
    return signature


def observe_ct_submission(log_name: str, kind: str, status: str, seconds: float) -> None:
    CT_SUBMISSION_TIME.labels(log_name, kind, status).observe(seconds)


def observe_lint(kind: str, severities: Iterable[str], seconds: float) -> None:
    """One pkilint run of ``kind`` and the severity name of each of its findings."""
    LINT_LATENCY.labels(kind).observe(seconds)
    for severity in severities:
        LINT_FINDINGS.labels(kind, severity).inc()


def crl_published(issuer: str, ok: bool) -> None:
    CRL_UPDATER_GENERATED.labels(issuer, "success" if ok else "failed").inc()


def observe_ocsp(result: str, issuer: str | None = None, age_seconds: float | None = None) -> None:
    """One OCSP answer; a signed one with its issuer and age."""
    OCSP_RESPONSES.labels(result).inc()
    if issuer is not None and age_seconds is not None:
        OCSP_RESPONSE_AGE.labels(issuer).observe(age_seconds)


def observe_rate_limit(limit: str, allowed: bool, seconds: float) -> None:
    """One rate-limit check (for whoever enforces limits): a refusal counts as denied."""
    RATELIMITS_SPEND_LATENCY.labels(limit, "allowed" if allowed else "denied").observe(seconds)


# =========================================================================== database gauges


class PoolStats(Protocol):
    """What the pool gauges read (asyncpg's Pool has these)."""

    def get_size(self) -> int: ...

    def get_idle_size(self) -> int: ...

    def get_max_size(self) -> int: ...


class _PoolCollector(Collector):
    """Boulder's ``db_*`` gauges, read from the live pools at collection time."""

    def __init__(self) -> None:
        self.pools: list[tuple[str, PoolStats]] = []

    def collect(self) -> Iterator[Metric]:
        families = {
            "db_open_connections": GaugeMetricFamily(
                "db_open_connections",
                "Established database connections (in use and idle), by pool.",
                labels=["pool"],
            ),
            "db_inuse": GaugeMetricFamily(
                "db_inuse", "Database connections in use, by pool.", labels=["pool"]
            ),
            "db_idle": GaugeMetricFamily(
                "db_idle", "Idle database connections, by pool.", labels=["pool"]
            ),
            "db_max_open_connections": GaugeMetricFamily(
                "db_max_open_connections", "Pool size limit, by pool.", labels=["pool"]
            ),
        }
        totals: dict[str, list[int]] = {}
        for name, pool in list(self.pools):
            size, idle, most = pool.get_size(), pool.get_idle_size(), pool.get_max_size()
            total = totals.setdefault(name, [0, 0, 0])
            total[0] += size
            total[1] += idle
            total[2] += most
        for name, (size, idle, most) in sorted(totals.items()):
            families["db_open_connections"].add_metric([name], size)
            families["db_inuse"].add_metric([name], size - idle)
            families["db_idle"].add_metric([name], idle)
            families["db_max_open_connections"].add_metric([name], most)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        return self.collect()


_POOLS: Final = _PoolCollector()
REGISTRY.register(_POOLS)


def register_pool(name: str, pool: PoolStats) -> Callable[[], None]:
    """Report ``pool`` as ``pool=name`` until the returned function is called (at close)."""
    entry = (name, pool)
    _POOLS.pools.append(entry)

    def unregister() -> None:
        if entry in _POOLS.pools:
            _POOLS.pools.remove(entry)

    return unregister


Refresher = Callable[[], Awaitable[None]]
_REFRESHERS: dict[str, Refresher] = {}
_last_refresh = float("-inf")


def add_refresher(name: str, refresher: Refresher) -> Callable[[], None]:
    """Run ``refresher`` (it sets gauges from the database) before scrapes, until the returned
    function is called.  One per ``name`` per process: a later one replaces an earlier (serve
    with its in-process worker reads the queue once)."""
    _REFRESHERS[name] = refresher

    def remove() -> None:
        if _REFRESHERS.get(name) is refresher:
            del _REFRESHERS[name]

    return remove


async def refresh(*, max_age: float = REFRESH_SECONDS) -> None:
    """Bring the database gauges up to date unless they were read less than ``max_age``
    seconds ago; a refresher that fails or times out is logged and counted, never raised."""
    global _last_refresh  # noqa: PLW0603 - the process's one refresh clock, beside its registry
    now = time.monotonic()
    if now - _last_refresh < max_age:
        return
    _last_refresh = now  # a scrape arriving meanwhile serves what is there
    for name, refresher in list(_REFRESHERS.items()):
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                await refresher()
        except Exception as exc:
            METRICS_REFRESH_ERRORS.labels(name).inc()
            log.warning("metrics.refresh_failed", refresher=name, error=repr(exc))


def set_issuance_queue(queued: int, running: int, oldest_age_seconds: float) -> None:
    ISSUANCE_QUEUE_DEPTH.labels("queued").set(queued)
    ISSUANCE_QUEUE_DEPTH.labels("running").set(running)
    ISSUANCE_QUEUE_OLDEST_AGE.set(oldest_age_seconds)


def set_crl_times(times: Iterable[tuple[str, float, float]], expected: Iterable[str] = ()) -> None:
    """(issuer, age, seconds until nextUpdate) of each issuer's newest CRL.

    An ``expected`` issuer (one this process publishes for) with no CRL at all gets an age of
    +Inf and no nextUpdate: a CRL never published is older than any bound, so the "CRL too
    old" alert fires for it after its ``for`` delay, across restarts, as for a stale one."""
    CRL_AGE.clear()
    CRL_NEXT_UPDATE.clear()
    seen: set[str] = set()
    for issuer, age, until_next in times:
        seen.add(issuer)
        CRL_AGE.labels(issuer).set(age)
        CRL_NEXT_UPDATE.labels(issuer).set(until_next)
    for issuer in expected:
        if issuer not in seen:
            CRL_AGE.labels(issuer).set(math.inf)
