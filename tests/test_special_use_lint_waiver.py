"""Test mode waives only pkilint's internal-name finding for special-use names, and logs each
waiver (issue 21 item 7): a certificate for ``ci.test`` passes pre-issuance linting with the
waiver and is blocked without it; a certificate for ``ci.test`` that breaks another rule is
still blocked, by that rule alone.  Real pkilint on certificates built by the real profile."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.ca.issuance_lint import INTERNAL_NAME_FINDING, IssuanceLint
from acme_ca.ca.lint import CertificateLinter
from acme_ca.clock import FixedClock
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import IssuanceJob, Step
from acme_ca.ra.identifiers import IdentifierPolicy
from tests.support.profile import SIGNING_TIME, make_hierarchy, prepare, request

NAMES = ("ci.test",)
POISON = "cabf.serverauth.subscriber.precert_poison_extension_present"


def _job(names: tuple[str, ...]) -> IssuanceJob:
    """A job's view; id -1 matches no row, so a failed lint changes nothing in the database."""
    return IssuanceJob(
        id=-1,
        order_id=-1,
        account_id=-1,
        csr_der=b"",
        names=names,
        status="running",
        step=Step.QUEUED,
        attempts=1,
        deferrals=0,
        issuer="dv-ecc",
        created_at=SIGNING_TIME,
        locked_by=None,
        profile="dv",
    )


@pytest.fixture(scope="module")
def certificates() -> tuple[bytes, bytes]:
    """(a final certificate for ci.test, its precertificate: poisoned, wrong as a final)."""
    issuer = make_hierarchy().p256
    req = request(ec.generate_private_key(ec.SECP256R1()).public_key(), names=NAMES)
    final = prepare(issuer, req).lint_der
    pre = prepare(issuer, req, precertificate=True).lint_der
    return final, pre


def _lint(pool: asyncpg.Pool, linter: CertificateLinter, *, test_mode: bool) -> IssuanceLint:
    policy = IdentifierPolicy(special_use_names=True)
    return IssuanceLint(
        IssuanceRepository(pool),
        linter,
        FixedClock(datetime(2026, 11, 22, 12, tzinfo=UTC)),
        internal_name_waiver=policy.is_special_use if test_mode else None,
    )


async def test_br_7_1_2_7_12_test_mode_waives_only_the_internal_name_finding(
    pool: asyncpg.Pool, linter: CertificateLinter, certificates: tuple[bytes, bytes]
) -> None:
    final, pre = certificates
    report = await linter.alint(final, "DV-FINAL-CERTIFICATE", SIGNING_TIME)
    assert [f.code for f in report.blocking] == [INTERNAL_NAME_FINDING], report.describe()

    with structlog.testing.capture_logs() as logs:
        ok, _ = await _lint(pool, linter, test_mode=True).ok(
            _job(NAMES), final, "DV-FINAL-CERTIFICATE", SIGNING_TIME
        )
    assert ok
    waivers = [e for e in logs if e["event"] == "issuance.lint_waived"]
    assert len(waivers) == 1 and INTERNAL_NAME_FINDING in waivers[0]["finding"], logs
    assert waivers[0]["names"] == list(NAMES)

    # production policy: the same certificate is blocked by that finding
    with structlog.testing.capture_logs() as logs:
        ok, _ = await _lint(pool, linter, test_mode=False).ok(
            _job(NAMES), final, "DV-FINAL-CERTIFICATE", SIGNING_TIME
        )
    assert not ok
    (failed,) = [e for e in logs if e["event"] == "issuance.lint_failed"]
    assert [INTERNAL_NAME_FINDING in f for f in failed["findings"]] == [True]

    # test mode, another rule broken (a poisoned certificate linted as a final one): blocked,
    # by the other rule alone; the internal-name finding is still waived and logged
    with structlog.testing.capture_logs() as logs:
        ok, _ = await _lint(pool, linter, test_mode=True).ok(
            _job(NAMES), pre, "DV-FINAL-CERTIFICATE", SIGNING_TIME
        )
    assert not ok
    (failed,) = [e for e in logs if e["event"] == "issuance.lint_failed"]
    assert failed["findings"] and all(POISON in f for f in failed["findings"]), failed
    assert [e for e in logs if e["event"] == "issuance.lint_waived"]
