"""The re-checks the signing worker makes just before the precertificate is signed (issue 19).

Real PostgreSQL, a development hierarchy with software keys (each signer wrapped to count what
the "HSM" is asked to sign), the real pre-issuance linter, real in-process CT test logs, and a
real validation authority whose CAA lookups go to the challenge test server's DNS.  Time is a
:class:`FixedClock` shared by the worker, the VA and the CT logs, so a test can stand just
before or just after a Baseline Requirements deadline.

Orders are inserted as the ACME flow leaves them (``tests.support.worker.insert_ready_order``: a
valid authorization per name whose challenge carries the VA's records); the records of a
corroborated validation are written in the shape ``va/mpic.py`` writes them.  Every refusal
must leave: the order invalid with a problem naming the rule, an ``issuance.failed`` audit row,
no precertificate, no certificate, and no signature asked of the signer.

The pure rules of :mod:`acme_ca.ca.recheck` are pinned down first, without a database.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dns import rdatatype as dns_rdatatype

from acme_ca.acme import problems
from acme_ca.br import RULE_ORGANIZATION
from acme_ca.ca import recheck
from acme_ca.ca.ct.loglist import StaticLogList, parse_log_list
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.issuance_profiles import profile_settings_factory
from acme_ca.ca.issuers import IssuerSet, load_issuers
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import IssuanceSettings, IssuerSettings
from acme_ca.ca.signing_checks import SigningGuard
from acme_ca.ca.worker import SigningWorker
from acme_ca.clock import FixedClock
from acme_ca.config import Config
from acme_ca.db.certificates import CertificateRepository
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import AuthorizationEvidence
from acme_ca.db.organizations import OrganizationRepository
from acme_ca.deployment import Assessment, Shape, signing_guard
from acme_ca.keyid import spki_sha256
from acme_ca.ra.organizations import OrganizationPolicy
from acme_ca.ra.revocation import RevocationAuthority
from acme_ca.testsrv.ct_log_set import TestCtLogs
from acme_ca.testsrv.ct_logs_runner import accepted_roots
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.testsrv.store import CaaPolicy
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.perspectives import Location, Perspective
from acme_ca.va.records import Method, ValidationRecord
from acme_ca.va.settings import VASettings
from acme_ca.va.setup import build_validation_authority
from tests.support import mpic as mpic_tests
from tests.support.ct import three_operators
from tests.support.organizations import add_organization
from tests.support.problems import ERR
from tests.support.worker import (
    FAST,
    RecordsFor,
    WrappedSigner,
    build_csr,
    insert_ready_order,
    make_pki_config,
    primary_records,
    wrap_issuers,
)

NAMES = ("www.recheck.example.com", "recheck.example.com")
#: Four remotes in two RIRs: enough for 2026-06-15 .. 2026-12-14, one short from 2026-12-15.
FOUR = (("us-east", "ARIN"), ("us-west", "ARIN"), ("eu-west", "RIPE NCC"), ("eu-north", "RIPE NCC"))
FIVE = (*FOUR, ("ap-south", "APNIC"))
Records = RecordsFor
#: Quick CT settings, with a deadline long enough for a job to wait hours in CT backoff.
CT_SETTINGS = replace(FAST, deadline=timedelta(hours=12))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def corroborated(
    remotes: Sequence[tuple[str, str]], failing: int = 0, quorum: str | None = None
) -> Records:
    """The records of a validation corroborated by ``remotes`` (the last ``failing`` of them
    did not corroborate), as ``va/mpic.py`` writes them: the primary's records, one summary
    per remote, and the primary's quorum record (``quorum`` overrides its count)."""

    def build(name: str, method: Method, when: datetime) -> list[dict[str, Any]]:
        host = name.removeprefix("*.")
        out = primary_records(name, method, when)
        ok = len(remotes) - failing
        for i, (pid, rir) in enumerate(remotes):
            agrees = i < ok
            out.append(
                ValidationRecord(
                    method=method,
                    hostname=host,
                    query=f"corroborate dcv {method} {host}",
                    at=when,
                    perspective=pid,
                    rir=rir,
                    corroborated=agrees,
                    response="corroborated" if agrees else None,
                    error=None if agrees else "observed another key authorization",
                ).to_json()
            )
        out.append(
            ValidationRecord(
                method=method,
                hostname=host,
                query="multi-perspective corroboration (BR 3.2.2.9) of dcv",
                at=when,
                corroborated=failing <= 1,
                quorum=quorum or f"{ok}/{len(remotes)}",
            ).to_json()
        )
        return out

    return build


# --------------------------------------------------------------------------- pure rules


