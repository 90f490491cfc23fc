"""Certificate Transparency in the signing worker, against real in-process test logs.

Real PostgreSQL, a development hierarchy with software keys, the real pre-issuance linter, and
``acme_ca.testsrv.ct_log`` logs (honest RFC 6962 / static-ct-api logs on their own ports).
Each issued certificate's SCTs are checked by three independent verifiers: ours
(:mod:`acme_ca.ca.ct.sct`), one built on cryptography (``tbs_precertificate_bytes`` and the
log key from the list), and ``openssl s_client -ct -ctlogfile`` against ``openssl s_server``.

Logs are tried in list order here (``CtSettings.shuffle=False``) so that a faulty log listed
first is always tried, and the test can see the CA move on to another one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID
from structlog.testing import capture_logs

from acme_ca.ca.ct.loglist import (
    FileLogList,
    openssl_ctlog_config,
)
from acme_ca.ca.ct.policy import CtPolicy
from acme_ca.ca.ct.sct import (
    POISON_EXTENSION_DER,
    certificate_precert_entry,
    embedded_scts,
    precert_entry,
    remove_poison,
    to_millis,
    verify_signature,
)
from acme_ca.ca.ct.settings import CtSettings
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.issuers import IssuerSet, load_issuers
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import IssuerSettings
from acme_ca.ca.worker import DEFAULT_LEASE
from acme_ca.clock import SystemClock
from acme_ca.config import Config, ConfigError, load_config
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import IssuanceJob
from acme_ca.db.status import StatusRepository
from acme_ca.status.settings import StatusSettings
from acme_ca.status.updater import StatusUpdater
from acme_ca.testsrv.ct_log import LogListEntry, TestLogSpec, _without_poison
from acme_ca.testsrv.ct_log_set import TestCtLogs
from acme_ca.testsrv.ct_logs_runner import accepted_roots
from tests.support.ct import Harness, harness, pyasn1_without_poison, three_operators
from tests.support.ports import free_port
from tests.support.worker import (
    FAST,
    INTERNAL_STATUS_URL,
    expire_lease,
    job_of,
    make_pki_config,
    order_of,
    wrap_issuers,
)

SERVER_INTERNAL = "urn:ietf:params:acme:error:serverInternal"
BIN = Path(sys.executable).parent
PKILINT = str(BIN / "lint_cabf_serverauth_cert")
NOW = datetime.now(UTC)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_pki_config(tmp_path_factory.mktemp("ct-pki"))


def days(config: Config, n: int) -> Config:
    """The same hierarchy, certificates valid ``n`` days (inclusive)."""
    return replace(config, validity_days=n)


def spec(name: str, operator: str, mode: str = "rfc6962", **kwargs: Any) -> TestLogSpec:
    return TestLogSpec.generate(name, operator, mode=mode, **kwargs)


@dataclass
class Issued:
    cert: x509.Certificate
    precert: x509.Certificate
    row: asyncpg.Record
    job: asyncpg.Record


async def issued(h: Harness, order_id: int) -> Issued:
    """Order valid, job done, exactly one precertificate and one certificate for the serial."""
    order = await order_of(h.pool, order_id)
    job = await job_of(h.pool, order_id)
    assert order["status"] == "valid", (order, job)
    assert job["status"] == "done", job
    certs = await h.pool.fetch("SELECT * FROM certificates WHERE order_id = $1", order_id)
    precerts = await h.pool.fetch("SELECT * FROM precertificates WHERE order_id = $1", order_id)
    assert len(certs) == 1 and len(precerts) == 1
    cert = x509.load_der_x509_certificate(bytes(certs[0]["der"]))
    precert = x509.load_der_x509_certificate(bytes(precerts[0]["der"]))
    assert bytes(precerts[0]["der"]) == bytes(job["precert_der"])
    assert certs[0]["serial"] == precerts[0]["serial"] == job["serial"]
    assert cert.serial_number == precert.serial_number == int(job["serial"], 16)
    assert cert.tbs_certificate_bytes == bytes(job["tbs_der"])
    assert precert.tbs_certificate_bytes == bytes(job["precert_tbs_der"])
    return Issued(cert, precert, certs[0], job)


def issuer_spki(h: Harness) -> bytes:
    return (
        h.issuers.by_name(h.config.ecdsa_issuer)
        .certificate.public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def check_precert_and_final(result: Issued) -> None:
    """CT-1..4: critical poison last in the precertificate; the final certificate is the
    same TBS with a non-critical SCT list in its place, everything else byte-identical."""
    pre_exts = list(result.precert.extensions)
    final_exts = list(result.cert.extensions)
    assert pre_exts[-1].oid == ExtensionOID.PRECERT_POISON and pre_exts[-1].critical
    assert POISON_EXTENSION_DER in result.precert.tbs_certificate_bytes
    assert final_exts[-1].oid == ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS
    assert not final_exts[-1].critical
    assert [(e.oid, e.critical, e.value) for e in pre_exts[:-1]] == [
        (e.oid, e.critical, e.value) for e in final_exts[:-1]
    ]
    for field in (
        "subject",
        "issuer",
        "serial_number",
        "not_valid_before_utc",
        "not_valid_after_utc",
        "signature_algorithm_oid",
    ):
        assert getattr(result.precert, field) == getattr(result.cert, field), field
    assert result.precert.public_key() == result.cert.public_key()
    # What the test logs sign (cryptography's DER code) is pyasn1's and ours, byte for byte.
    tbs = result.precert.tbs_certificate_bytes
    without = _without_poison(result.precert)
    assert without == pyasn1_without_poison(tbs) == remove_poison(tbs)
    assert without == result.cert.tbs_precertificate_bytes


# --------------------------------------------------------------------------- verifiers


def verify_own(h: Harness, cert: x509.Certificate) -> list[str]:
    """Our verifier: the embedded SCTs over the certificate minus its SCT list."""
    entry = certificate_precert_entry(cert.tbs_certificate_bytes, issuer_spki(h))
    names = []
    for sct in embedded_scts(cert.tbs_certificate_bytes):
        ct_log = h.log_list.by_id(sct.log_id)
        assert ct_log is not None
        verify_signature(sct, ct_log.public_key, entry)
        names.append(ct_log.name)
    return names


def verify_with_cryptography(h: Harness, cert: x509.Certificate) -> list[str]:
    """A second verifier: cryptography's SCT objects and tbs_precertificate_bytes, the signed
    data assembled here from RFC 6962 §3.2, the key from the log list."""
    ext = cert.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps)
    issuer_key_hash = hashlib.sha256(issuer_spki(h)).digest()
    tbs = cert.tbs_precertificate_bytes
    names = []
    for sct in ext.value:
        assert sct.version == x509.certificate_transparency.Version.v1
        assert sct.entry_type == x509.certificate_transparency.LogEntryType.PRE_CERTIFICATE
        millis = (
            sct.timestamp.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        ) // timedelta(milliseconds=1)
        data = (
            struct.pack(">BBQH", 0, 0, millis, 1)
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack(">H", len(sct.extension_bytes))
            + sct.extension_bytes
        )
        entry = next(e for e in listed_logs(h) if base64.b64decode(e["log_id"]) == sct.log_id)
        key = serialization.load_der_public_key(base64.b64decode(entry["key"]))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert sct.signature_hash_algorithm is not None
        assert isinstance(sct.signature_hash_algorithm, hashes.SHA256)
        key.verify(sct.signature, data, ec.ECDSA(hashes.SHA256()))
        names.append(entry["description"])
    return names


def listed_logs(h: Harness) -> list[LogListEntry]:
    """Every log entry of the v3 list the logs publish (RFC 6962 and tiled)."""
    return [
        e
        for op in h.logs.log_list()["operators"]
        for kind in ("logs", "tiled_logs")
        for e in op[kind]
    ]


def verify_with_openssl(
    h: Harness, tmp_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> str:
    """The third verifier: ``openssl s_client -ct -ctlogfile`` (log file in OpenSSL's format,
    written from the log list) against ``openssl s_server`` presenting leaf and issuer."""
    issuer = h.issuers.by_name(h.config.ecdsa_issuer)
    files = {
        "leaf.pem": cert.public_bytes(serialization.Encoding.PEM),
        "leaf.key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "chain.pem": issuer.pem_chain(),
        "root.pem": h.issuers.root.public_bytes(serialization.Encoding.PEM),
        "ctlogs.cnf": openssl_ctlog_config(h.log_list).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    # s_client checks SCTs against the session time in whole seconds (no drift allowance):
    # an SCT from this very second would be "in the future".
    newest = max(s.timestamp for s in embedded_scts(cert.tbs_certificate_bytes))
    time.sleep(max(0.0, newest / 1000 + 1.05 - time.time()))
    port = free_port()
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            str(port),
            "-cert",
            str(tmp_path / "leaf.pem"),
            "-key",
            str(tmp_path / "leaf.key"),
            "-cert_chain",
            str(tmp_path / "chain.pem"),
            "-quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("openssl s_server did not start")
            time.sleep(0.05)
        client = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                str(tmp_path / "root.pem"),
                "-verify_return_error",
                "-ct",
                "-ctlogfile",
                str(tmp_path / "ctlogs.cnf"),
            ],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.kill()
        server.wait(timeout=10)
    assert client.returncode == 0, client.stdout + client.stderr
    return client.stdout


# --------------------------------------------------------------------------- happy paths


async def test_200_day_certificate_has_three_scts_verified_three_ways(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    tmp_path: Path,
) -> None:
    config = days(pki_config, 200)
    async with harness(pool, config, issuers, linter, three_operators()) as h:
        order_id, key = await h.queue(["www.ct-long.example.com", "ct-long.example.com"])
        assert await h.worker().run_once()
        result = await issued(h, order_id)
        await h.cts[0].wait_idle()
        final_submissions = {x.name: x.requests["add-chain"] for x in h.logs.logs}
        (tmp_path / "openssl").mkdir()
        openssl_out = await asyncio.to_thread(
            verify_with_openssl, h, tmp_path / "openssl", result.cert, key
        )

    lifetime = result.cert.not_valid_after_utc - result.cert.not_valid_before_utc
    assert lifetime == timedelta(days=200) - timedelta(seconds=1)
    check_precert_and_final(result)

    # 3 SCTs from >= 2 operators, <= 2 per operator, one from an RFC 6962 log (CT-7, CT-8).
    stored = result.row["scts"]
    assert len(stored) == 3
    assert sorted(s["operator"] for s in stored) == ["operator A", "operator B", "operator C"]
    assert {s["api"] for s in stored} == {"rfc6962", "static-ct-api"}
    used = [h.log_list.by_id(base64.b64decode(s["log_id"])) for s in stored]
    assert CtPolicy().requirement(lifetime).satisfied_by([x for x in used if x is not None])
    expected = sorted(s["log"] for s in stored)
    assert sorted(verify_own(h, result.cert)) == expected
    assert sorted(verify_with_cryptography(h, result.cert)) == expected
    assert openssl_out.count("SCT validation status: valid") == 3, openssl_out
    assert "SCTs present (3)" in openssl_out, openssl_out
    for s in stored:
        ts = datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00"))
        assert result.job["ct_submitted_at"] - timedelta(seconds=1) <= ts <= datetime.now(UTC)
    # The final certificate went to the same logs afterwards (best effort).
    assert final_submissions == {"log A": 1, "log B": 1, "log C": 1}

    # pkilint (the CLI, as BR 4.3.1.2 linting would run it) on both.
    for kind, cert in (
        ("DV-PRE-CERTIFICATE", result.precert),
        ("DV-FINAL-CERTIFICATE", result.cert),
    ):
        path = tmp_path / f"{kind}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        run = await asyncio.to_thread(
            subprocess.run,
            [PKILINT, "lint", "-t", kind, "-s", "WARNING", "-f", "JSON", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        findings = [
            (f["severity"], f["code"])
            for r in json.loads(run.stdout)["results"]
            for f in r["finding_descriptions"]
        ]
        # Accepted on purpose: a CN (CP profile), and 200 days (BR 6.3.2 SHOULD is 199).
        assert set(findings) == {
            ("WARNING", "cabf.serverauth.dv.common_name_attribute_present"),
            ("WARNING", "cabf.serverauth.certificate_validity_period_exceeds_199_days"),
        }, (kind, findings)

    # The order timeline, step by step, with log, operator and timestamp of each SCT.
    events = await h.pool.fetch(
        "SELECT event, details FROM audit_events WHERE order_id = $1 ORDER BY id", order_id
    )
    assert [e["event"] for e in events] == [
        "order.processing",
        "issuance.prepared",
        "precertificate.issued",
        "ct.scts_collected",
        "certificate.issued",
    ]
    summaries = [{k: s[k] for k in ("log", "operator", "timestamp")} for s in stored]
    assert events[3]["details"]["scts"] == summaries
    assert events[4]["details"]["scts"] == summaries


async def test_final_certificates_go_only_to_the_configured_logs(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    """CP 4.3.1 needs the precertificate logged; sending the final certificate afterwards is
    best effort, done for the logs of ``ct_log_list`` only: the in-process test logs (test
    mode, the embedded defaults) get precertificates only, as nobody reads them."""
    config = days(pki_config, 200)
    assert config.ct_log_list is None
    assert not CtSettings.from_config(config).submit_final
    assert CtSettings.from_config(replace(config, ct_log_list=Path("list.json"))).submit_final
    settings = replace(FAST, submit_final=CtSettings.from_config(config).submit_final)
    async with harness(pool, config, issuers, linter, three_operators(), settings) as h:
        order_id, _ = await h.queue(["ct-test-logs.example.com"])
        assert await h.worker().run_once()
        result = await issued(h, order_id)
        await h.cts[0].wait_idle()
        precert_submissions = {x.name: x.requests["add-pre-chain"] for x in h.logs.logs}
        final_submissions = {x.name: x.requests["add-chain"] for x in h.logs.logs}
    assert len(result.row["scts"]) == 3
    assert precert_submissions == {"log A": 1, "log B": 1, "log C": 1}
    assert final_submissions == {"log A": 0, "log B": 0, "log C": 0}


async def test_short_certificate_gets_two_scts_from_two_operators(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    specs = [
        spec("log A1", "operator A"),
        spec("log A2", "operator A"),
        spec("log B1", "operator B", "static-ct-api"),
    ]
    async with harness(pool, days(pki_config, 90), issuers, linter, specs) as h:
        order_id, _ = await h.queue(["ct-short.example.com"])
        assert await h.worker().run_once()
        result = await issued(h, order_id)
        tried = {x.name: x.requests["add-pre-chain"] for x in h.logs.logs}
        lifetime = result.cert.not_valid_after_utc - result.cert.not_valid_before_utc
        assert lifetime == timedelta(days=90) - timedelta(seconds=1)
        check_precert_and_final(result)
        assert sorted(verify_own(h, result.cert)) == ["log A1", "log B1"]
        assert sorted(verify_with_cryptography(h, result.cert)) == ["log A1", "log B1"]
    # Apple counts one SCT per operator under 180 days: log A2 was never needed.
    assert tried == {"log A1": 1, "log A2": 0, "log B1": 1}


# --------------------------------------------------------------------------- faults


FAULTS: dict[str, dict[str, object]] = {
    "429 Retry-After": {"retry_after": 30},
    "503": {"unavailable": True},
    "slow": {"delay": 30.0},
    "corrupt signature": {"corrupt_signature": True},
    "unknown log id": {"wrong_log_id": True},
    "future timestamp": {"future_timestamp": True},
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_each_fault_makes_the_ca_move_to_another_log(
    fault: str,
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    specs = [
        spec("faulty", "operator A"),
        spec("log B", "operator B"),
        spec("log C", "operator C"),
    ]
    async with harness(pool, days(pki_config, 90), issuers, linter, specs) as h:
        for name, value in FAULTS[fault].items():
            setattr(h.logs["faulty"].faults, name, value)
        order_id, _ = await h.queue(["ct-fault.example.com"])
        start = time.monotonic()
        assert await h.worker().run_once()
        elapsed = time.monotonic() - start
        result = await issued(h, order_id)
        assert h.logs["faulty"].requests["add-pre-chain"] >= 1, "the faulty log was not tried"
        assert sorted(verify_own(h, result.cert)) == ["log B", "log C"]
        assert result.job["deferrals"] == 0
        if fault == "429 Retry-After":
            # Held for its Retry-After: the next job does not even ask it.
            asked = h.logs["faulty"].requests["add-pre-chain"]
            second, _ = await h.queue(["ct-fault-2.example.com"])
            assert await h.worker("w2", ct=h.cts[0]).run_once()
            await issued(h, second)
            assert h.logs["faulty"].requests["add-pre-chain"] == asked
    # Far below the slow log's delay and the Retry-After (30 s): the CA moved on, it did not
    # wait for the faulty log (the margin is for a loaded machine).
    assert elapsed < 15, f"took {elapsed:.1f}s"


async def test_retry_after_within_the_budget_is_honoured(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    specs = [spec("busy", "operator A"), spec("log B", "operator B")]
    settings = replace(FAST, timeout=10.0, stagger=10.0)
    async with harness(pool, days(pki_config, 90), issuers, linter, specs, settings) as h:
        h.logs["busy"].faults.retry_after = 1
        order_id, _ = await h.queue(["ct-busy.example.com"])

        async def recover() -> None:
            # Once the first submission is counted (the log took its faults in that step, so
            # it is answered 429), not after a guess at how long signing takes; well before
            # the retry a second later.
            async with asyncio.timeout(20):
                while not h.logs["busy"].requests["add-pre-chain"]:
                    await asyncio.sleep(0.02)
            h.logs["busy"].faults.clear()

        start = time.monotonic()
        await asyncio.gather(h.worker().run_once(), recover())
        elapsed = time.monotonic() - start
        result = await issued(h, order_id)
        assert sorted(verify_own(h, result.cert)) == ["busy", "log B"]
        assert h.logs["busy"].requests["add-pre-chain"] == 2
    assert elapsed >= 1.0, "the retry did not wait for Retry-After"


async def test_all_logs_of_one_operator_down(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    specs = [
        spec("log A1", "operator A"),
        spec("log A2", "operator A", "static-ct-api"),
        spec("log B1", "operator B"),
        spec("log B2", "operator B", "static-ct-api"),
        spec("log C1", "operator C", "static-ct-api"),
    ]
    async with harness(pool, days(pki_config, 200), issuers, linter, specs) as h:
        for ct_log in h.logs.by_operator("operator A"):
            ct_log.faults.unavailable = True
        order_id, _ = await h.queue(["ct-opdown.example.com"])
        assert await h.worker().run_once()
        result = await issued(h, order_id)
        assert sorted(verify_own(h, result.cert)) == ["log B1", "log B2", "log C1"]
        assert all(x.requests["add-pre-chain"] >= 1 for x in h.logs.by_operator("operator A"))


# --------------------------------------------------------------------------- no issuance


async def test_no_log_covering_not_after_means_no_issuance(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    soon = NOW + timedelta(days=30)
    specs = [
        spec("log A", "operator A", start=NOW - timedelta(days=365), end=soon),
        spec("log B", "operator B", start=NOW - timedelta(days=365), end=soon),
        spec("log C", "operator C"),  # covers, but one operator is not enough
        spec("log D", "operator D", state="retired"),  # covers, but not usable
    ]
    async with harness(pool, days(pki_config, 90), issuers, linter, specs) as h:
        counted, signers = wrap_issuers(issuers)
        order_id, _ = await h.queue(["ct-nolog.example.com"])
        assert await h.worker(issuers=counted).run_once()
        job = await job_of(pool, order_id)
        assert job["status"] == "queued" and job["deferrals"] == 1 and job["serial"] is None
        assert job["retry_at"] > datetime.now(UTC) - timedelta(seconds=1)
        assert "cannot give 2 SCTs" in job["error"]["reasons"][0]
        assert (await order_of(pool, order_id))["status"] == "processing"

        # Past the deadline: the order becomes invalid; nothing was ever signed.
        await pool.execute("UPDATE issuance_jobs SET retry_at = now() WHERE id = $1", job["id"])
        late = h.worker("w2", issuers=counted, settings=replace(FAST, deadline=timedelta(0)))
        assert await late.run_once()
        tried = sum(x.requests["add-pre-chain"] for x in h.logs.logs)
    order = await order_of(pool, order_id)
    assert order["status"] == "invalid"
    assert order["error"]["type"] == SERVER_INTERNAL
    assert "Certificate Transparency" in order["error"]["detail"]
    assert "nothing was signed" in order["error"]["detail"]
    assert all(s.calls == 0 for s in signers.values())
    assert tried == 0
    assert await pool.fetchval("SELECT count(*) FROM precertificates") == 0
    job = await job_of(pool, order_id)
    assert job["status"] == "failed" and job["error"]["reason"] == "certificate transparency"
    events = [
        r["event"]
        for r in await pool.fetch(
            "SELECT event FROM audit_events WHERE order_id = $1 ORDER BY id", order_id
        )
    ]
    assert events == ["order.processing", "ct.deferred", "issuance.failed"]


async def test_policy_not_met_retries_with_the_same_precertificate_then_fails_at_deadline(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    specs = [spec("log A", "operator A"), spec("log B", "operator B")]
    slow_backoff = replace(
        FAST, retry_initial=timedelta(seconds=30), retry_max=timedelta(seconds=30)
    )
    async with harness(pool, days(pki_config, 90), issuers, linter, specs, slow_backoff) as h:
        h.logs["log B"].faults.corrupt_signature = True
        first, _ = await h.queue(["ct-retry.example.com"])
        second, _ = await h.queue(["ct-deadline.example.com"])
        worker = h.worker()
        assert await worker.run_once() and await worker.run_once()
        for order_id in (first, second):
            job = await job_of(pool, order_id)
            assert job["status"] == "queued" and job["deferrals"] == 1, job
            assert job["precert_der"] is not None and job["tbs_der"] is None
            assert any("SCT rejected" in r for r in job["error"]["reasons"]), job["error"]
        precerts = {
            r["order_id"]: bytes(r["der"])
            for r in await pool.fetch("SELECT order_id, der FROM precertificates")
        }
        assert set(precerts) == {first, second}

        # A precertificate counts as issued: OCSP answers for its serial from now on.
        status = StatusRepository(pool)
        job = await job_of(pool, second)
        found = await status.certificate_status(h.config.ecdsa_issuer, job["serial"])
        assert found is not None and found.revoked_at is None
        updater = StatusUpdater(
            status,
            issuers,
            linter,
            SystemClock(),
            StatusSettings(
                crl_validity=timedelta(hours=96),
                crl_interval=timedelta(hours=24),
                ocsp_validity=timedelta(hours=96),
            ),
        )
        await updater.refresh_ocsp()
        for algorithm in ("sha1", "sha256"):
            response = await status.get_ocsp_response(
                h.config.ecdsa_issuer, job["serial"], algorithm
            )
            assert response is not None and response.status == "good"

        # The first order: the log recovers and the retry embeds SCTs for the same
        # precertificate (none older than the first submission).
        h.logs["log B"].faults.clear()
        await pool.execute("UPDATE issuance_jobs SET retry_at = now() WHERE order_id = $1", first)
        assert await worker.run_once()
        result = await issued(h, first)
        assert result.precert.public_bytes(serialization.Encoding.DER) == precerts[first]
        assert result.job["attempts"] == 2 and result.job["deferrals"] == 1
        submitted = to_millis(result.job["ct_submitted_at"])
        assert all(
            s.timestamp >= submitted - 5000
            for s in embedded_scts(result.cert.tbs_certificate_bytes)
        )
        assert sorted(verify_own(h, result.cert)) == ["log A", "log B"]

        # The second: still failing at its deadline, the order becomes invalid with a clear
        # error; the precertificate stays recorded.
        h.logs["log B"].faults.unavailable = True
        await pool.execute("UPDATE issuance_jobs SET retry_at = now() WHERE order_id = $1", second)
        assert await h.worker("w2", settings=replace(FAST, deadline=timedelta(0))).run_once()
    order = await order_of(pool, second)
    assert order["status"] == "invalid"
    assert "Certificate Transparency" in order["error"]["detail"]
    assert "precertificate was signed and stays on record" in order["error"]["detail"]
    job = await job_of(pool, second)
    assert job["status"] == "failed" and job["error"]["precertificate"] is True
    assert any("HTTP 503" in r for r in job["error"]["reasons"]), job["error"]
    rows = await pool.fetch("SELECT der FROM precertificates WHERE order_id = $1", second)
    assert [bytes(r["der"]) for r in rows] == [precerts[second]]
    assert await pool.fetchval("SELECT count(*) FROM certificates WHERE order_id = $1", second) == 0


async def test_static_ct_api_sct_is_embedded_byte_for_byte(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    specs = [spec("log A", "operator A"), spec("tiled B", "operator B", "static-ct-api")]
    async with harness(pool, days(pki_config, 90), issuers, linter, specs) as h:
        answers = []
        for i in range(2):
            order_id, _ = await h.queue([f"ct-static-{i}.example.com"])
            assert await h.worker().run_once()
            result = await issued(h, order_id)
            answers.append(result)
        tiled = h.logs["tiled B"]
        responses = tiled.responses()
    indexes = []
    for result in answers:
        (embedded,) = [
            s for s in embedded_scts(result.cert.tbs_certificate_bytes) if s.log_id == tiled.log_id
        ]
        given = next(
            r for r in responses if base64.b64decode(r["signature"])[4:] == embedded.signature
        )
        assert base64.b64encode(embedded.extensions).decode() == given["extensions"]
        assert embedded.timestamp == given["timestamp"]
        # leaf_index extension: type 0, 5-byte big-endian index (c2sp.org/static-ct-api).
        assert len(embedded.extensions) == 8 and embedded.extensions[:3] == b"\x00\x00\x05"
        indexes.append(int.from_bytes(embedded.extensions[3:], "big"))
        stored = [s for s in result.row["scts"] if s["api"] == "static-ct-api"]
        assert base64.b64decode(stored[0]["sct"]) == embedded.encode()
        assert sorted(verify_with_cryptography(h, result.cert)) == ["log A", "tiled B"]
    assert indexes[1] > indexes[0]


# --------------------------------------------------------------------------- crashes


class DiesOnce(CertificateTransparency):
    """Collection dies like a killed process, once."""

    died = False

    async def collect(self, *args: Any, **kwargs: Any) -> Any:
        if not self.died:
            self.died = True
            raise RuntimeError("killed between precertificate and final certificate")
        return await super().collect(*args, **kwargs)


class DiesAfterSigningPrecert(IssuanceRepository):
    """The precertificate was signed, then the process died before recording it."""

    died = False

    async def record_precertificate(
        self, job: IssuanceJob, worker_id: str, der: bytes, now: datetime
    ) -> IssuanceJob:
        if not self.died:
            self.died = True
            raise RuntimeError("killed after the HSM signed the precertificate")
        return await super().record_precertificate(job, worker_id, der, now)


async def test_crash_between_precertificate_and_certificate_resumes_with_the_same_ones(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    async with harness(pool, days(pki_config, 90), issuers, linter, three_operators()) as h:
        # (a) Killed after the precertificate was recorded, before any SCT.
        a, _ = await h.queue(["ct-crash-a.example.com"])
        dying = DiesOnce(h.source, SystemClock(), FAST)
        h.cts.append(dying)
        assert await h.worker("dies", ct=dying).run_once()
        before = await job_of(pool, a)
        assert before["status"] == "running" and before["precert_der"] is not None
        assert before["tbs_der"] is None
        await expire_lease(pool, a)
        assert await h.worker("resumes").run_once()
        result = await issued(h, a)
        assert bytes(result.job["precert_der"]) == bytes(before["precert_der"])
        assert result.job["serial"] == before["serial"]
        sctlogs = verify_own(h, result.cert)
        entry = precert_entry(bytes(before["precert_tbs_der"]), issuer_spki(h))
        for sct in embedded_scts(result.cert.tbs_certificate_bytes):
            ct_log = h.log_list.by_id(sct.log_id)
            assert ct_log is not None
            verify_signature(sct, ct_log.public_key, entry)  # over the recorded precert
        assert len(sctlogs) == 2

        # (b) Killed at the final signature, SCTs and final TBS recorded.
        b, _ = await h.queue(["ct-crash-b.example.com"])
        crashing, signers = wrap_issuers(issuers)
        signer = signers[h.config.ecdsa_issuer]
        original = signer.sign

        async def sign_once_then_die(data: bytes, hash: Any) -> bytes:
            if signer.calls >= 1:
                signer.crash = True
            return await original(data, hash)

        signer.sign = sign_once_then_die  # type: ignore[method-assign]
        assert await h.worker("dies-b", issuers=crashing).run_once()
        before = await job_of(pool, b)
        assert before["status"] == "running" and before["tbs_der"] is not None
        assert len(before["scts"]) == 2
        await expire_lease(pool, b)
        requests = sum(x.requests["add-pre-chain"] for x in h.logs.logs)
        assert await h.worker("resumes-b").run_once()
        result = await issued(h, b)
        assert result.cert.tbs_certificate_bytes == bytes(before["tbs_der"])
        assert result.row["scts"] == before["scts"]
        assert sum(x.requests["add-pre-chain"] for x in h.logs.logs) == requests, (
            "SCTs were collected again"
        )

        # (c) Killed between the HSM's precertificate signature and its record: the next
        # worker signs the same TBS again and records one precertificate.
        c, _ = await h.queue(["ct-crash-c.example.com"])
        assert await h.worker("dies-c", jobs=DiesAfterSigningPrecert(pool)).run_once()
        before = await job_of(pool, c)
        assert before["precert_der"] is None and before["precert_tbs_der"] is not None
        await expire_lease(pool, c)
        assert await h.worker("resumes-c").run_once()
        result = await issued(h, c)
        assert result.precert.tbs_certificate_bytes == bytes(before["precert_tbs_der"])
    for order_id in (a, b, c):
        events = [
            r["event"]
            for r in await pool.fetch(
                "SELECT event FROM audit_events WHERE order_id = $1 ORDER BY id", order_id
            )
        ]
        assert events.count("issuance.prepared") == 1
        assert events.count("precertificate.issued") == 1
        assert events.count("certificate.issued") == 1
    assert await pool.fetchval("SELECT count(*) FROM precertificates") == 3


async def test_lease_lost_during_collection_leaves_the_job_to_its_new_owner(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    """A worker whose lease lapsed while logs were slow finds the job taken over and
    records nothing of its own."""
    delay = 5.0  # the slow worker's SCTs come back long after the fast worker took the job
    async with harness(pool, days(pki_config, 90), issuers, linter, three_operators()) as h:
        order_id, _ = await h.queue(["ct-lease.example.com"])
        for ct_log in h.logs.logs:
            ct_log.faults.delay = delay
        # The slow worker waits for the delayed SCTs (within its CT timeout) rather than
        # giving up on the logs.
        slow_worker = h.worker("slow", settings=replace(FAST, timeout=delay + 10))
        with capture_logs() as events:
            slow = asyncio.create_task(slow_worker.run_once())
            # Every log holds a submission of the slow worker (two at once, the third
            # staggered), each answered after the delay it was sent under.
            async with asyncio.timeout(20):
                while not all(x.requests["add-pre-chain"] for x in h.logs.logs):
                    await asyncio.sleep(0.02)
            await expire_lease(pool, order_id)
            h.logs.clear_faults()
            assert await h.worker("fast").run_once()
            assert await asyncio.wait_for(slow, 30)
        result = await issued(h, order_id)
    assert result.job["attempts"] == 2
    assert (
        await pool.fetchval("SELECT count(*) FROM audit_events WHERE event = 'ct.scts_collected'")
        == 1
    )
    lost = [e for e in events if e["event"] == "issuance.lease_lost"]
    assert [e["step"] for e in lost] == ["scts"], "the slow worker's SCTs were not refused"


# --------------------------------------------------------------------------- lint, list


@pytest.fixture(scope="module")
def internal_pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_pki_config(
        tmp_path_factory.mktemp("ct-pki-internal"), status_base_url=INTERNAL_STATUS_URL
    )


async def test_precertificate_lint_error_signs_nothing(
    pool: asyncpg.Pool,
    internal_pki_config: Config,
    linter: CertificateLinter,
) -> None:
    async with await load_issuers(IssuerSettings.from_config(internal_pki_config)) as loaded:
        counted, signers = wrap_issuers(loaded)
        async with harness(pool, internal_pki_config, counted, linter, three_operators()) as h:
            order_id, _ = await h.queue(["ct-lint.example.com"])
            assert await h.worker().run_once()
            tried = sum(x.requests["add-pre-chain"] for x in h.logs.logs)
    assert all(s.calls == 0 for s in signers.values()) and tried == 0
    order = await order_of(pool, order_id)
    assert order["status"] == "invalid" and "precertificate failed" in order["error"]["detail"]
    job = await job_of(pool, order_id)
    assert job["error"]["kind"] == "DV-PRE-CERTIFICATE"
    assert await pool.fetchval("SELECT count(*) FROM precertificates") == 0


async def test_log_list_file_is_reloaded_without_restart(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    tmp_path: Path,
) -> None:
    async with TestCtLogs(three_operators(), accepted_roots(pki_config)) as logs:
        listed = logs.log_list()
        path = tmp_path / "log_list.json"
        one_operator = {**listed, "operators": listed["operators"][:1]}
        path.write_text(json.dumps(one_operator))
        source = FileLogList(path)
        async with harness(pool, days(pki_config, 90), issuers, linter, []) as h:
            h.source = source
            order_id, _ = await h.queue(["ct-reload.example.com"])
            worker = h.worker()
            assert await worker.run_once()
            assert (await job_of(pool, order_id))["deferrals"] == 1
            # The operator publishes a new list (atomically); the same worker uses it.
            partial = tmp_path / ".log_list.json.tmp"
            partial.write_text(json.dumps(listed))
            partial.replace(path)
            await pool.execute("UPDATE issuance_jobs SET retry_at = now()")
            assert await worker.run_once()
            h.logs = logs
            result = await issued(h, order_id)
            assert len(verify_own(h, result.cert)) == 2


async def test_run_worker_refuses_to_start_without_a_log_list(pki_config: Config) -> None:
    from acme_ca.main.worker import ct_log_source

    with pytest.raises(RuntimeError, match="ct_log_list"):
        ct_log_source(pki_config, None)
    assert isinstance(
        ct_log_source(replace(pki_config, ct_log_list=Path("x.json")), None), FileLogList
    )
    assert timedelta(seconds=FAST.timeout * 3) < DEFAULT_LEASE


class CountingLinter(CertificateLinter):
    """The real linter, remembering which kinds it was asked to lint."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[str] = []

    def lint(self, der: bytes, kind: Any, validity_period_start: datetime | None = None) -> Any:
        self.kinds.append(kind)
        return super().lint(der, kind, validity_period_start)


