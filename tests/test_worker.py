"""The signing worker in-process: real PostgreSQL, a real development hierarchy with software
keys (``init_hierarchy``), the real pre-issuance linter, real in-process CT test logs (CT is
always on: every job goes queued → prepared → precert_signed → scts_collected → issued).

Every job is a real one: an account and a ready order are inserted with SQL, then
``IssuanceRepository.enqueue`` queues it with a CSR built by cryptography for the order's names,
exactly as finalize does.  Crashes are simulated at each recorded step (a claim whose lease
lapsed, a prepared job whose signer died, a stored certificate whose job still says running),
and the next worker must finish the job with the same serial and TBS and never store a second
certificate.  ``integration/test_worker_crash.py`` does the same with SIGKILLed processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from acme_ca.ca.ct.loglist import StaticLogList, parse_log_list
from acme_ca.ca.ct.sct import remove_poison
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.issuers import IssuerSet, load_issuers
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import IssuerSettings
from acme_ca.ca.worker import DEFAULT_LEASE, SigningWorker
from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.db.audit_chain import verify_chain
from acme_ca.db.issuance import NOTIFY_CHANNEL, IssuanceRepository
from acme_ca.db.issuance_jobs import (
    IssuanceJob,
    IssuedCertificate,
    PrecertSignedJob,
    PreparedJob,
    SctsCollectedJob,
    job_from_row,
)
from acme_ca.db.migrate import apply_schema
from acme_ca.db.pool import create_pool
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.testsrv.ct_log_set import TestCtLogs
from acme_ca.testsrv.ct_logs_runner import accepted_roots
from tests.support.accounts import bare_account
from tests.support.migrations import create_schema_before
from tests.support.worker import (
    FAST,
    INTERNAL_STATUS_URL,
    build_csr,
    ct_log_specs,
    expire_lease,
    insert_ready_order,
    job_of,
    make_pki_config,
    order_of,
    signing_worker,
    wrap_issuers,
)

SERVER_INTERNAL = "urn:ietf:params:acme:error:serverInternal"


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class QueuedOrder:
    order_id: int
    account_id: int
    names: tuple[str, ...]
    csr_der: bytes
    issuer: str


async def queue_order(
    pool: asyncpg.Pool, config: Config, names: Sequence[str], key_type: str = "ec"
) -> QueuedOrder:
    """Insert a ready order and enqueue its issuance job (order → processing, job queued)."""
    account_id, order_id = await insert_ready_order(pool, names)
    csr_der = build_csr(names, key_type)
    issuer = config.ecdsa_issuer if key_type == "ec" else config.rsa_issuer
    queued = await IssuanceRepository(pool).enqueue(
        order_id=order_id,
        account_id=account_id,
        csr_der=csr_der,
        names=list(names),
        issuer=issuer,
        now=datetime.now(UTC),
    )
    assert queued, "enqueue refused a ready order"
    return QueuedOrder(order_id, account_id, tuple(names), csr_der, issuer)


def names_for(i: int) -> tuple[str, ...]:
    return (f"www.worker-{i}.example.com", f"worker-{i}.example.com")


# --------------------------------------------------------------------------- state


async def certificates_of(pool: asyncpg.Pool, order_id: int) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM certificates WHERE order_id = $1", order_id))


async def assert_issued(
    pool: asyncpg.Pool, issuers: IssuerSet, queued: QueuedOrder
) -> x509.Certificate:
    """Order valid, job done, exactly one certificate: the recorded serial and TBS, signed by
    the job's issuer, for the CSR's key and the order's names, with the issuer's chains."""
    order = await order_of(pool, queued.order_id)
    job = await job_of(pool, queued.order_id)
    certs = await certificates_of(pool, queued.order_id)
    assert order["status"] == "valid", order
    assert order["error"] is None
    assert job["status"] == "done", job
    assert job["locked_by"] is None and job["locked_until"] is None
    assert len(certs) == 1, certs
    row = certs[0]
    cert = x509.load_der_x509_certificate(bytes(row["der"]))
    issuer = issuers.by_name(queued.issuer)

    assert row["serial"] == job["serial"] == format(cert.serial_number, "x")
    assert cert.serial_number > 0 and cert.serial_number.bit_length() >= 64  # BR-PROF-1
    assert cert.tbs_certificate_bytes == bytes(job["tbs_der"])
    assert job["step"] == "issued"
    # The certificate is its precertificate with the SCT list in the poison's place.
    precert = x509.load_der_x509_certificate(bytes(job["precert_der"]))
    assert precert.tbs_certificate_bytes == bytes(job["precert_tbs_der"])
    assert cert.tbs_precertificate_bytes == remove_poison(precert.tbs_certificate_bytes)
    assert len(row["scts"]) >= 2
    assert row["issuer"] == queued.issuer == job["issuer"]
    assert row["account_id"] == queued.account_id
    assert row["not_before"] == job["not_before"] == cert.not_valid_before_utc
    assert row["not_after"] == job["not_after"] == cert.not_valid_after_utc

    cert.verify_directly_issued_by(issuer.certificate)
    assert cert.issuer == issuer.certificate.subject
    assert row["chain_pem"] == issuer.pem_chain().decode()
    assert x509.load_pem_x509_certificates(row["chain_pem"].encode())[0] == issuer.certificate
    assert row["alternate_chains"] == [
        issuer.pem_chain(i).decode() for i in range(len(issuer.alternate_chains))
    ]
    assert len(row["alternate_chains"]) >= 1

    csr = x509.load_der_x509_csr(queued.csr_der)
    assert cert.public_key() == csr.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert tuple(san.get_values_for_type(x509.DNSName)) == queued.names
    # The linted copy is the same TBS under a throwaway signature.
    linted = x509.load_der_x509_certificate(bytes(job["lint_der"]))
    assert linted.tbs_certificate_bytes == cert.tbs_certificate_bytes
    return cert


async def prepared_events(pool: asyncpg.Pool, order_id: int) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT * FROM audit_events WHERE order_id = $1 AND event = 'issuance.prepared' "
            "ORDER BY id",
            order_id,
        )
    )


# --------------------------------------------------------------------------- signers


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A development hierarchy whose status URLs lint clean."""
    return make_pki_config(tmp_path_factory.mktemp("worker-pki"))