def evidence(
    *,
    validated_at: datetime,
    records: Records = primary_records,
    name: str = "recheck.example.com",
    status: str = "valid",
    caa_checked_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> AuthorizationEvidence:
    return AuthorizationEvidence(
        authz_id=1,
        identifier=name.removeprefix("*."),
        wildcard=name.startswith("*."),
        status=status,
        expires_at=expires_at or validated_at + timedelta(days=200),
        validated_at=validated_at,
        caa_checked_at=caa_checked_at,
        method="http-01",
        # A list of JSON objects (AuthorizationEvidence.records), built from the dicts.
        records=list(records(name, "http-01", validated_at)),
    )


@pytest.mark.parametrize(
    ("signing", "validated", "refused"),
    [
        ("2027-03-14T23:59:59", "2026-10-15T00:00:00", False),  # 150 days, limit 200
        ("2027-03-15T00:00:00", "2026-10-16T00:00:00", True),  # 150 days, limit 100
        ("2027-03-15T00:00:00", "2026-12-05T00:00:00", False),  # 100 days exactly
        ("2027-03-15T00:00:00", "2026-12-04T23:59:59", True),  # 100 days and a second
    ],
    ids=["150d-on-03-14", "150d-on-03-15", "100d-on-03-15", "100d+1s-on-03-15"],
)
def test_br_reuse_1_limit_is_the_signing_dates(signing: str, validated: str, refused: bool) -> None:
    found = recheck.reuse_refusal(
        "recheck.example.com", evidence(validated_at=at(validated)), at(signing)
    )
    assert (found is not None) == refused
    if found is not None:
        assert found.rule == recheck.RULE_REUSE
        assert found.problem.type == ERR + "unauthorized"
        assert "BR 4.2.1" in found.problem.detail and "at most 100 days" in found.problem.detail


@pytest.mark.parametrize(
    ("signing", "days", "refused"),
    [
        ("2027-03-14T23:59:59", 200, False),
        ("2027-03-14T23:59:59", 201, True),
        ("2027-03-15T00:00:00", 100, False),
        ("2027-03-15T00:00:00", 199, True),
    ],
    ids=["200d-on-03-14", "201d-on-03-14", "100d-on-03-15", "199d-on-03-15"],
)
def test_br_val_1_validity_is_within_the_signing_dates_maximum(
    signing: str, days: int, refused: bool
) -> None:
    not_before = at(signing) - timedelta(hours=1)
    not_after = not_before + timedelta(days=days) - timedelta(seconds=1)  # inclusive count
    found = recheck.validity_refusal(not_before, not_after, at(signing))
    assert (found is not None) == refused
    if found is not None:
        assert found.problem.type == ERR + "serverInternal"
        assert "BR 6.3.2" in found.problem.detail


@pytest.mark.parametrize(
    ("records", "production", "validated", "reason"),
    [
        (corroborated(FOUR), True, "2026-12-14T10:00:00", None),
        (corroborated(FOUR, failing=1), True, "2026-12-14T10:00:00", None),  # 3/4: one may fail
        (corroborated(FOUR), True, "2026-12-15T00:00:00", "requires at least 5"),
        (corroborated(FIVE, failing=2), True, "2026-12-15T00:00:00", "at most 1 may not"),
        (corroborated(FIVE, failing=2), False, "2026-12-15T00:00:00", "at most 1 may not"),
        (primary_records, True, "2026-12-03T00:00:00", "requires at least 4"),
        (primary_records, False, "2026-12-03T00:00:00", None),  # development: relaxed
        (
            corroborated(FIVE, quorum="5/5", failing=1),
            True,
            "2026-12-15T00:00:00",
            "records quorum 5/5 but its perspectives give 4/5",
        ),
        (
            corroborated(
                (
                    ("us-east", "ARIN"),
                    ("us-west", "ARIN"),
                    ("us-central", "ARIN"),
                    ("ca-east", "ARIN"),
                )
            ),
            True,
            "2026-12-14T10:00:00",
            "RIR",
        ),
    ],
    ids=[
        "4of4-on-12-14",
        "3of4-on-12-14",
        "4of4-on-12-15",
        "3of5",
        "3of5-development",
        "none-production",
        "none-development",
        "quorum-mismatch",
        "one-rir",
    ],
)
def test_br_mpic_recorded_corroboration_meets_the_rule_of_its_date(
    records: Records, production: bool, validated: str, reason: str | None
) -> None:
    found = recheck.corroboration_refusal(
        "recheck.example.com",
        evidence(validated_at=at(validated), records=records),
        production=production,
    )
    if reason is None:
        assert found is None
        return
    assert found is not None
    assert found.rule == recheck.RULE_CORROBORATION
    assert found.problem.type == ERR + "unauthorized"
    assert "BR 3.2.2.9" in found.problem.detail and reason in found.problem.detail


@pytest.mark.parametrize(
    ("behaviours", "passed"),
    [
        ({}, True),  # 5/5
        ({"a1": mpic_tests.agree("other")}, True),  # 4/5, one may fail
        ({"a4": "hang"}, True),  # decided at 4/5, a4 cut off ("not awaited")
        ({"a1": mpic_tests.agree("x"), "a2": mpic_tests.agree("y")}, False),  # 3/5
        ({"r1": mpic_tests.agree("other")}, False),  # one RIR left among the corroborating
    ],
    ids=["5of5", "4of5", "decided-early", "3of5", "one-rir"],
)
async def test_br_mpic_recheck_reads_what_the_mpic_validator_records(
    behaviours: dict[str, Any], passed: bool
) -> None:
    """The re-check recomputes the quorum from the records the real MpicValidator writes
    (its remotes answering through the test transport of tests/test_mpic_validator.py) and
    comes to the validator's own verdict, cut-off remotes included."""
    cancelled: list[str] = []
    transport = mpic_tests.FakeTransport(
        {pid: mpic_tests.hang(cancelled) if b == "hang" else b for pid, b in behaviours.items()}
    )
    result = await mpic_tests.validate(mpic_tests.validator(transport, timeout=30))
    assert result.ok is passed
    ev = AuthorizationEvidence(
        authz_id=1,
        identifier="example.com",
        wildcard=False,
        status="valid",
        expires_at=mpic_tests.DEC_2026 + timedelta(days=1),
        validated_at=mpic_tests.DEC_2026,
        caa_checked_at=None,
        method="dns-01",
        records=[r.to_json() for r in result.records],
    )
    found = recheck.corroboration_refusal("example.com", ev, production=True)
    assert (found is None) is passed, found


def test_fc_4_caa_age_counts_from_the_primarys_check_or_the_last_recheck() -> None:
    validated = at("2026-12-03T08:00:00")
    ev = evidence(validated_at=validated)
    assert recheck.caa_checked_at(ev) == validated
    # Rechecked before 8 hours are over (the signing margin), never after.
    assert not recheck.caa_stale(ev, validated + timedelta(hours=7, minutes=54))
    assert recheck.caa_stale(ev, validated + timedelta(hours=7, minutes=56))
    later = validated + timedelta(hours=9)
    assert recheck.caa_checked_at(replace(ev, caa_checked_at=later)) == later
    assert not recheck.caa_stale(replace(ev, caa_checked_at=later), later + timedelta(hours=1))
    # No CAA record at all (e.g. always_valid test mode): no evidence, so rechecked.
    bare = replace(ev, records=[r for r in ev.records if r["method"] != "caa"])
    assert recheck.caa_checked_at(bare) is None and recheck.caa_stale(bare, validated)


def test_rfc8555_authorizations_still_valid_at_signing() -> None:
    now = at("2026-12-03T12:00:00")
    ok = evidence(validated_at=now - timedelta(hours=1))
    assert recheck.authorization_refusal("recheck.example.com", ok, now) is None
    for ev, text in [
        (None, "no authorization"),
        (replace(ok, status="deactivated"), "deactivated"),
        (replace(ok, expires_at=now), "expired"),
        (replace(ok, method=None), "no valid challenge"),
    ]:
        found = recheck.authorization_refusal("recheck.example.com", ev, now)
        assert found is not None and text in found.problem.detail
        assert found.problem.type == ERR + "unauthorized"
    # Several refusals: one compound problem with a subproblem each (RFC 8555 §6.7.1).
    several = recheck.refusals(
        ["recheck.example.com", "www.recheck.example.com"],
        [replace(ok, status="revoked")],
        not_before=now,
        not_after=now + timedelta(days=10),
        now=now,
        production=False,
    )
    problem = recheck.problem_for(several)
    assert problem.type == ERR + "compound"
    assert [p.identifier.value for p in problem.subproblems if p.identifier] == [
        "recheck.example.com",
        "www.recheck.example.com",
    ]


# --------------------------------------------------------------------------- the worker


@pytest.fixture(scope="module")
def pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_pki_config(tmp_path_factory.mktemp("recheck-pki"))


@pytest.fixture
async def dns() -> AsyncIterator[ChallengeTestServer]:
    """CAA answers for the VA: none at first (issuance allowed), tests add records."""
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(http01=False)) as server:
        yield server