@pytest.mark.parametrize("lint_final", [False, True])
async def test_br_lint_1_precertificate_linted_final_only_on_request(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    lint_final: bool,
) -> None:
    """BR 4.3.1.2: the precertificate is always linted; the final certificate, whose TBS is
    proven equal to the precertificate's minus poison (RFC 6962 §3.2), only with
    ``lint_final_certificates``."""
    counting = await asyncio.to_thread(CountingLinter)
    async with harness(pool, days(pki_config, 90), issuers, linter, three_operators()) as h:
        order_id, _ = await h.queue(["lint-final.example.com"])
        assert await h.worker(linter=counting, lint_final=lint_final).run_once()
        result = await issued(h, order_id)
    expected = (
        ["DV-PRE-CERTIFICATE", "DV-FINAL-CERTIFICATE"] if lint_final else ["DV-PRE-CERTIFICATE"]
    )
    assert counting.kinds == expected
    assert result.cert.tbs_precertificate_bytes == remove_poison(
        result.precert.tbs_certificate_bytes
    )


def test_ct_stagger_and_backoff_come_from_configuration() -> None:
    """The CT pauses that add latency when a log is slow or failing are configuration
    (issue 20): stagger and retry pause in milliseconds, the job's backoff in seconds."""
    defaults = CtSettings.from_config(load_config(env={}))
    assert (defaults.stagger, defaults.retry_pause) == (2.0, 0.25)
    assert (defaults.retry_initial, defaults.retry_max) == (
        timedelta(seconds=10),
        timedelta(minutes=5),
    )
    env = {
        "ACME_CA_CT_STAGGER_MILLISECONDS": "300",
        "ACME_CA_CT_RETRY_PAUSE_MILLISECONDS": "50",
        "ACME_CA_CT_BACKOFF_INITIAL_SECONDS": "2",
        "ACME_CA_CT_BACKOFF_MAX_SECONDS": "20",
    }
    tuned = CtSettings.from_config(load_config(env=env))
    assert (tuned.stagger, tuned.retry_pause) == (0.3, 0.05)
    assert [tuned.backoff(n) for n in (1, 2, 3, 4, 5)] == [
        timedelta(seconds=s) for s in (2, 4, 8, 16, 20)
    ]
    for key, value in [
        ("ACME_CA_CT_STAGGER_MILLISECONDS", "0"),
        ("ACME_CA_CT_RETRY_PAUSE_MILLISECONDS", "-1"),
        ("ACME_CA_CT_BACKOFF_INITIAL_SECONDS", "0"),
        ("ACME_CA_CT_BACKOFF_MAX_SECONDS", "1"),
    ]:
        with pytest.raises(ConfigError, match=key.removeprefix("ACME_CA_").lower()):
            load_config(env={**env, key: value})