@pytest.fixture(scope="module")
def internal_pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A hierarchy whose CRL/AIA URLs name an internal address: every certificate fails lint."""
    return make_pki_config(
        tmp_path_factory.mktemp("worker-pki-internal"), status_base_url=INTERNAL_STATUS_URL
    )


@pytest.fixture
async def ct(pki_config: Config) -> AsyncIterator[CertificateTransparency]:
    """Certificate Transparency against real in-process test logs that accept the
    hierarchy's roots."""
    async with TestCtLogs(ct_log_specs(), accepted_roots(pki_config)) as logs:
        transparency = CertificateTransparency(
            StaticLogList(parse_log_list(logs.log_list())), SystemClock(), FAST
        )
        try:
            yield transparency
        finally:
            await transparency.aclose()


@pytest.fixture
def make_worker(
    pki_config: Config, linter: CertificateLinter, ct: CertificateTransparency
) -> Callable[..., SigningWorker]:
    def make(
        pool: asyncpg.Pool,
        issuers: IssuerSet,
        worker_id: str,
        *,
        poll_seconds: float = 30.0,
        lease: timedelta = DEFAULT_LEASE,
        config: Config = pki_config,
        concurrency: int = 1,
    ) -> SigningWorker:
        return signing_worker(
            pool,
            issuers,
            linter,
            ct,
            config,
            poll_seconds=poll_seconds,
            lease=lease,
            worker_id=worker_id,
            concurrency=concurrency,
        )

    return make


@contextlib.asynccontextmanager
async def running(worker: SigningWorker) -> AsyncIterator[asyncio.Task[None]]:
    """``worker.run`` in a task, stopped (and its errors raised) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name=f"worker-{worker.worker_id}")
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def listeners(pool: asyncpg.Pool) -> list[int]:
    """Backend pids of the connections LISTENing in this database (idle after the LISTEN)."""
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN %'"
    )
    return [r["pid"] for r in rows]


async def wait_for(
    predicate: Callable[[], Coroutine[Any, Any, bool]], timeout: float, what: str
) -> float:
    """Poll ``predicate`` every 20 ms; return the seconds it took, fail after ``timeout``."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def job_done(pool: asyncpg.Pool, order_id: int) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        status: str = (await job_of(pool, order_id))["status"]
        return status == "done"

    return check


# --------------------------------------------------------------------------- tests