@dataclass
class Rig:
    pool: asyncpg.Pool
    config: Config
    issuers: IssuerSet
    signers: dict[str, WrappedSigner]
    linter: CertificateLinter
    clock: FixedClock
    logs: TestCtLogs
    source: StaticLogList
    va: ValidationAuthority
    cts: list[CertificateTransparency]

    def worker(
        self,
        *,
        production: bool = True,
        guard: SigningGuard | None = None,
        worker_id: str = "w1",
        organizations: OrganizationRepository | None = None,
    ) -> SigningWorker:
        ct = CertificateTransparency(self.source, self.clock, CT_SETTINGS)
        self.cts.append(ct)
        return SigningWorker(
            IssuanceRepository(self.pool),
            self.issuers,
            self.linter,
            self.clock,
            profile_for=profile_settings_factory(IssuanceSettings.from_config(self.config)),
            worker_id=worker_id,
            ct=ct,
            production=production,
            signing_guard=guard,
            caa=self.va,
            account_uri=lambda account_id: f"https://acme.test/acme/acct/{account_id}",
            # The RA's OV rule, as main/worker.py hands it to the worker.
            organizations=None
            if organizations is None
            else OrganizationPolicy(organizations, self.clock),
        )

    async def queue(
        self,
        *,
        validated_at: datetime,
        records: Records = primary_records,
        names: Sequence[str] = NAMES,
        csr_der: bytes | None = None,
        issuer: str | None = None,
    ) -> int:
        """A ready order for ``names`` validated at ``validated_at``, queued now (for the
        ECDSA DV issuer unless ``issuer`` names another)."""
        account_id, order_id = await insert_ready_order(
            self.pool, names, now=self.clock.now(), validated_at=validated_at, records=records
        )
        assert await IssuanceRepository(self.pool).enqueue(
            order_id=order_id,
            account_id=account_id,
            csr_der=csr_der or build_csr(names),
            names=list(names),
            issuer=issuer or self.config.ecdsa_issuer,
            now=self.clock.now(),
        )
        return order_id

    @property
    def hsm_signatures(self) -> int:
        return self.signers[self.config.ecdsa_issuer].calls