# --------------------------------------------------------------------------- OCSP hand-off


async def test_br_ocsp_2_precertificate_handed_to_status_updater_once_its_pass_ends(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    """BR-OCSP-2 / CT-6: every precertificate recorded reaches the status updater (which
    signs its OCSP responses) exactly once, and only once the worker's pass over the job
    has ended: after the final certificate, or after the CT deferral, so that OCSP signing
    never sits between the precertificate and the answer to finalize (issue 20)."""
    specs = [spec("log A", "operator A"), spec("log B", "operator B")]
    slow_backoff = replace(
        FAST, retry_initial=timedelta(seconds=30), retry_max=timedelta(seconds=30)
    )
    async with harness(pool, days(pki_config, 90), issuers, linter, specs, slow_backoff) as h:
        handed: list[tuple[str, str, list[str]]] = []
        with capture_logs() as logs:

            def on_issued(issuer: str, serial: str) -> None:
                handed.append((issuer, serial, [e["event"] for e in logs]))

            worker = h.worker(on_issued=on_issued)
            # Issued in one pass: handed over after certificate.issued, not before.
            done, _ = await h.queue(["ocsp-handoff.example.com"])
            assert await worker.run_once()
            result = await issued(h, done)
            assert [(i, s) for i, s, _ in handed] == [(h.config.ecdsa_issuer, result.job["serial"])]
            before = handed[0][2]
            assert before.index("precertificate.issued") < before.index("certificate.issued")

            # Deferred for CT: handed over when that pass ends, and not again on the retry
            # that issues the certificate for the same precertificate.
            h.logs["log B"].faults.corrupt_signature = True
            deferred, _ = await h.queue(["ocsp-deferred.example.com"])
            assert await worker.run_once()
            job = await job_of(pool, deferred)
            assert job["status"] == "queued" and job["deferrals"] == 1, job
            assert [s for _, s, _ in handed[1:]] == [job["serial"]]
            h.logs["log B"].faults.clear()
            await pool.execute(
                "UPDATE issuance_jobs SET retry_at = now() WHERE order_id = $1", deferred
            )
            assert await worker.run_once()
            await issued(h, deferred)
            assert len(handed) == 2
