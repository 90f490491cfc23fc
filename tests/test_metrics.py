"""The metrics of acme_ca.metrics recorded by the real parts (docs/operations.md, "Metrics
and alerts"): PKCS#11 signatures and signing errors on a SoftHSM2 key, request latency
labelled by route template whatever the path, and the database gauges read from a queue and
a CRL in PostgreSQL.  The whole processes are scraped in integration/test_metrics.py."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from acme_ca import metrics
from acme_ca.ca.pkcs11_signer import Pkcs11Signer, generate_pkcs11_key
from acme_ca.ca.signer import SignerError
from acme_ca.clock import FixedClock
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.storage import open_storage
from acme_ca.main.metrics import report_database
from tests.fixtures import CaFactory
from tests.support.softhsm import shared_token, softhsm_available
from tests.support.worker import build_csr, insert_ready_order

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def sample(name: str, **labels: str) -> float:
    """The current value of one series (0 when it has not been created yet)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.skipif(not softhsm_available(), reason="SoftHSM2 is not installed")
async def test_pkcs11_signatures_latency_and_errors_are_counted(tmp_path: Path) -> None:
    token = shared_token(tmp_path / "softhsm")
    label = f"test-metrics-{uuid.uuid4().hex[:8]}"
    await generate_pkcs11_key(token.module, token.label, token.pin, label, "ec-p256")
    labels = {"backend": "pkcs11", "key": label}
    signer = await Pkcs11Signer.open(token.module, token.label, label, token.pin)
    try:
        # Opening proves the key pair with one signature; then two more.
        assert sample("signatures_total", **labels) == 1
        await asyncio.gather(signer.sign(b"one", "sha256"), signer.sign(b"two", "sha256"))
        assert sample("signatures_total", **labels) == 3
        assert sample("signature_latency_seconds_count", **labels) == 3
        assert sample("signature_latency_seconds_sum", **labels) > 0
        with pytest.raises(ValueError, match="must sign with sha256"):
            await signer.sign(b"three", "sha384")
        assert sample("signature_errors_total", type="ValueError", **labels) == 1
    finally:
        await signer.aclose()
    with pytest.raises(SignerError):
        await signer.sign(b"closed", "sha256")
    assert sample("signature_errors_total", type="SignerError", **labels) == 1
    assert sample("signatures_total", **labels) == 3
    assert sample("signature_latency_seconds_count", **labels) == 5


async def test_request_metrics_label_the_route_template_never_the_path(
    ca_factory: CaFactory,
) -> None:
    ca = await ca_factory.start()
    order = "/acme/order/{order_id}"
    before = sample("response_time_count", endpoint=order, method="POST", code="400")
    unmatched = sample("response_time_count", endpoint="unmatched", method="GET", code="404")
    async with aiohttp.ClientSession() as http:
        for order_id in (7, 8, 9):  # not JWS: malformed, answered on the order route
            async with http.post(f"{ca.base_url}/acme/order/{order_id}", data=b"{}") as r:
                assert r.status in (400, 415)
        async with http.get(f"{ca.base_url}/no/such/path/12345") as r:
            assert r.status == 404
        async with http.request("TRACE", f"{ca.base_url}/directory") as r:
            assert r.status == 405
    codes = {
        s.labels["code"]
        for family in metrics.REGISTRY.collect()
        if family.name == "response_time"
        for s in family.samples
        if s.labels.get("endpoint") == order and s.name == "response_time_count"
    }
    posted = sum(
        sample("response_time_count", endpoint=order, method="POST", code=code) for code in codes
    )
    assert posted - before >= 3
    assert sample("response_time_count", endpoint="unmatched", method="GET", code="404") == (
        unmatched + 1
    )
    assert sample("response_time_count", endpoint="unmatched", method="other", code="405") >= 1
    endpoints = {
        s.labels["endpoint"]
        for family in metrics.REGISTRY.collect()
        if family.name in ("response_time", "acme_problems", "in_flight_requests")
        for s in family.samples
    }
    assert not [e for e in endpoints if any(c.isdigit() for c in e)], endpoints
    assert sample("acme_problems_total", endpoint="unmatched", type="malformed") >= 1