@pytest.fixture
async def rig(
    pool: asyncpg.Pool, pki_config: Config, linter: CertificateLinter, dns: ChallengeTestServer
) -> AsyncIterator[Rig]:
    clock = FixedClock(at("2026-12-03T08:00:00"))
    loaded = await load_issuers(IssuerSettings.from_config(pki_config))
    issuers, signers = wrap_issuers(loaded)
    va = build_validation_authority(
        VASettings.from_config(
            replace(pki_config, dns_resolver=f"127.0.0.1:{dns.dns_port}", dnssec="off")
        ),
        clock,
    )
    async with TestCtLogs(three_operators(), accepted_roots(pki_config), clock=clock) as logs:
        r = Rig(
            pool,
            pki_config,
            issuers,
            signers,
            linter,
            clock,
            logs,
            StaticLogList(parse_log_list(logs.log_list())),
            va,
            [],
        )
        try:
            yield r
        finally:
            for ct in r.cts:
                await ct.aclose()
            await va.aclose()
            await loaded.aclose()


async def run(worker: SigningWorker) -> None:
    assert await worker.run_once(), "no job to take"


async def issued(pool: asyncpg.Pool, order_id: int) -> None:
    order = await pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    assert order["status"] == "valid", order
    assert (
        await pool.fetchval("SELECT count(*) FROM precertificates WHERE order_id = $1", order_id)
        == 1
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM certificates WHERE order_id = $1", order_id) == 1
    )


async def refused(rig: Rig, order_id: int, rule: str, problem_type: str) -> dict[str, Any]:
    """The order failed for ``rule`` and nothing was signed; returns the audit details."""
    order = await rig.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    job = await rig.pool.fetchrow("SELECT * FROM issuance_jobs WHERE order_id = $1", order_id)
    assert order["status"] == "invalid", order
    assert order["error"]["type"] == ERR + problem_type, order["error"]
    assert rule in order["error"]["detail"] and "nothing was signed" in order["error"]["detail"]
    assert job["status"] == "failed" and job["precert_der"] is None and job["tbs_der"] is None
    assert (
        await rig.pool.fetchval(
            "SELECT count(*) FROM precertificates WHERE order_id = $1", order_id
        )
        == 0
    )
    assert (
        await rig.pool.fetchval("SELECT count(*) FROM certificates WHERE order_id = $1", order_id)
        == 0
    )
    rows = await rig.pool.fetch(
        "SELECT details FROM audit_events WHERE order_id = $1 AND event = 'issuance.failed'",
        order_id,
    )
    assert len(rows) == 1
    details: dict[str, Any] = rows[0]["details"]
    assert details["reason"] == "re-check before signing"
    assert any(rule in r["rule"] for r in details["refusals"]), details
    return details


async def caa_rechecks(pool: asyncpg.Pool, order_id: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT details FROM audit_events WHERE order_id = $1 AND event = 'caa.rechecked' "
        "ORDER BY id",
        order_id,
    )
    return [r["details"] for r in rows]


def caa_queries(dns: ChallengeTestServer, name: str) -> int:
    """CAA questions the challenge test server's DNS received for ``name``."""
    return sum(1 for e in dns.store.dns_history(name) if e.qtype == dns_rdatatype.CAA)


@pytest.mark.parametrize(
    ("waited", "rechecked"),
    [(timedelta(hours=7), False), (timedelta(hours=9), True)],
    ids=["7h-in-queue", "9h-in-queue"],
)
async def test_fc_4_caa_older_than_8_hours_is_redone_before_signing(
    rig: Rig, dns: ChallengeTestServer, waited: timedelta, rechecked: bool
) -> None:
    """CAA-9 / FC-4: a job that waited in the queue past 8 hours gets CAA checked again, its
    time recorded on the authorization, and is signed; one under 8 hours is not rechecked."""
    validated = rig.clock.now()
    order_id = await rig.queue(validated_at=validated)
    rig.clock.advance(waited)
    await run(rig.worker(production=False))
    await issued(rig.pool, order_id)
    audits = await caa_rechecks(rig.pool, order_id)
    stored = await rig.pool.fetch(
        "SELECT a.caa_checked_at FROM order_authorizations oa "
        "JOIN authorizations a ON a.id = oa.authz_id WHERE oa.order_id = $1",
        order_id,
    )
    if not rechecked:
        assert audits == [] and all(r["caa_checked_at"] is None for r in stored)
        assert all(caa_queries(dns, name) == 0 for name in NAMES)
        return
    assert sorted(a["identifier"] for a in audits) == sorted(NAMES)
    assert all(a["ok"] and a["records"] for a in audits)
    assert all(r["method"] == "caa" for a in audits for r in a["records"])
    assert all(r["caa_checked_at"] == validated + waited for r in stored)
    # The VA really asked the DNS for each name's CAA (RFC 8659: the climb starts at it).
    assert all(caa_queries(dns, name) >= 1 for name in NAMES)