async def test_queued_jobs_become_certificates(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    ecdsa = await queue_order(pool, pki_config, names_for(1), "ec")
    rsa_order = await queue_order(pool, pki_config, names_for(2), "rsa")
    assert (await order_of(pool, ecdsa.order_id))["status"] == "processing"
    assert (await job_of(pool, ecdsa.order_id))["status"] == "queued"
    worker = make_worker(pool, issuers, "w1")

    assert await worker.run_once()
    assert await worker.run_once()
    assert not await worker.run_once()  # the queue is empty

    ecc_cert = await assert_issued(pool, issuers, ecdsa)
    rsa_cert = await assert_issued(pool, issuers, rsa_order)
    assert ecdsa.issuer == "dv-ecc" and rsa_order.issuer == "dv-rsa"
    assert isinstance(ecc_cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
    for queued in (ecdsa, rsa_order):
        job = await job_of(pool, queued.order_id)
        assert job["attempts"] == 1
        events = [
            r["event"]
            for r in await pool.fetch(
                "SELECT event FROM audit_events WHERE order_id = $1 ORDER BY id",
                queued.order_id,
            )
        ]
        assert events == [
            "order.processing",
            "issuance.prepared",
            "precertificate.issued",
            "ct.scts_collected",
            "certificate.issued",
        ]


async def test_cp_5_4_1_steps_recorded_in_one_statement_keep_their_audit_rows_and_chain(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """prepared, precert_signed, scts_collected and issued are each one statement (issue 20):
    the audit rows carry what they carried as separate INSERTs, and the hash chain verifies."""
    queued = await queue_order(pool, pki_config, names_for(1), "ec")
    assert await make_worker(pool, issuers, "w1").run_once()
    job = await job_of(pool, queued.order_id)
    rows = {
        r["event"]: r
        for r in await pool.fetch(
            "SELECT * FROM audit_events WHERE order_id = $1 ORDER BY id", queued.order_id
        )
    }
    prepared = rows["issuance.prepared"]
    assert prepared["actor"] == "worker:w1" and prepared["account_id"] == job["account_id"]
    lint = prepared["details"]["lint"]
    assert lint["profile"] == "DV-PRE-CERTIFICATE" and isinstance(lint["findings"], list)
    assert prepared["details"] == {
        "serial": job["serial"],
        "job_id": job["id"],
        "precertificate": True,
        "lint": lint,
    }
    assert rows["precertificate.issued"]["details"] == {
        "serial": job["serial"],
        "issuer": job["issuer"],
        "job_id": job["id"],
    }
    scts = rows["ct.scts_collected"]["details"]
    assert scts["serial"] == job["serial"] and len(scts["scts"]) == len(job["scts"]) >= 2
    assert all(set(s) == {"log", "operator", "timestamp"} for s in scts["scts"])
    precert = await pool.fetchrow("SELECT * FROM precertificates WHERE job_id = $1", job["id"])
    assert precert is not None and bytes(precert["der"]) == bytes(job["precert_der"])
    stored = await pool.fetchrow("SELECT * FROM certificates WHERE order_id = $1", job["order_id"])
    assert stored is not None
    issued = rows["certificate.issued"]
    assert issued["actor"] == "ca" and issued["account_id"] == job["account_id"]
    assert issued["details"] == {
        "serial": stored["serial"],
        "issuer": stored["issuer"],
        "not_after": stored["not_after"].isoformat(),
        "scts": scts["scts"],
    }
    assert job["status"] == "done" and job["step"] == "issued" and job["locked_by"] is None
    assert (await order_of(pool, queued.order_id))["status"] == "valid"
    # The same certificate stored again (a worker whose lease lapsed): nothing new.
    again = IssuedCertificate(
        serial=stored["serial"],
        issuer=stored["issuer"],
        der=bytes(stored["der"]),
        not_before=stored["not_before"],
        not_after=stored["not_after"],
        chain_pem=stored["chain_pem"],
        alternate_chains=list(stored["alternate_chains"]),
        scts=list(stored["scts"]),
    )
    claimed = job_from_row(
        await pool.fetchrow("SELECT * FROM issuance_jobs WHERE id = $1", job["id"])
    )
    audit_rows = await pool.fetchval("SELECT count(*) FROM audit_events")
    assert not await IssuanceRepository(pool).complete(claimed, again, datetime.now(UTC))
    assert await pool.fetchval("SELECT count(*) FROM audit_events") == audit_rows
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM certificates WHERE order_id = $1", job["order_id"]
        )
        == 1
    )
    report = await verify_chain(pool)
    assert report.ok, report.broken


async def test_finalize_in_one_statement_queues_the_job_notifies_and_audits_once(
    pool: asyncpg.Pool, pki_config: Config
) -> None:
    """IssuanceRepository.enqueue is one statement (issue 20): order -> processing, the job,
    the NOTIFY (at commit) and the audit row; a second finalize of the order does nothing."""
    heard: list[str] = []

    def hear(conn: object, pid: int, channel: str, payload: object) -> None:
        heard.append(channel)

    async with pool.acquire() as listener:
        await listener.add_listener(NOTIFY_CHANNEL, hear)
        account_id, order_id = await insert_ready_order(pool, names_for(1))
        jobs = IssuanceRepository(pool)
        order = await jobs.enqueue(
            order_id=order_id,
            account_id=account_id,
            csr_der=build_csr(names_for(1), "ec"),
            names=list(names_for(1)),
            issuer=pki_config.ecdsa_issuer,
            now=datetime.now(UTC),
        )
        assert order is not None and order.id == order_id and order.status == "processing"
        assert order.authz_ids and order.certificate_id is None
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert heard == [NOTIFY_CHANNEL]
        again = await jobs.enqueue(
            order_id=order_id,
            account_id=account_id,
            csr_der=b"other",
            names=["other.example.com"],
            issuer=pki_config.ecdsa_issuer,
            now=datetime.now(UTC),
        )
        assert again is None
        await listener.remove_listener(NOTIFY_CHANNEL, hear)
    job = await job_of(pool, order_id)
    assert job["status"] == "queued" and job["names"] == list(names_for(1))
    rows = await pool.fetch(
        "SELECT * FROM audit_events WHERE order_id = $1 AND event = 'order.processing'", order_id
    )
    assert len(rows) == 1
    assert rows[0]["actor"] == f"account:{account_id}" and rows[0]["account_id"] == account_id
    assert rows[0]["details"] == {"issuer": pki_config.ecdsa_issuer, "profile": "dv"}
    assert (await verify_chain(pool)).ok


async def test_step_of_a_job_another_worker_holds_records_nothing(
    pool: asyncpg.Pool, pki_config: Config
) -> None:
    """A worker that lost the job gets it back as the holder left it, with no audit row."""
    queued = await queue_order(pool, pki_config, names_for(1), "ec")
    jobs = IssuanceRepository(pool)
    now = datetime.now(UTC)
    claimed = await jobs.claim("holder", now=now, lease=DEFAULT_LEASE)
    assert claimed is not None
    audit_rows = await pool.fetchval("SELECT count(*) FROM audit_events")
    back = await jobs.record_prepared(
        claimed,
        "other",
        serial="7f" * 16,
        not_before=now,
        not_after=now + timedelta(days=1),
        precert_tbs_der=b"tbs",
        precert_lint_der=b"lint",
        now=now,
    )
    assert back.step == "queued" and back.locked_by == "holder"
    assert await pool.fetchval("SELECT count(*) FROM audit_events") == audit_rows
    assert (await job_of(pool, queued.order_id))["serial"] is None


async def test_lease_lapsed_before_prepare_is_taken_over(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """(a) A worker claimed the job and died before recording anything."""
    queued = await queue_order(pool, pki_config, names_for(1))
    jobs = IssuanceRepository(pool)
    claimed = await jobs.claim("dead-worker", now=datetime.now(UTC), lease=DEFAULT_LEASE)
    assert claimed is not None and claimed.order_id == queued.order_id
    assert claimed.status == "running" and claimed.step == "queued"

    worker = make_worker(pool, issuers, "w2")
    assert not await worker.run_once(), "a job under a live lease must not be taken"
    assert (await job_of(pool, queued.order_id))["locked_by"] == "dead-worker"

    await expire_lease(pool, queued.order_id)
    assert await worker.run_once()
    await assert_issued(pool, issuers, queued)
    assert (await job_of(pool, queued.order_id))["attempts"] == 2
    assert len(await prepared_events(pool, queued.order_id)) == 1


async def test_prepared_job_is_signed_with_the_recorded_serial_and_tbs(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """(b) Serial, validity, precertificate TBS and lint copy recorded (step prepared), then
    the worker died at the signer."""
    queued = await queue_order(pool, pki_config, names_for(1))
    dying, signers = wrap_issuers(issuers)
    signers[queued.issuer].crash = True
    first = make_worker(pool, dying, "dies-at-sign")
    assert await first.run_once()  # prepare recorded, then the signer raised

    recorded = await job_of(pool, queued.order_id)
    assert recorded["status"] == "running" and recorded["locked_by"] == "dies-at-sign"
    assert recorded["step"] == "prepared" and recorded["serial"] is not None
    assert recorded["precert_tbs_der"] is not None and recorded["precert_lint_der"] is not None
    assert recorded["not_before"] is not None and recorded["precert_der"] is None
    assert signers[queued.issuer].calls == 1
    assert await certificates_of(pool, queued.order_id) == []
    assert (await order_of(pool, queued.order_id))["status"] == "processing"

    second = make_worker(pool, issuers, "resumes")
    assert not await second.run_once(), "the dead worker's lease has not lapsed yet"
    await expire_lease(pool, queued.order_id)
    assert await second.run_once()

    cert = await assert_issued(pool, issuers, queued)
    assert cert.serial_number == int(recorded["serial"], 16)
    after = await job_of(pool, queued.order_id)
    precert = x509.load_der_x509_certificate(bytes(after["precert_der"]))
    assert precert.tbs_certificate_bytes == bytes(recorded["precert_tbs_der"])
    for column in ("serial", "precert_tbs_der", "precert_lint_der", "not_before", "not_after"):
        assert after[column] == recorded[column], column
    assert after["attempts"] == 2
    # Prepared once: the second worker resumed at the signing step.
    events = await prepared_events(pool, queued.order_id)
    assert [e["actor"] for e in events] == ["worker:dies-at-sign"]


async def test_stored_certificate_with_running_job_is_marked_done_without_a_second(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """(c) The certificate is stored but the job row still says running (lease lapsed)."""
    queued = await queue_order(pool, pki_config, names_for(1))
    worker = make_worker(pool, issuers, "w1")
    assert await worker.run_once()
    original = await assert_issued(pool, issuers, queued)
    stored = (await certificates_of(pool, queued.order_id))[0]
    await pool.execute(
        "UPDATE issuance_jobs SET status = 'running', locked_by = 'dead-worker', "
        "locked_until = now() - interval '1 second' WHERE order_id = $1",
        queued.order_id,
    )

    assert await make_worker(pool, issuers, "w2").run_once()
    assert await assert_issued(pool, issuers, queued) == original
    again = await certificates_of(pool, queued.order_id)
    assert [(r["id"], bytes(r["der"])) for r in again] == [(stored["id"], bytes(stored["der"]))]
    assert await pool.fetchval("SELECT count(*) FROM certificates") == 1
    issued_events = await pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE event = 'certificate.issued'"
    )
    assert issued_events == 1
    assert not await make_worker(pool, issuers, "w3").run_once()


async def test_worker_whose_lease_lapsed_while_signing_stores_no_second_certificate(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """(c, live) A slow signer outlives the lease: another worker finishes the job, then the
    slow one comes back with its signature and finds the certificate stored."""
    queued = await queue_order(pool, pki_config, names_for(1))
    slow, signers = wrap_issuers(issuers)
    signer = signers[queued.issuer]
    signer.gate = asyncio.Event()
    stalled = asyncio.create_task(make_worker(pool, slow, "slow").run_once())
    try:
        await asyncio.wait_for(signer.entered.wait(), timeout=10)
        recorded = await job_of(pool, queued.order_id)
        await expire_lease(pool, queued.order_id)
        assert await make_worker(pool, issuers, "fast").run_once()
        cert = await assert_issued(pool, issuers, queued)
        stored = bytes((await certificates_of(pool, queued.order_id))[0]["der"])
    finally:
        signer.gate.set()
    assert await asyncio.wait_for(stalled, timeout=10)

    assert cert.serial_number == int(recorded["serial"], 16)
    assert await assert_issued(pool, issuers, queued) == cert
    rows = await certificates_of(pool, queued.order_id)
    assert len(rows) == 1 and bytes(rows[0]["der"]) == stored
    assert (await job_of(pool, queued.order_id))["attempts"] == 2


async def test_lint_error_fails_the_order_and_signs_nothing(
    pool: asyncpg.Pool,
    internal_pki_config: Config,
    make_worker: Callable[..., SigningWorker],
) -> None:
    queued = await queue_order(pool, internal_pki_config, names_for(1))
    async with await load_issuers(IssuerSettings.from_config(internal_pki_config)) as loaded:
        counted, signers = wrap_issuers(loaded)
        worker = make_worker(pool, counted, "w1", config=internal_pki_config)
        assert await worker.run_once()
        assert not await worker.run_once(), "a failed job is not retried"
    assert all(s.calls == 0 for s in signers.values()), "nothing may be signed"

    order = await order_of(pool, queued.order_id)
    assert order["status"] == "invalid"
    assert order["error"]["type"] == SERVER_INTERNAL
    assert order["error"]["status"] == 500
    assert "lint" in order["error"]["detail"]

    job = await job_of(pool, queued.order_id)
    assert job["status"] == "failed"
    assert job["locked_by"] is None and job["locked_until"] is None
    assert job["serial"] is None and job["precert_tbs_der"] is None
    assert job["step"] == "queued" and job["precert_der"] is None
    assert job["error"]["reason"] == "pre-issuance lint"
    findings = job["error"]["findings"]
    assert findings and all(f.startswith(("ERROR ", "FATAL ")) for f in findings), findings
    assert any("internal" in f.lower() for f in findings), findings
    assert await pool.fetchval("SELECT count(*) FROM certificates") == 0
    failed = await pool.fetchrow(
        "SELECT * FROM audit_events WHERE order_id = $1 AND event = 'issuance.failed'",
        queued.order_id,
    )
    assert failed is not None and failed["details"]["findings"] == findings
    assert await prepared_events(pool, queued.order_id) == []


async def test_notify_wakes_a_waiting_worker(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    worker = make_worker(pool, issuers, "listener", poll_seconds=30.0)
    async with running(worker) as task:
        await wait_for(lambda: _has_listener(pool), 10, "the worker's LISTEN")
        await asyncio.sleep(0.2)  # let it drain the empty queue and settle into its wait
        start = time.monotonic()
        queued = await queue_order(pool, pki_config, names_for(1))
        # Done within 20 s while the next poll is 30 s away: the NOTIFY woke the worker
        # (the time is printed, not asserted: timings belong in benchmarks).
        await wait_for(job_done(pool, queued.order_id), 20, "the job (poll is 30s)")
        elapsed = time.monotonic() - start
        assert not task.done()
    print(f"notified worker issued in {elapsed:.3f}s (poll interval 30s)")
    await assert_issued(pool, issuers, queued)


class EnqueueDuringFirstEmptyClaim(IssuanceRepository):
    """Enqueues a job while the worker's first claim (which found nothing) is in flight, and
    holds that claim's answer until the NOTIFY has had time to reach the worker."""

    def __init__(self, pool: asyncpg.Pool, enqueue: Callable[[], Coroutine[Any, Any, Any]]):
        super().__init__(pool)
        self._enqueue: Callable[[], Coroutine[Any, Any, Any]] | None = enqueue
        self.queued: Any = None

    async def claim(self, worker_id: str, *, now: datetime, lease: timedelta) -> Any:
        job = await super().claim(worker_id, now=now, lease=lease)
        if job is None and self._enqueue is not None:
            enqueue, self._enqueue = self._enqueue, None
            self.queued = await enqueue()
            await asyncio.sleep(0.3)
        return job


async def test_notify_during_the_last_empty_claim_is_not_lost(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
) -> None:
    """The wake-up flag is cleared before the queue is drained, not after: a NOTIFY that
    lands while the claim that found the queue empty is in flight still wakes the worker."""
    jobs = EnqueueDuringFirstEmptyClaim(pool, lambda: queue_order(pool, pki_config, names_for(1)))
    worker = signing_worker(
        pool,
        issuers,
        linter,
        ct,
        pki_config,
        jobs=jobs,
        poll_seconds=30.0,
        worker_id="racy",
    )
    async with running(worker):
        start = time.monotonic()
        await wait_for(lambda: _queued(jobs), 10, "the job enqueued during the claim")
        await wait_for(job_done(pool, jobs.queued.order_id), 20, "the job (poll is 30s)")
        elapsed = time.monotonic() - start
    print(f"job enqueued during an empty claim issued after {elapsed:.3f}s")
    await assert_issued(pool, issuers, jobs.queued)


async def _queued(jobs: EnqueueDuringFirstEmptyClaim) -> bool:
    return jobs.queued is not None


class DeafOnceLost(IssuanceRepository):
    """The real repository, but a listener made after the first one (the worker LISTENs
    again once it finds its first connection lost) hears nothing: a job queued after the
    first listener is gone can only be found by polling, however soon the worker listens
    again."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.first: Any = None
        self.first_pid: int | None = None

    async def listen(self, callback: Any) -> Any:
        if self.first is not None:
            callback = _hear_nothing
        conn = await super().listen(callback)
        if self.first is None:
            self.first, self.first_pid = conn, conn.get_server_pid()
        return conn

    async def release_listener(self, conn: Any, callback: Any) -> None:
        await super().release_listener(conn, callback if conn is self.first else _hear_nothing)


def _hear_nothing(*_: object) -> None:
    """The callback of :class:`DeafOnceLost`'s later listeners."""


async def test_poll_finds_a_job_whose_notify_was_missed(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
) -> None:
    """The listener connection is gone (as after a network blip): the enqueue's NOTIFY
    reaches nobody, and the worker must still find the job by polling."""
    jobs = DeafOnceLost(pool)
    worker = signing_worker(
        pool,
        issuers,
        linter,
        ct,
        pki_config,
        jobs=jobs,
        poll_seconds=1.0,
        worker_id="poller",
    )
    async with running(worker) as task:
        await wait_for(lambda: _first_listen_done(jobs), 10, "the worker's LISTEN")
        pid = jobs.first_pid
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        # That backend gone, nothing it heard reaches the worker; its later LISTENs hear
        # nothing (DeafOnceLost), so only polling can find the job.
        await wait_for(lambda: _backend_gone(pool, pid), 20, "the listener to be gone")

        start = time.monotonic()
        queued = await queue_order(pool, pki_config, names_for(1))
        await wait_for(job_done(pool, queued.order_id), 20, "the polled job to be done")
        elapsed = time.monotonic() - start
        assert not task.done(), "losing the listener must not stop the worker"
    print(f"polling worker issued in {elapsed:.3f}s (poll interval 1s, no listener)")
    await assert_issued(pool, issuers, queued)


async def _first_listen_done(jobs: DeafOnceLost) -> bool:
    return jobs.first_pid is not None


async def _backend_gone(pool: asyncpg.Pool, pid: int | None) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


async def test_job_queued_before_the_worker_started_is_taken_at_start(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """Enqueued while no worker listened at all: the NOTIFY went nowhere."""
    queued = await queue_order(pool, pki_config, names_for(1))
    async with running(make_worker(pool, issuers, "late", poll_seconds=30.0)):
        await wait_for(job_done(pool, queued.order_id), 10, "the job to be done")
    await assert_issued(pool, issuers, queued)


async def _has_listener(pool: asyncpg.Pool) -> bool:
    return bool(await listeners(pool))


async def test_two_workers_issue_twenty_jobs_exactly_once(
    dsn: str,
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    worker_pools = [await create_pool(dsn, max_size=2) for _ in range(2)]
    try:
        workers = [
            make_worker(p, issuers, f"concurrent-{i}", poll_seconds=1.0)
            for i, p in enumerate(worker_pools)
        ]
        async with running(workers[0]), running(workers[1]):
            await wait_for(lambda: _listener_count(pool, 2), 10, "both workers' LISTEN")
            queued = [
                await queue_order(pool, pki_config, names_for(i), "rsa" if i % 4 == 0 else "ec")
                for i in range(20)
            ]

            async def all_done() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) = 20 FROM issuance_jobs WHERE status = 'done'"
                    )
                )

            await wait_for(all_done, 60, "all 20 jobs to be done")
    finally:
        for p in worker_pools:
            await p.close()

    certs = [await assert_issued(pool, issuers, q) for q in queued]
    assert len(certs) == 20
    assert len({c.serial_number for c in certs}) == 20
    assert await pool.fetchval("SELECT count(*) FROM certificates") == 20
    assert await pool.fetchval("SELECT count(DISTINCT serial) FROM certificates") == 20
    assert await pool.fetchval("SELECT count(DISTINCT order_id) FROM certificates") == 20
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM issuance_jobs WHERE status <> 'done' OR attempts <> 1"
        )
        == 0
    ), "every job is claimed exactly once"
    share = dict(
        await pool.fetch(
            "SELECT actor, count(*) FROM audit_events WHERE event = 'issuance.prepared' "
            "GROUP BY actor"
        )
    )
    print(f"jobs per worker: {share}")
    assert sum(share.values()) == 20


async def test_worker_carries_several_jobs_at_once(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """``worker_concurrency``: while one job waits for the HSM the next ones are claimed and
    reach the HSM too; a worker carrying one job at a time would stall at the first."""
    wrapped_issuers, signers = wrap_issuers(issuers)
    signer = signers[pki_config.ecdsa_issuer]
    signer.gate = asyncio.Event()
    worker = make_worker(pool, wrapped_issuers, "parallel", poll_seconds=30.0, concurrency=3)
    async with running(worker):
        queued = [await queue_order(pool, pki_config, names_for(i)) for i in range(3)]

        async def all_waiting_in_hsm() -> bool:
            return signer.calls == 3

        await wait_for(all_waiting_in_hsm, 20, "three jobs signing at once")
        assert [(await job_of(pool, q.order_id))["status"] for q in queued] == ["running"] * 3
        signer.gate.set()
        for q in queued:
            await wait_for(job_done(pool, q.order_id), 20, "the released jobs to be done")
    certs = [await assert_issued(pool, wrapped_issuers, q) for q in queued]
    assert len({c.serial_number for c in certs}) == 3


async def test_stopping_worker_finishes_the_jobs_in_flight(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    make_worker: Callable[..., SigningWorker],
) -> None:
    """SIGTERM while jobs are inside the HSM: the worker stops after they are stored, not
    half-way (a job left half-way would wait out its lease before another worker resumed)."""
    wrapped_issuers, signers = wrap_issuers(issuers)
    signer = signers[pki_config.ecdsa_issuer]
    signer.gate = asyncio.Event()
    worker = make_worker(pool, wrapped_issuers, "draining", poll_seconds=30.0, concurrency=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    queued = [await queue_order(pool, pki_config, names_for(i)) for i in range(2)]

    async def both_in_hsm() -> bool:
        return signer.calls == 2

    await wait_for(both_in_hsm, 20, "two jobs signing")
    stop.set()
    await asyncio.sleep(0.2)
    assert not task.done(), "the worker stopped with jobs in flight"
    signer.gate.set()
    await asyncio.wait_for(task, timeout=30)
    for q in queued:
        await assert_issued(pool, wrapped_issuers, q)


async def _listener_count(pool: asyncpg.Pool, count: int) -> bool:
    return len(await listeners(pool)) == count


# --------------------------------------------------------------------------- migration 005


async def test_migration_005_derives_each_jobs_step_from_its_recorded_columns(
    postgres: EmbeddedPostgres,
) -> None:
    """A database made by the schema before 005 (migrations 001 and 002 applied) holding a job
    at every point the worker could have left one: the migration gives each the step its
    columns show, a claimable job comes back as its step's typed view, a job prepared by a
    worker without CT is failed with its order (serverInternal, audited), and the constraint
    keeps a claimable job's step and columns in agreement from then on."""
    dsn = postgres.create_database(f"m_{os.urandom(8).hex()}")
    pool = await create_pool(dsn, max_size=2)
    conn = await pool.acquire()
    try:
        await create_schema_before(conn, 5)
        now = datetime.now(UTC)
        account = await bare_account(conn, now)
        der, later = b"\x30\x03\x02\x01\x01", now + timedelta(days=90)
        prepared = {
            "serial": "",
            "not_before": now,
            "not_after": later,
            "precert_tbs_der": der,
            "precert_lint_der": der,
        }
        signed = {**prepared, "precert_der": der, "ct_submitted_at": now}
        collected = {**signed, "scts": [{"log": "log A"}], "tbs_der": der, "lint_der": der}
        legacy = {
            "serial": "",
            "not_before": now,
            "not_after": later,
            "tbs_der": der,
            "lint_der": der,
        }
        cases: dict[str, tuple[str, dict[str, Any], str]] = {
            "queued": ("queued", {}, "queued"),
            "prepared": ("running", prepared, "prepared"),
            "precert_signed": ("running", signed, "precert_signed"),
            "scts_collected": ("queued", collected, "scts_collected"),  # CT-deferred later on
            "done": ("done", collected, "issued"),
            "failed_early": ("failed", {}, "queued"),
            "legacy_without_ct": ("running", legacy, "prepared"),
        }
        jobs: dict[str, tuple[int, int]] = {}
        for name, (status, columns, _) in cases.items():
            order = await conn.fetchval(
                "INSERT INTO orders (account_id, status, identifiers, expires_at, created_at, "
                "updated_at) VALUES ($1, 'processing', '[]', $2, $2, $2) RETURNING id",
                account,
                now + timedelta(days=7),
            )
            values = {**columns}
            if "serial" in values:
                values["serial"] = os.urandom(16).hex()
            if status == "running":  # its worker's lease has lapsed
                values["locked_by"], values["locked_until"] = "dead-worker", now
            names = ", ".join(values)
            params = ", ".join(f"${i}" for i in range(8, 8 + len(values)))
            job = await conn.fetchval(
                "INSERT INTO issuance_jobs (order_id, account_id, csr_der, names, status, "
                f"issuer, created_at, updated_at{', ' + names if values else ''}) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7, $7{', ' + params if values else ''}) "
                "RETURNING id",
                order,
                account,
                der,
                [f"{name.replace('_', '-')}.example.com"],
                status,
                "dv-ecc",
                now,
                *values.values(),
            )
            jobs[name] = (job, order)

        applied = await apply_schema(conn)
        assert 5 in applied and sorted(applied) == applied

        steps = dict(await conn.fetch("SELECT id, step FROM issuance_jobs"))
        assert {name: steps[job] for name, (job, _) in jobs.items()} == {
            name: step for name, (_, _, step) in cases.items()
        }
        # Prepared without CT: failed, and so is its order, as the worker used to do.
        job_id, order_id = jobs["legacy_without_ct"]
        failed = await conn.fetchrow("SELECT * FROM issuance_jobs WHERE id = $1", job_id)
        assert failed["status"] == "failed" and failed["locked_by"] is None
        assert failed["error"]["reason"] == "prepared without certificate transparency"
        order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        assert order["status"] == "invalid"
        assert order["error"]["type"] == SERVER_INTERNAL
        assert "Transparency" in order["error"]["detail"]
        audit = await conn.fetchrow(
            "SELECT * FROM audit_events WHERE order_id = $1 AND event = 'issuance.failed'", order_id
        )
        assert audit is not None and audit["details"]["serial"] == failed["serial"]
        # Other jobs kept their status.
        assert (
            await conn.fetchval("SELECT count(*) FROM issuance_jobs WHERE status = 'failed'") == 2
        )

        # The constraint: a claimable job's step needs its columns.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE issuance_jobs SET step = 'prepared' WHERE id = $1", jobs["queued"][0]
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE issuance_jobs SET step = 'signed' WHERE id = $1", jobs["done"][0]
            )
        assert await apply_schema(conn) == [], "replaying the schema changes nothing"
    finally:
        await pool.release(conn)

    # Claimed, each unfinished job comes back as its step's typed view.
    try:
        repository = IssuanceRepository(pool)
        views: dict[int, type[IssuanceJob]] = {}
        while claimed := await repository.claim(
            "w", now=datetime.now(UTC) + timedelta(hours=1), lease=DEFAULT_LEASE
        ):
            views[claimed.id] = type(claimed)
        assert views == {
            jobs["queued"][0]: IssuanceJob,
            jobs["prepared"][0]: PreparedJob,
            jobs["precert_signed"][0]: PrecertSignedJob,
            jobs["scts_collected"][0]: SctsCollectedJob,
        }
    finally:
        await pool.close()


class CountedClaims(IssuanceRepository):
    """The real repository, counting the worker's claims and those that found nothing."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.claims = 0
        self.empty = 0

    async def claim(self, worker_id: str, *, now: datetime, lease: timedelta) -> Any:
        job = await super().claim(worker_id, now=now, lease=lease)
        self.claims += 1
        self.empty += job is None
        return job


async def test_each_notified_job_is_claimed_without_an_empty_claim(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
) -> None:
    """Jobs queued one after another (each NOTIFYs the worker) are each claimed by one claim,
    without a second claim to find the queue empty (issue 20: one wasted statement per
    issuance); the start-up pass still claims until the queue is empty, and a job queued
    while two others run is still claimed at once."""
    jobs = CountedClaims(pool)
    worker = signing_worker(
        pool,
        issuers,
        linter,
        ct,
        pki_config,
        jobs=jobs,
        # No poll in the test's time (a poll makes the next pass claim until the queue is
        # empty: one more empty claim), however long a loaded machine makes it take.
        poll_seconds=3600.0,
        worker_id="counted",
        concurrency=8,
    )
    async with running(worker):
        await wait_for(lambda: _has_listener(pool), 10, "the worker's LISTEN")
        await wait_for(lambda: _claimed(jobs, 1), 10, "the start-up pass")
        assert (jobs.claims, jobs.empty) == (1, 1)
        for i in range(3):
            queued = await queue_order(pool, pki_config, names_for(40 + i))
            await wait_for(job_done(pool, queued.order_id), 20, "the notified job")
        assert (jobs.claims, jobs.empty) == (4, 1), "one claim per notified job"
        together = [await queue_order(pool, pki_config, names_for(50 + i)) for i in range(3)]
        for queued in together:
            await wait_for(job_done(pool, queued.order_id), 20, "the jobs queued together")
    assert jobs.claims - jobs.empty == 6  # each job claimed once (a NOTIFY landing during
    # a claim that took its job may still cost one empty claim: not asserted)
    for queued in together:
        await assert_issued(pool, issuers, queued)


async def _claimed(jobs: CountedClaims, n: int) -> bool:
    return jobs.claims >= n