async def test_database_gauges_read_the_issuance_queue_and_the_newest_crls(
    dsn: str, pool: asyncpg.Pool
) -> None:
    """A job queued ten minutes ago and two CRLs of one issuer: the gauges show one queued
    job aged 600 s and the newer CRL's age and time to nextUpdate."""
    account_id, order_id = await insert_ready_order(pool, ["metrics.example.com"], now=NOW)
    queued = await IssuanceRepository(pool).enqueue(
        order_id=order_id,
        account_id=account_id,
        csr_der=build_csr(["metrics.example.com"]),
        names=["metrics.example.com"],
        issuer="dv-ecc",
        now=NOW - timedelta(minutes=10),
    )
    assert queued is not None
    for number, this_update in ((1, NOW - timedelta(hours=30)), (2, NOW - timedelta(hours=6))):
        await pool.execute(
            """INSERT INTO crls (issuer, number, this_update, next_update, der, entries,
                                 entries_digest, created_at)
               VALUES ('dv-ecc', $1, $2::timestamptz, $2::timestamptz + interval '96 hours',
                       '\\x30', 0, '\\x00', $2::timestamptz)""",
            number,
            this_update,
        )
    storage = await open_storage(dsn, max_size=2)
    stop = report_database(storage, "test-gauges", FixedClock(NOW))
    try:
        await metrics.refresh(max_age=0)
        assert sample("issuance_queue_depth", status="queued") == 1
        assert sample("issuance_queue_depth", status="running") == 0
        assert sample("issuance_queue_oldest_age_seconds") == 600
        assert sample("crl_age_seconds", issuer="dv-ecc") == 6 * 3600
        assert sample("crl_next_update_seconds", issuer="dv-ecc") == 90 * 3600
        assert sample("db_open_connections", pool="test-gauges") >= 1
        assert sample("db_max_open_connections", pool="test-gauges") == 2
    finally:
        stop()
        await storage.close()
    assert metrics.REGISTRY.get_sample_value("db_open_connections", {"pool": "test-gauges"}) is None


async def test_crl_age_of_an_issuer_never_published_is_infinite_from_the_start(
    dsn: str, pool: asyncpg.Pool
) -> None:
    """The worker names every CRL it publishes: one with no CRL yet reports +Inf (so
    AcmeCaCrlTooOld fires for it, deploy/prometheus) and no nextUpdate; one published reports
    its age; a process that publishes nothing reports only what the database holds."""
    await pool.execute(
        """INSERT INTO crls (issuer, number, this_update, next_update, der, entries,
                             entries_digest, created_at)
           VALUES ('dv-ecc', 1, $1::timestamptz, $1::timestamptz + interval '96 hours',
                   '\\x30', 0, '\\x00', $1::timestamptz)""",
        NOW - timedelta(hours=2),
    )
    storage = await open_storage(dsn, max_size=2)
    stop = report_database(storage, "test-never", FixedClock(NOW), ["dv-ecc", "ov-rsa"])
    try:
        await metrics.refresh(max_age=0)
        assert sample("crl_age_seconds", issuer="dv-ecc") == 2 * 3600
        assert sample("crl_age_seconds", issuer="ov-rsa") == math.inf
        labels = {"issuer": "ov-rsa"}
        assert metrics.REGISTRY.get_sample_value("crl_next_update_seconds", labels) is None
    finally:
        stop()
    stop = report_database(storage, "test-never", FixedClock(NOW))
    try:
        await metrics.refresh(max_age=0)
        assert metrics.REGISTRY.get_sample_value("crl_age_seconds", {"issuer": "ov-rsa"}) is None
    finally:
        stop()
        await storage.close()