@pytest.mark.parametrize(
    ("caa_at", "forbidden", "problem"),
    [
        ("www.recheck.example.com", {"www.recheck.example.com"}, "caa"),
        ("recheck.example.com", set(NAMES), "compound"),  # the climb finds it for both names
    ],
    ids=["one-name", "both-names"],
)
async def test_fc_4_caa_that_now_forbids_fails_the_order_and_signs_nothing(
    rig: Rig, dns: ChallengeTestServer, caa_at: str, forbidden: set[str], problem: str
) -> None:
    """CAA changed since the validation 9 hours ago: every stale name is rechecked (each
    audited), the names CAA now forbids are refused, and nothing is signed."""
    order_id = await rig.queue(validated_at=rig.clock.now())
    dns.store.add_caa(caa_at, [CaaPolicy("issue", "another-ca.example")])
    rig.clock.advance(timedelta(hours=9))
    await run(rig.worker(production=False))
    details = await refused(rig, order_id, "BR 3.2.2.8", problem)
    assert {r["identifier"] for r in details["refusals"]} == forbidden
    assert all(r["type"] == "caa" for r in details["refusals"])
    audits = await caa_rechecks(rig.pool, order_id)
    assert {a["identifier"]: a["ok"] for a in audits} == {n: n not in forbidden for n in NAMES}
    assert all(a["problem"]["type"] == ERR + "caa" for a in audits if not a["ok"])
    assert rig.hsm_signatures == 0
    # A name CAA still allows keeps its new check time; a forbidden one does not.
    stored = dict(
        await rig.pool.fetch(
            "SELECT a.identifier, a.caa_checked_at FROM order_authorizations oa "
            "JOIN authorizations a ON a.id = oa.authz_id WHERE oa.order_id = $1",
            order_id,
        )
    )
    assert {n for n, t in stored.items() if t is not None} == set(NAMES) - forbidden


async def test_fc_4_ct_retry_that_reenters_prepare_after_8_hours_redoes_caa(rig: Rig) -> None:
    """No usable CT log at first: the job is deferred before anything is signed; it comes back
    to prepare 10 hours after the validation, and CAA is checked again then."""
    usable = rig.logs.log_list()
    retired = copy.deepcopy(usable)
    for operator in retired["operators"]:
        for entry in operator["logs"] + operator["tiled_logs"]:
            entry["state"] = {"retired": {"timestamp": "2026-01-01T00:00:00Z"}}
    rig.source.replace(parse_log_list(json.dumps(retired)))
    validated = rig.clock.now()
    order_id = await rig.queue(validated_at=validated)
    rig.clock.advance(timedelta(hours=1))
    worker = rig.worker(production=False)
    await run(worker)
    job = await rig.pool.fetchrow("SELECT * FROM issuance_jobs WHERE order_id = $1", order_id)
    assert job["status"] == "queued" and job["deferrals"] == 1 and job["serial"] is None
    assert await caa_rechecks(rig.pool, order_id) == []  # 1 hour old: not rechecked
    rig.source.replace(parse_log_list(json.dumps(usable)))
    rig.clock.advance(timedelta(hours=9))
    await run(worker)
    await issued(rig.pool, order_id)
    audits = await caa_rechecks(rig.pool, order_id)
    assert len(audits) == len(NAMES) and all(a["ok"] for a in audits)
    assert {a["checked_at"] for a in audits} == {(validated + timedelta(hours=10)).isoformat()}


@pytest.mark.parametrize(
    ("signing", "accepted"),
    [("2027-03-14T12:00:00", True), ("2027-03-15T00:00:00", False)],
    ids=["2027-03-14", "2027-03-15"],
)
async def test_br_reuse_1_validation_150_days_old_signed_across_2027_03_15(
    rig: Rig, signing: str, accepted: bool
) -> None:
    """BR 4.2.1 (SC-081): 200 days of reuse until 2027-03-14, 100 from 2027-03-15; the limit
    is the signing date's, whatever it was when the order was made."""
    rig.clock.set(at(signing))
    validated = rig.clock.now() - timedelta(days=150)
    order_id = await rig.queue(validated_at=validated, records=corroborated(FOUR))
    await run(rig.worker())
    if accepted:
        await issued(rig.pool, order_id)
        assert len(await caa_rechecks(rig.pool, order_id)) == len(NAMES)  # 150 days > 8 h
        return
    details = await refused(rig, order_id, "BR 4.2.1", "compound")
    assert [r["rule"] for r in details["refusals"]] == [recheck.RULE_REUSE] * len(NAMES)
    assert rig.hsm_signatures == 0
    assert await caa_rechecks(rig.pool, order_id) == []  # refused before any lookup


