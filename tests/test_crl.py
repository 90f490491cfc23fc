"""CRLs (CP 4.9.7 and Table 7.2.2; BR 4.9.7, 7.2): built, linted and signed by the status
updater with the development hierarchy's software keys, stored in a real PostgreSQL and served
by the key-less status listener.  Shared fixtures for tests/test_ocsp.py live here too."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from structlog.testing import capture_logs

from acme_ca.ca.der import split_signed
from acme_ca.ca.issuers_file import read_issuers_file
from acme_ca.ca.lint import CertificateLinter, LintFinding, LintReport, Severity
from acme_ca.ca.signer import SIGNATURE_ALGORITHMS
from acme_ca.clock import SystemClock
from acme_ca.db.certificates import CertificateRepository, RevocationOutcome
from acme_ca.db.pool import create_pool
from acme_ca.db.status import CrlRecord, StatusRepository
from acme_ca.status.crl import (
    der_children,
    publish_crl,
    raw_crl_issuer_der,
    raw_subject_der,
)
from tests.support import status as status_support
from tests.support.pkilint import pkilint
from tests.support.status import ISSUERS, REPO, ROOTS, StatusEnv, StatusSite

# The shared fixtures of the status tests.
status_config = status_support.status_config
env = status_support.env
status_site = status_support.status_site

LINT_CRL = REPO / ".venv" / "bin" / "lint_crl"


async def publish(
    env: StatusEnv,
    name: str,
    *,
    repository: StatusRepository | None = None,
    linter: CertificateLinter | None = None,
    with_entries: bool = True,
) -> CrlRecord | None:
    """publish_crl for ``name`` with the environment's repository, clock, CRL validity and
    linter (or the ``repository`` and ``linter`` given)."""
    return await publish_crl(
        repository or env.repository,
        env.authority(name),
        clock=env.clock,
        validity=env.settings.crl_validity,
        linter=linter or env.linter,
        with_entries=with_entries,
    )


# ------------------------------------------------------------------ publication


async def test_br_crl_1_every_issuer_and_root_published_and_served(
    env: StatusEnv, status_site: StatusSite
) -> None:
    with capture_logs() as logs:
        await env.updater().publish_all_crls("start")
    published = [e for e in logs if e["event"] == "crl.published"]
    assert sorted(e["issuer"] for e in published) == sorted(ISSUERS + ROOTS)
    assert all({"number", "entries"} <= e.keys() for e in published)

    for name in ISSUERS + ROOTS:
        stored = await env.repository.latest_crl(name)
        assert stored is not None, name
        async with status_site.session.get(f"{status_site.base_url}/crl/{name}.crl") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/pkix-crl"
            assert await r.read() == stored.der
            assert "max-age=" in r.headers["Cache-Control"]
            etag = r.headers["ETag"]
        async with status_site.session.get(
            f"{status_site.base_url}/crl/{name}.crl", headers={"If-None-Match": etag}
        ) as r:
            assert r.status == 304

    async with status_site.session.get(f"{status_site.base_url}/crl/nobody.crl") as r:
        assert r.status == 404


async def test_issuer_certificates_served_without_keys(
    env: StatusEnv, status_site: StatusSite
) -> None:
    parsed = read_issuers_file(env.config.pki_path)
    expected = {n: parsed.issuers[n].certificate for n in ISSUERS}
    expected |= {n: parsed.roots[n].certificate for n in ROOTS}
    for name, certificate in expected.items():
        async with status_site.session.get(f"{status_site.base_url}/issuer/{name}.cer") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/pkix-cert"
            assert x509.load_der_x509_certificate(await r.read()) == certificate


@pytest.mark.parametrize("name", ISSUERS + ROOTS)
async def test_br_crl_2_profile(env: StatusEnv, name: str) -> None:
    authority = env.authority(name)
    record = await publish(env, name, with_entries=name in ISSUERS)
    assert record is not None
    crl = x509.load_der_x509_crl(record.der)
    tbs, outer_algorithm, _ = split_signed(record.der)
    # v2 (INTEGER 1 first in the TBSCertList), outer = inner signature algorithm, BR encoding.
    assert der_children(tbs)[0] == bytes.fromhex("020101")
    assert outer_algorithm == SIGNATURE_ALGORITHMS[(authority.signer.key_type, authority.hash)]
    assert raw_crl_issuer_der(crl.tbs_certlist_bytes) == raw_subject_der(authority.certificate)
    assert crl.is_signature_valid(authority.signer.public_key)
    # CP Table 7.2.2: validity 96 hours; BR: at most 10 days.
    assert crl.last_update_utc == env.clock.now().replace(microsecond=0)
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=96)
    # Exactly CRL Number and AKI (keyIdentifier only), both non-critical; no IDP.
    oids = [e.oid for e in crl.extensions]
    assert sorted(o.dotted_string for o in oids) == sorted(
        [ExtensionOID.CRL_NUMBER.dotted_string, ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string]
    )
    assert all(not e.critical for e in crl.extensions)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = authority.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.value.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == record.number and 0 < number < 2**159


async def test_br_crl_2_number_strictly_increasing(env: StatusEnv) -> None:
    authority = env.authority("dv-rsa")

    async def next_number(repository: StatusRepository) -> int:
        record = await publish(env, authority.name, repository=repository)
        assert record is not None
        return record.number

    first = [await next_number(env.repository) for _ in range(3)]
    # Two "workers" at once, each with its own pool.
    other_pool = await create_pool(env.dsn, max_size=2)
    try:
        concurrent = await asyncio.gather(
            *(
                next_number(StatusRepository(p))
                for p in (env.pool, other_pool, env.pool, other_pool)
            )
        )
        # A "restart": a new process's repository continues the sequence.
        after_restart = await next_number(StatusRepository(other_pool))
    finally:
        await other_pool.close()
    numbers = [*first, *sorted(concurrent), after_restart]
    assert numbers == sorted(set(numbers)), numbers
    assert len(set(concurrent)) == 4 and min(concurrent) > max(first)
    # Even with the counter row lost, the next number is above every stored one.
    await env.pool.execute("DELETE FROM crl_numbers")
    assert await next_number(env.repository) > after_restart
    latest = await env.repository.latest_crl("dv-rsa")
    assert latest is not None
    history = await env.repository.crl_history("dv-rsa")
    assert latest.number == history[0].number == max(r.number for r in history)
    assert len(history) == 9  # every CRL kept


REASONS = {
    0: None,
    1: x509.ReasonFlags.key_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    9: x509.ReasonFlags.privilege_withdrawn,
}


async def test_br_crl_3_reason_codes(env: StatusEnv) -> None:
    now = env.clock.now()
    revoked: dict[int, tuple[int, datetime]] = {}
    for reason in REASONS:
        at = now - timedelta(minutes=reason + 1, microseconds=123456)
        row_id, serial = await env.add_certificate("dv-ecc")
        await env.revoke(row_id, reason, at)
        revoked[int(serial, 16)] = (reason, at)
    # Not listed: unrevoked, expired-and-revoked (entries stay until expiry only), and the
    # other issuer's revocations.
    _, good = await env.add_certificate("dv-ecc")
    _, expired = await env.add_certificate(
        "dv-ecc", not_after=now - timedelta(seconds=1), revoked_at=now - timedelta(days=2), reason=1
    )
    other_id, other = await env.add_certificate("dv-rsa")
    await env.revoke(other_id, 1)

    record = await publish(env, "dv-ecc")
    assert record is not None and record.entries == len(REASONS)
    crl = x509.load_der_x509_crl(record.der)
    listed = {entry.serial_number: entry for entry in crl}
    assert set(listed) == set(revoked)
    for serial_number, (reason, at) in revoked.items():
        entry = listed[serial_number]
        assert entry.revocation_date_utc == at.replace(microsecond=0)
        if REASONS[reason] is None:
            assert len(entry.extensions) == 0, "unspecified (0) is written without reasonCode"
        else:
            ext = entry.extensions.get_extension_for_class(x509.CRLReason)
            assert not ext.critical
            assert ext.value.reason == REASONS[reason]
            assert len(entry.extensions) == 1
    for absent in (good, expired, other):
        assert int(absent, 16) not in listed


async def test_br_crl_3_forbidden_reason_is_never_written(env: StatusEnv) -> None:
    """certificateHold (6) cannot come from the RA; should a row carry it anyway, the serial
    is still listed, without a reasonCode, and the CRL still lints clean."""
    _, serial = await env.add_certificate("dv-rsa", revoked_at=env.clock.now(), reason=6)
    with capture_logs() as logs:
        record = await publish(env, "dv-rsa")
    assert record is not None
    (entry,) = list(x509.load_der_x509_crl(record.der))
    assert entry.serial_number == int(serial, 16) and len(entry.extensions) == 0
    assert any(e["event"] == "crl.reason_not_allowed" for e in logs)


@pytest.mark.skipif(not LINT_CRL.exists(), reason="pkilint not installed in .venv")
async def test_lint_4_published_crls_lint_clean(env: StatusEnv, tmp_path: Path) -> None:
    row_id, _ = await env.add_certificate("dv-rsa")
    await env.revoke(row_id, 1)
    row_id, _ = await env.add_certificate("dv-rsa")
    await env.revoke(row_id, 0)
    await env.updater().publish_all_crls()
    for name in ISSUERS + ROOTS:
        record = await env.repository.latest_crl(name)
        assert record is not None
        path = tmp_path / f"{name}.crl"
        path.write_bytes(record.der)
        result = await asyncio.to_thread(
            pkilint, LINT_CRL, "lint", "-t", "CRL", "-p", "BR", "-s", "ERROR", path
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


class _FailingLinter(CertificateLinter):
    async def alint_crl(self, der: bytes) -> LintReport:
        return LintReport(
            "CRL",
            (LintFinding(Severity.ERROR, "test.blocking", "injected", "crl", "test"),),
        )


async def test_blocking_lint_finding_stops_publication(env: StatusEnv) -> None:
    authority = env.authority("dv-rsa")
    before = await publish(env, authority.name)
    with capture_logs() as logs:
        result = await publish(env, authority.name, linter=_FailingLinter())
    assert result is None
    failed = [e for e in logs if e["event"] == "crl.lint_failed"]
    assert failed and failed[0]["log_level"] == "error"
    assert "test.blocking" in failed[0]["findings"][0]
    latest = await env.repository.latest_crl("dv-rsa")
    assert before is not None and latest is not None and latest.number == before.number


# ------------------------------------------------------------------ when CRLs are published


async def test_br_crl_1_republished_every_interval(env: StatusEnv) -> None:
    updater = env.updater()
    await updater.publish_all_crls()
    first = await env.repository.latest_crls()
    env.clock.advance(timedelta(hours=23, minutes=59))
    await updater.publish_due_crls()
    assert {n: r.number for n, r in (await env.repository.latest_crls()).items()} == {
        n: r.number for n, r in first.items()
    }
    env.clock.advance(timedelta(minutes=1))
    with capture_logs() as logs:
        await updater.publish_due_crls()
    assert sorted(e["issuer"] for e in logs if e["event"] == "crl.published") == sorted(
        ISSUERS + ROOTS
    )
    assert all(e["trigger"] == "interval" for e in logs if e["event"] == "crl.published")
    second = await env.repository.latest_crls()
    assert all(second[n].number > first[n].number for n in first)


async def test_br_crl_1_revocation_missed_by_notify_is_caught_by_poll(env: StatusEnv) -> None:
    updater = env.updater()
    await updater.publish_all_crls()
    _, serial = await env.add_certificate("dv-rsa", revoked_at=env.clock.now(), reason=4)
    with capture_logs() as logs:
        await updater.publish_due_crls()
    published = [e for e in logs if e["event"] == "crl.published"]
    assert [(e["issuer"], e["trigger"]) for e in published] == [("dv-rsa", "entries_changed")]
    latest = await env.repository.latest_crl("dv-rsa")
    assert latest is not None
    assert int(serial, 16) in {e.serial_number for e in x509.load_der_x509_crl(latest.der)}


async def test_br_crl_1_revocation_republished_within_seconds(env: StatusEnv) -> None:
    """The running updater, woken by the revocation's NOTIFY (poll far away)."""
    updater = env.updater(clock=SystemClock(), poll_seconds=3600.0)
    stop = asyncio.Event()
    task = asyncio.create_task(updater.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while len(await env.repository.latest_crls()) < len(ISSUERS + ROOTS):
            assert asyncio.get_running_loop().time() < deadline, "start-up CRLs missing"
            await asyncio.sleep(0.05)
        start = await env.repository.latest_crl("dv-ecc")
        assert start is not None
        row_id, serial = await env.add_certificate("dv-ecc")
        await env.revoke(row_id, 1, datetime.now(UTC))
        began = asyncio.get_running_loop().time()
        while True:
            latest = await env.repository.latest_crl("dv-ecc")
            assert latest is not None
            if latest.number > start.number:
                break
            # Far sooner than the 3600 s poll: the NOTIFY woke the updater.
            assert asyncio.get_running_loop().time() - began < 60, "no CRL within 60 s"
            await asyncio.sleep(0.05)
        entries = {e.serial_number for e in x509.load_der_x509_crl(latest.der)}
        assert int(serial, 16) in entries
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_br_7_1_2_9_revoked_precertificate_without_certificate_is_listed(
    env: StatusEnv,
) -> None:
    """KC-4: a revoked precertificate whose certificate was never stored is a CRL entry; one
    whose certificate exists is listed once, as the certificate."""
    now = env.clock.now()
    order_id = await env.pool.fetchval(
        "INSERT INTO orders (account_id, status, identifiers, expires_at, created_at, "
        "updated_at) VALUES ($1, 'invalid', '[]', $2, $2, $2) RETURNING id",
        env.account_id,
        now,
    )
    serials = []
    for i in range(2):
        job_id = await env.pool.fetchval(
            "INSERT INTO issuance_jobs (order_id, account_id, csr_der, names, status, "
            "created_at, updated_at) VALUES ($1, $2, '', '[]', 'failed', $3, $3) RETURNING id",
            order_id
            if i == 0
            else await env.pool.fetchval(
                "INSERT INTO orders (account_id, status, identifiers, expires_at, created_at, "
                "updated_at) VALUES ($1, 'valid', '[]', $2, $2, $2) RETURNING id",
                env.account_id,
                now,
            ),
            env.account_id,
            now,
        )
        serial = format(secrets.randbits(127) | 1 << 120, "x")
        await env.pool.execute(
            "INSERT INTO precertificates (job_id, order_id, account_id, serial, issuer, der, "
            "not_before, not_after, created_at) SELECT $1, order_id, account_id, $2, 'dv-ecc', "
            "'\\x3000', $3, $4, $3 FROM issuance_jobs WHERE id = $1",
            job_id,
            serial,
            now - timedelta(hours=1),
            now + timedelta(days=90),
        )
        serials.append(serial)
    paired = serials[1]
    await env.add_certificate("dv-ecc", serial=int(paired, 16))
    for serial in serials:
        assert (
            await CertificateRepository(env.pool).revoke(serial, reason=4, now=now, actor="test")
            is RevocationOutcome.REVOKED
        )
    record = await publish(env, "dv-ecc")
    assert record is not None and record.entries == 2
    listed = [entry.serial_number for entry in x509.load_der_x509_crl(record.der)]
    assert sorted(listed) == sorted(int(s, 16) for s in serials)