async def test_br_val_1_job_prepared_2027_03_14_is_not_signed_2027_03_15(rig: Rig) -> None:
    """BR 6.3.2 (SC-081): prepared on 2027-03-14 with 199 days of validity, the signer fails;
    the job comes back after midnight, when 100 days is the most: it is refused."""
    rig.clock.set(at("2027-03-14T23:50:00"))
    order_id = await rig.queue(
        validated_at=rig.clock.now() - timedelta(hours=1), records=corroborated(FIVE)
    )
    signer = rig.signers[rig.config.ecdsa_issuer]
    signer.crash = True
    await run(rig.worker())
    job = await rig.pool.fetchrow("SELECT * FROM issuance_jobs WHERE order_id = $1", order_id)
    assert job["serial"] is not None and job["precert_der"] is None
    assert job["not_after"] - job["not_before"] == timedelta(days=199, seconds=-1)
    signer.crash = False
    tried = signer.calls
    rig.clock.set(at("2027-03-15T00:10:00"))
    assert rig.clock.now() > job["locked_until"]
    await run(rig.worker(worker_id="w2"))
    order = await rig.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    assert order["status"] == "invalid" and "BR 6.3.2" in order["error"]["detail"]
    assert order["error"]["type"] == ERR + "serverInternal"
    assert signer.calls == tried  # nothing more was asked of the HSM
    assert (
        await rig.pool.fetchval(
            "SELECT count(*) FROM precertificates WHERE order_id = $1", order_id
        )
        == 0
    )
    assert (
        await rig.pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE order_id = $1 AND event = 'issuance.failed'",
            order_id,
        )
        == 1
    )


def four_perspectives_guard() -> SigningGuard:
    """The real production guard (acme_ca.deployment) for a deployment with four remotes."""
    perspectives = tuple(
        Perspective(pid, rir, f"https://{pid}.mpic.test", Location(0.0, 10.0 * i))
        for i, (pid, rir) in enumerate(FOUR)
    )
    return signing_guard(
        Assessment(
            Shape.PRODUCTION, "imported hierarchy", at("2026-12-14T00:00:00"), (), perspectives
        )
    )


async def test_fc_2_four_perspectives_sign_on_2026_12_14_and_are_refused_on_2026_12_15(
    rig: Rig,
) -> None:
    """BR 3.2.2.9 (FC-2): a CA started on 2026-12-14 with 4 remote perspectives signs that day
    and refuses to sign on 2026-12-15, when 5 are required, even for an order validated (4/4,
    compliant then) on the 14th."""
    guard = four_perspectives_guard()
    rig.clock.set(at("2026-12-14T12:00:00"))
    first = await rig.queue(
        validated_at=rig.clock.now() - timedelta(hours=1), records=corroborated(FOUR)
    )
    await run(rig.worker(guard=guard))
    await issued(rig.pool, first)
    signed = rig.hsm_signatures
    assert signed == 2  # precertificate and certificate

    rig.clock.set(at("2026-12-14T23:00:00"))
    second = await rig.queue(validated_at=rig.clock.now(), records=corroborated(FOUR))
    rig.clock.set(at("2026-12-15T00:30:00"))
    await run(rig.worker(guard=guard))
    details = await refused(rig, second, recheck.RULE_GUARD, "serverInternal")
    assert "requires at least 5 from 2026-12-15" in details["refusals"][0]["detail"]
    assert rig.hsm_signatures == signed


@pytest.mark.parametrize(
    ("records", "production", "accepted"),
    [
        (primary_records, False, True),
        (primary_records, True, False),
        (corroborated((("us-east", "ARIN"), ("eu-west", "RIPE NCC"))), True, False),
        (corroborated(FOUR), True, True),
        (corroborated(FOUR, failing=2), True, False),
    ],
    ids=[
        "uncorroborated-development",
        "uncorroborated-production",
        "2-remotes-production",
        "4-remotes-production",
        "2of4-production",
    ],
)
async def test_br_mpic_2_3_corroboration_recorded_below_the_quorum_fails_the_order(
    rig: Rig, records: Records, production: bool, accepted: bool
) -> None:
    """BR 3.2.2.9: at signing, each validation's recorded corroboration must meet the rule of
    its date (2026-12-03: 4 remotes, 2 RIRs, one may fail); a development worker
    (production=False) relaxes it as validation does without perspectives."""
    order_id = await rig.queue(validated_at=rig.clock.now() - timedelta(minutes=5), records=records)
    await run(rig.worker(production=production))
    if accepted:
        await issued(rig.pool, order_id)
        return
    details = await refused(rig, order_id, "BR 3.2.2.9", "compound")
    assert {r["identifier"] for r in details["refusals"]} == set(NAMES)
    assert rig.hsm_signatures == 0


async def test_rfc8555_authorization_deactivated_after_finalize_is_not_signed(rig: Rig) -> None:
    order_id = await rig.queue(validated_at=rig.clock.now())
    await rig.pool.execute(
        "UPDATE authorizations SET status = 'deactivated' WHERE id = (SELECT authz_id FROM "
        "order_authorizations WHERE order_id = $1 AND position = 0)",
        order_id,
    )
    await run(rig.worker(production=False))
    details = await refused(rig, order_id, "authorization", "unauthorized")
    assert details["refusals"][0]["identifier"] == NAMES[0]
    assert rig.hsm_signatures == 0


async def test_kc_2_key_blocked_after_finalize_is_not_signed(rig: Rig) -> None:
    """BR 6.1.1.3(4) / 4.9.1.1: the CSR's key passed finalize, then an operator blocked it
    (``acme-ca admin block-key``: reported compromised) before the worker took the job: the
    order fails with badCSR naming the rule, nothing is signed; another key still is."""
    key = ec.generate_private_key(ec.SECP256R1())
    order_id = await rig.queue(validated_at=rig.clock.now(), csr_der=build_csr(NAMES, key=key))
    other = await rig.queue(validated_at=rig.clock.now(), names=["other.recheck.example.com"])
    blocked = await RevocationAuthority(CertificateRepository(rig.pool), rig.clock).block_key(
        spki_sha256(key.public_key()), actor="operator:test", reason="private key published"
    )
    assert blocked.certificates == 0  # nothing was signed with it yet
    worker = rig.worker(production=False)
    await run(worker)
    details = await refused(rig, order_id, "BR 6.1.1.3(4)", "badCSR")
    assert details["refusals"] == [
        {
            "rule": recheck.RULE_BLOCKED_KEY,
            "type": "badCSR",
            "detail": recheck.blocked_key_refusal(blocked.spki_sha256).problem.detail,
        }
    ]
    order = await rig.pool.fetchrow("SELECT error FROM orders WHERE id = $1", order_id)
    assert "BR 4.9.1.1" in order["error"]["detail"]
    assert blocked.spki_sha256.hex() in order["error"]["detail"]
    assert rig.hsm_signatures == 0
    await run(worker)
    await issued(rig.pool, other)


async def test_kc_2_blocked_key_and_authorizations_read_in_one_statement(rig: Rig) -> None:
    """BR 6.1.1.3(4) and RFC 8555 7.1.4: the signing re-check reads whether the CSR's key is
    blocked and the order's authorizations in one statement (issue 20: two before), in the
    order's positions, each with its valid challenge; a key blocked meanwhile shows in the
    same read."""
    key = ec.generate_private_key(ec.SECP256R1())
    order_id = await rig.queue(validated_at=rig.clock.now(), csr_der=build_csr(NAMES, key=key))
    jobs = IssuanceRepository(rig.pool)
    key_id = spki_sha256(key.public_key())
    blocked, evidence = await jobs.signing_evidence(order_id, key_id)
    assert not blocked
    assert [e.identifier for e in evidence] == list(NAMES)
    assert all(e.status == "valid" and e.method == "http-01" and e.records for e in evidence)
    await RevocationAuthority(CertificateRepository(rig.pool), rig.clock).block_key(
        key_id, actor="operator:test", reason="private key published"
    )
    blocked_now, again = await jobs.signing_evidence(order_id, key_id)
    assert blocked_now and again == evidence
    assert await jobs.signing_evidence(-1, key_id) == (True, [])  # no such order: no rows


async def test_a_worker_that_lost_its_lease_cannot_fail_the_job_it_refused(rig: Rig) -> None:
    """A refusal is written only while the refusing worker still holds the job: a worker
    whose lease lapsed during a slow recheck leaves the job to the one that took it over."""
    order_id = await rig.queue(validated_at=rig.clock.now())
    jobs = IssuanceRepository(rig.pool)
    problem = problems.server_internal("x")
    first = await jobs.claim("w1", now=rig.clock.now(), lease=timedelta(minutes=2))
    assert first is not None and first.order_id == order_id
    rig.clock.advance(timedelta(minutes=3))
    second = await jobs.claim("w2", now=rig.clock.now(), lease=timedelta(minutes=2))
    assert second is not None and second.id == first.id
    assert not await jobs.fail(first, problem, {"reason": "late"}, rig.clock.now(), held_by="w1")
    order = await rig.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    job = await rig.pool.fetchrow("SELECT * FROM issuance_jobs WHERE id = $1", first.id)
    assert order["status"] == "processing" and order["error"] is None
    assert job["status"] == "running" and job["locked_by"] == "w2"
    assert (
        await rig.pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE order_id = $1 AND event = 'issuance.failed'",
            order_id,
        )
        == 0
    )
    assert await jobs.fail(second, problem, {"reason": "now"}, rig.clock.now(), held_by="w2")


# --------------------------------------------------------------------------- OV (issue 15)


async def bind_to_new_organization(rig: Rig, order_id: int, vetted_at: datetime) -> int:
    """Bind the order's account to a new vetted organization, as ``acme-ca eab create
    --org`` and newAccount with that key do; returns the organization's id."""
    org = await add_organization(
        rig.pool, vetted_at, now=rig.clock.now(), actor="operator:test", name="Recheck K.K."
    )
    account_id = await rig.pool.fetchval("SELECT account_id FROM orders WHERE id = $1", order_id)
    kid = f"kid-ov-{order_id}"
    await rig.pool.execute(
        "INSERT INTO eab_keys (kid, hmac_key, created_at, organization_id, account_id, bound_at)"
        " VALUES ($1, $2, $3, $4, $5, $3)",
        kid,
        b"k" * 32,
        rig.clock.now(),
        org.id,
        account_id,
    )
    await rig.pool.execute("UPDATE accounts SET eab_kid = $1 WHERE id = $2", kid, account_id)
    return org.id


async def test_ov_organization_revoked_after_finalize_is_not_signed(rig: Rig) -> None:
    """OV-1 at signing time: a job of an OV issuer whose organization an operator revoked
    after finalize fails (unauthorized, naming the rule) and nothing is signed; a job whose
    account has no organization at all is refused the same way; the organization's vetting
    past the BR 4.2.1 period for the signing date is refused too."""
    organizations = OrganizationRepository(rig.pool)
    revoked = await rig.queue(validated_at=rig.clock.now(), issuer="ov-ecc")
    org_id = await bind_to_new_organization(rig, revoked, rig.clock.now() - timedelta(days=30))
    unbound = await rig.queue(
        validated_at=rig.clock.now(), issuer="ov-ecc", names=["unbound.recheck.example.com"]
    )
    stale = await rig.queue(
        validated_at=rig.clock.now(), issuer="ov-ecc", names=["stale.recheck.example.com"]
    )
    await bind_to_new_organization(rig, stale, rig.clock.now() - timedelta(days=399))
    assert await organizations.revoke(org_id, rig.clock.now(), "operator:test")
    worker = rig.worker(production=False, organizations=organizations)
    for _ in range(3):
        await run(worker)
    details = await refused(rig, revoked, RULE_ORGANIZATION, "unauthorized")
    assert f"organization {org_id} (Recheck K.K.) was revoked" in details["refusals"][0]["detail"]
    details = await refused(rig, unbound, RULE_ORGANIZATION, "unauthorized")
    assert "not bound to a vetted organization" in details["refusals"][0]["detail"]
    details = await refused(rig, stale, RULE_ORGANIZATION, "unauthorized")
    assert "399 days before" in details["refusals"][0]["detail"]
    assert rig.signers["ov-ecc"].calls == 0


def _policy_certificate(policy: str | None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "purpose.example.com")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at("2026-12-01T00:00:00"))
        .not_valid_after(at("2027-01-01T00:00:00"))
    )
    if policy is not None:
        builder = builder.add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(policy), None)]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("policy", "ov_issuer", "refused"),
    [
        ("2.23.140.1.2.2", True, False),
        ("2.23.140.1.2.1", False, False),
        (None, False, False),
        ("2.23.140.1.2.2", False, True),
        ("2.23.140.1.2.1", True, True),
        (None, True, True),
    ],
    ids=["ov-by-ov", "dv-by-dv", "none-by-dv", "ov-by-dv", "dv-by-ov", "none-by-ov"],
)
def test_ov_3_only_ov_issuers_sign_ov_certificates(
    policy: str | None, ov_issuer: bool, refused: bool
) -> None:
    """CP 7.1 / BR 7.1.2.10.5: whatever a profile chose, an OV certificate is signed only by
    an OV issuing CA and an OV issuing CA signs only OV certificates."""
    refusal = recheck.issuer_purpose_refusal("x-ecc", ov_issuer, _policy_certificate(policy))
    assert (refusal is not None) == refused
    if refusal is not None:
        assert refusal.rule == recheck.RULE_ISSUER_PURPOSE
        assert refusal.problem.type == ERR + "serverInternal"
        assert "nothing was signed" in refusal.problem.detail


async def test_ov_issuer_job_of_a_dv_certificate_is_not_signed(rig: Rig) -> None:
    """A job queued on an OV issuer whose prepared certificate is a DV one (a profile that
    picked the wrong issuer) is refused before the HSM is asked, even for a bound account."""
    order_id = await rig.queue(validated_at=rig.clock.now(), issuer="ov-ecc")
    await bind_to_new_organization(rig, order_id, rig.clock.now() - timedelta(days=1))
    await run(rig.worker(production=False, organizations=OrganizationRepository(rig.pool)))
    details = await refused(rig, order_id, recheck.RULE_ISSUER_PURPOSE, "serverInternal")
    assert "is an OV issuing CA but the certificate does not assert" in str(details)
    assert rig.signers["ov-ecc"].calls == 0


async def test_ov_issuer_job_without_an_organization_lookup_is_refused(rig: Rig) -> None:
    """Fail closed: a worker not given the organizations refuses every OV issuer's job, while
    a DV job of a bound account is not asked about organizations at all."""
    ov = await rig.queue(validated_at=rig.clock.now(), issuer="ov-ecc")
    await bind_to_new_organization(rig, ov, rig.clock.now() - timedelta(days=1))
    dv = await rig.queue(validated_at=rig.clock.now(), names=["dv.recheck.example.com"])
    worker = rig.worker(production=False)
    await run(worker)
    await refused(rig, ov, RULE_ORGANIZATION, "unauthorized")
    await run(worker)
    await issued(rig.pool, dv)
