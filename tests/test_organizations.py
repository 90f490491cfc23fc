"""Organizations for OV (issue 15; OV-1, OV-2): the vetted record, the accounts bound to it by
EAB, the BR 4.2.1 reuse period for Subject Identity Information, and the operator commands
(``acme-ca org``, ``eab create --org``, ``admin revoke --org``), on real PostgreSQL."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acme_ca.acme.b64 import b64url_decode
from acme_ca.acme.jwk import jwk_from_key
from acme_ca.acme.problems import AcmeError
from acme_ca.br import RULE_ORGANIZATION, max_dcv_reuse, max_identity_reuse
from acme_ca.ca.hierarchy import init_hierarchy
from acme_ca.ca.settings import HierarchySettings
from acme_ca.clock import FixedClock
from acme_ca.config import Config
from acme_ca.db.accounts import AccountRepository
from acme_ca.db.eab import EabKeyRepository, OrganizationUnavailable
from acme_ca.db.migrate import apply_schema
from acme_ca.db.organizations import Organization, OrganizationRepository, OrganizationStatus
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.ra.organizations import (
    OrganizationPolicy,
    organization_problem,
    ov_subject,
)
from tests.fixtures import CaFactory, RunningCa
from tests.support import status as status_support
from tests.support.accounts import bare_account
from tests.support.cli import run_cli
from tests.support.jws import JwsClient, Reply, make_eab
from tests.support.migrations import create_schema_before
from tests.support.organizations import add_organization
from tests.support.problems import assert_problem
from tests.support.status import StatusEnv

status_config = status_support.status_config
env = status_support.env

UNAUTHORIZED = "urn:ietf:params:acme:error:unauthorized"
SC081 = datetime(2026, 3, 15, tzinfo=UTC)
DCV_STEP = datetime(2027, 3, 15, tzinfo=UTC)
SECOND = timedelta(seconds=1)


async def add_org(
    pool: asyncpg.Pool, vetted_at: datetime, name: str = "Example Trading K.K."
) -> Organization:
    return await add_organization(
        pool, vetted_at, now=datetime.now(UTC), actor="operator:test", name=name
    )


async def bound_account(pool: asyncpg.Pool, organization_id: int | None) -> tuple[int, str]:
    """An account registered with a new EAB key (bound to ``organization_id`` if given),
    through the repositories newAccount uses; (account id, kid)."""
    kid = "kid-" + secrets.token_hex(6)
    now = datetime.now(UTC)
    await EabKeyRepository(pool).create(
        kid, secrets.token_bytes(32), "", now, "operator:test", organization_id=organization_id
    )
    jwk = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    account = await AccountRepository(pool).create(
        jwk=jwk, contact=(), tos_agreed=True, eab_kid=kid, now=now
    )
    return account.id, kid


async def audit(pool: asyncpg.Pool, event: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT at, actor, details FROM audit_events WHERE event = $1 ORDER BY id", event
    )
    return rows


# --------------------------------------------------------------------------- BR 4.2.1 table


def test_ov_2_identity_reuse_schedule_sc081() -> None:
    """BR 4.2.1 (SC-081): vetted Subject Identity Information may be reused for 825 days
    before 2026-03-15 and 398 days from then on; 2027-03-15 changes the DCV period only."""
    assert max_identity_reuse(SC081 - SECOND) == timedelta(days=825)
    assert max_identity_reuse(SC081) == timedelta(days=398)
    assert max_identity_reuse(DCV_STEP - SECOND) == max_identity_reuse(DCV_STEP)
    assert max_identity_reuse(datetime(2030, 1, 1, tzinfo=UTC)) == timedelta(days=398)
    assert max_dcv_reuse(DCV_STEP - SECOND) != max_dcv_reuse(DCV_STEP)  # the contrast


# --------------------------------------------------------------------------- the OV gate


async def require_at(pool: asyncpg.Pool, account_id: int, at: datetime) -> Organization:
    return await OrganizationPolicy(OrganizationRepository(pool), FixedClock(at)).require(
        account_id
    )


async def refused_at(pool: asyncpg.Pool, account_id: int, at: datetime) -> str:
    with pytest.raises(AcmeError) as caught:
        await require_at(pool, account_id, at)
    problem = caught.value.problem
    assert (problem.type, problem.status) == (UNAUTHORIZED, 403)
    assert problem.detail.startswith(RULE_ORGANIZATION)
    return problem.detail


async def test_ov_1_account_without_organization_is_refused(pool: asyncpg.Pool) -> None:
    """No EAB key, an EAB key bound to no organization, and a revoked EAB key: unauthorized."""
    now = datetime.now(UTC)
    org = await add_org(pool, now - timedelta(days=10))
    plain, _ = await bound_account(pool, None)
    assert "not bound to a vetted organization" in await refused_at(pool, plain, now)
    jwk_only = await bare_account(pool)
    assert "not bound" in await refused_at(pool, jwk_only, now)

    member, kid = await bound_account(pool, org.id)
    assert (await require_at(pool, member, now)).id == org.id
    assert await EabKeyRepository(pool).revoke(kid, now, "operator:test")
    assert "not bound" in await refused_at(pool, member, now), "the binding went with its key"


async def test_ov_revoked_organization_is_refused(pool: asyncpg.Pool) -> None:
    """Revoked: refused at once by every form of the gate (require for newOrder/finalize,
    check, and subject, which the worker builds the OV subject from); no new key binds."""
    now = datetime.now(UTC)
    org = await add_org(pool, now - timedelta(days=10))
    account, _ = await bound_account(pool, org.id)
    assert (await require_at(pool, account, now)).id == org.id
    policy = OrganizationPolicy(OrganizationRepository(pool), FixedClock(now + SECOND))
    assert await policy.check(account, now) is None
    assert await policy.subject(account) == ov_subject(org, None)
    repo = OrganizationRepository(pool)
    assert await repo.revoke(org.id, now, "operator:test")
    assert not await repo.revoke(org.id, now, "operator:test"), "revoked once"
    detail = await refused_at(pool, account, now + SECOND)
    assert f"organization {org.id} (Example Trading K.K.) was revoked" in detail
    problem = await policy.check(account, now + SECOND)
    assert problem is not None and problem.detail == detail
    assert await policy.subject(account) is None
    revoked = await repo.get(org.id)
    assert revoked is not None and revoked.status is OrganizationStatus.REVOKED
    with pytest.raises(OrganizationUnavailable, match="revoked"):
        await EabKeyRepository(pool).create(
            "kid-late", secrets.token_bytes(32), "", now, "operator:test", organization_id=org.id
        )
    with pytest.raises(OrganizationUnavailable, match="unknown"):
        await EabKeyRepository(pool).create(
            "kid-none", secrets.token_bytes(32), "", now, "operator:test", organization_id=10**9
        )


async def test_ov_2_vetting_past_reuse_refused_across_2026_03_15(pool: asyncpg.Pool) -> None:
    """Vetted 2025-01-01: 437 days old on 2026-03-14 (within 825) is accepted; on 2026-03-15
    the 398-day period applies and the same record is refused."""
    org = await add_org(pool, datetime(2025, 1, 1, tzinfo=UTC))
    account, _ = await bound_account(pool, org.id)
    assert (await require_at(pool, account, SC081 - SECOND)).id == org.id
    detail = await refused_at(pool, account, SC081)
    assert "vetted on 2025-01-01, 438 days before 2026-03-15" in detail
    assert "at most 398 days (BR 4.2.1)" in detail
    # Under the 825-day rule the end is exact: accepted at 825 days, refused a second later.
    old = await add_org(pool, datetime(2023, 12, 1, tzinfo=UTC), name="Old Vetting K.K.")
    early, _ = await bound_account(pool, old.id)
    end = old.vetted_at + timedelta(days=825)
    assert end < SC081
    assert (await require_at(pool, early, end)).id == old.id
    assert "825 days" in await refused_at(pool, early, end + SECOND)


async def test_ov_2_vetting_reuse_unchanged_across_2027_03_15(pool: asyncpg.Pool) -> None:
    """2027-03-15 shortens DCV reuse (200 -> 100 days), not identity reuse: a 286-day-old
    vetting is accepted on both sides; it ends 398 days after vetting, to the second."""
    org = await add_org(pool, datetime(2026, 6, 1, tzinfo=UTC))
    account, _ = await bound_account(pool, org.id)
    for at in (DCV_STEP - SECOND, DCV_STEP):
        assert (await require_at(pool, account, at)).id == org.id
        assert at - org.vetted_at > max_dcv_reuse(DCV_STEP)  # too old for a DCV reuse
    end = org.vetted_at + timedelta(days=398)
    assert (await require_at(pool, account, end)).id == org.id
    assert "at most 398 days" in await refused_at(pool, account, end + SECOND)


def test_ov_vetting_in_the_future_is_refused() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    org = Organization(
        "A K.K.",
        "JP",
        "Tokyo",
        "Minato-ku",
        "ref",
        "v",
        now + SECOND,
        id=1,
        status=OrganizationStatus.VALID,
        revoked_at=None,
        created_at=now,
    )
    problem = organization_problem(org, now)
    assert problem is not None and "is vetted from" in problem.detail


# --------------------------------------------------------------------------- the subject


def test_ov_1_subject_is_built_from_the_record_only() -> None:
    """C, ST, L, O from the record, then CN when the profile has one (CP 7.1.1 (2)); the
    record's values are the only input, so a CSR asking for another O cannot reach it."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    org = Organization(
        "Example Trading K.K.",
        "JP",
        "Tokyo",
        "Chiyoda-ku",
        "ref",
        "v",
        now,
        id=7,
        status=OrganizationStatus.VALID,
        revoked_at=None,
        created_at=now,
    )
    name = ov_subject(org, "www.example.jp")
    assert [(a.oid, a.value) for a in name] == [
        (NameOID.COUNTRY_NAME, "JP"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Tokyo"),
        (NameOID.LOCALITY_NAME, "Chiyoda-ku"),
        (NameOID.ORGANIZATION_NAME, "Example Trading K.K."),
        (NameOID.COMMON_NAME, "www.example.jp"),
    ]
    assert all(len(rdn) == 1 for rdn in name.rdns)
    assert NameOID.COMMON_NAME not in [a.oid for a in ov_subject(org, None)]
    assert (
        ov_subject(org, None).rfc4514_string()
        == "O=Example Trading K.K.,L=Chiyoda-ku,ST=Tokyo,C=JP"
    )


# --------------------------------------------------------------------------- newOrder


async def registered(
    session: aiohttp.ClientSession, ca: RunningCa, pool: asyncpg.Pool, org: Organization | None
) -> JwsClient:
    """An ACME account, registered with an EAB key bound to ``org`` (none: no EAB)."""
    key = ec.generate_private_key(ec.SECP256R1())
    client = JwsClient(session, ca.directory_url, key)
    await client.load_directory()
    fields = {}
    if org is not None:
        kid, hmac_key = "kid-" + secrets.token_hex(6), secrets.token_bytes(32)
        await EabKeyRepository(pool).create(
            kid, hmac_key, "", datetime.now(UTC), "operator:test", organization_id=org.id
        )
        binding = make_eab(hmac_key, kid, key, client.directory["newAccount"])
        fields["externalAccountBinding"] = binding
    reply = await client.register(**fields)
    assert reply.status == 201, reply.body
    return client


async def ov_order(client: JwsClient, name: str) -> Reply:
    payload = {"identifiers": [{"type": "dns", "value": name}], "profile": "ov"}
    return await client.post(client.directory["newOrder"], payload)


async def test_ov_1_new_order_needs_a_usable_organization(
    ca_factory: CaFactory, pool: asyncpg.Pool, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """newOrder with profile ``ov`` (RFC 8555 §7.4, draft-ietf-acme-profiles): accepted for
    an account bound to a valid organization vetted within BR 4.2.1's period; unauthorized,
    with the reason, once it is revoked or for a vetting 399 days old; an account bound to no
    organization may not use the profile at all (invalidProfile)."""
    pki = replace(Config(), home=tmp_path / "pki-home").validate()
    await init_hierarchy(
        HierarchySettings.from_config(pki)
    )  # the OV issuing CAs the ov profile signs with
    ca = await ca_factory.start(pki_dir=pki.pki_path)
    now = datetime.now(UTC)
    org = await add_org(pool, now - timedelta(days=10))
    stale = await add_org(pool, now - timedelta(days=399), name="Stale Vetting K.K.")
    member = await registered(session, ca, pool, org)
    late = await registered(session, ca, pool, stale)
    nobody = await registered(session, ca, pool, None)

    accepted = await ov_order(member, "www.ov-order.example.com")
    assert accepted.status == 201 and accepted.body["profile"] == "ov", accepted.body
    refused = await ov_order(late, "www.stale-order.example.com")
    assert_problem(refused, 403, "unauthorized")
    assert "399 days before" in refused.body["detail"] and "398 days" in refused.body["detail"]
    unbound = await ov_order(nobody, "www.nobody-order.example.com")
    assert_problem(unbound, 400, "invalidProfile")

    assert await OrganizationRepository(pool).revoke(org.id, datetime.now(UTC), "operator:test")
    revoked = await ov_order(member, "www.ov-order-2.example.com")
    assert_problem(revoked, 403, "unauthorized")
    assert f"organization {org.id} (Example Trading K.K.) was revoked" in revoked.body["detail"]
    dv = await member.post(
        member.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": "www.dv-order.example.com"}]},
    )
    assert dv.status == 201 and dv.body["profile"] == "dv", "DV needs no organization"


# --------------------------------------------------------------------------- the CLI


async def test_org_cli_add_list_show_revoke_audited(
    dsn: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    """``acme-ca org add`` prints ``id: ID`` first; list/show/revoke; one audit row per change
    naming the operator; bad input is refused before anything is stored."""
    code, out, err = await run_cli(
        dsn,
        tmp_path,
        "org",
        "add",
        "--name",
        "Example Trading K.K.",
        "--country",
        "JP",
        "--state",
        "Tokyo",
        "--locality",
        "Chiyoda-ku",
        "--evidence",
        "houjin-bangou 1234567890123",
        "--vetted-by",
        "alice",
        "--vetted-at",
        "2026-11-20",
        "--actor",
        "bob",
    )
    assert code == 0, (out, err)
    match = re.fullmatch(r"id: (\d+)", out.splitlines()[0])
    assert match, out
    org_id = int(match[1])
    stored = await OrganizationRepository(pool).get(org_id)
    assert stored is not None
    assert (stored.name, stored.country, stored.state, stored.locality) == (
        "Example Trading K.K.",
        "JP",
        "Tokyo",
        "Chiyoda-ku",
    )
    assert stored.vetted_at == datetime(2026, 11, 20, tzinfo=UTC)
    assert stored.vetted_by == "alice" and stored.evidence == "houjin-bangou 1234567890123"
    (added,) = await audit(pool, "organization.added")
    assert added["actor"] == "operator:bob"
    assert added["details"]["organization_id"] == org_id
    assert added["details"]["evidence"] == "houjin-bangou 1234567890123"

    code, out, _ = await run_cli(dsn, tmp_path, "org", "list")
    assert code == 0 and out.startswith(f"{org_id}\tvalid\tExample Trading K.K.\tC=JP\t"), out
    code, out, _ = await run_cli(dsn, tmp_path, "org", "show", str(org_id))
    assert code == 0 and out.splitlines()[0] == f"id: {org_id}"
    assert "status: valid" in out and "evidence: houjin-bangou 1234567890123" in out

    code, out, err = await run_cli(dsn, tmp_path, "org", "revoke", str(org_id), "--actor", "carol")
    assert code == 0, (out, err)
    (revoked,) = await audit(pool, "organization.revoked")
    assert revoked["actor"] == "operator:carol"
    assert revoked["details"]["organization_id"] == org_id
    code, out, _ = await run_cli(dsn, tmp_path, "org", "show", str(org_id))
    assert "status: revoked" in out
    code, _, err = await run_cli(dsn, tmp_path, "org", "revoke", str(org_id))
    assert code == 1 and "no valid organization" in err
    assert len(await audit(pool, "organization.revoked")) == 1
    code, _, err = await run_cli(dsn, tmp_path, "org", "show", "999999")
    assert code == 1 and "no organization 999999" in err

    base = ["org", "add", "--name", "X K.K.", "--state", "Osaka", "--locality", "Kita-ku"]
    base += ["--evidence", "ref", "--vetted-by", "alice"]
    for bad, message in (
        (["--country", "US", "--vetted-at", "2026-11-20"], "organizations in JP only"),
        (["--country", "JP", "--vetted-at", "2999-01-01"], "is in the future"),
        (["--country", "JP", "--vetted-at", "last week"], "not an ISO 8601 date"),
    ):
        code, out, err = await run_cli(dsn, tmp_path, *base, *bad)
        assert code == 2 and message in err, (bad, out, err)
    assert len(await OrganizationRepository(pool).list()) == 1


async def test_eab_create_org_binds_the_account(
    dsn: str, tmp_path: Path, pool: asyncpg.Pool, ca_factory: CaFactory
) -> None:
    """``acme-ca eab create --org ID``: the account a subscriber registers with that key
    (RFC 8555 §7.3.4 newAccount) belongs to the organization."""
    org = await add_org(pool, datetime.now(UTC) - timedelta(days=3))
    code, out, err = await run_cli(
        dsn, tmp_path, "eab", "create", "--org", str(org.id), "--comment", "Example Trading"
    )
    assert code == 0, (out, err)
    fields = dict(line.split(": ", 1) for line in out.splitlines())
    assert fields["organization"] == str(org.id)
    (created,) = await audit(pool, "eab.created")
    assert created["details"]["organization_id"] == org.id
    code, out, _ = await run_cli(dsn, tmp_path, "eab", "list")
    assert f"{fields['kid']}\tunused\t" in out and f"\torganization {org.id}" in out

    eab_ca = await ca_factory.start(external_account_required=True)
    key = ec.generate_private_key(ec.SECP256R1())
    async with aiohttp.ClientSession() as session:
        client = JwsClient(session, eab_ca.directory_url, key)
        await client.load_directory()
        binding = make_eab(
            b64url_decode(fields["hmac_key"]), fields["kid"], key, client.directory["newAccount"]
        )
        reply = await client.register(externalAccountBinding=binding)
        assert reply.status == 201, reply.body
    account_id = int(client.account_url.rsplit("/", 1)[1])
    bound = await OrganizationRepository(pool).organization_for_account(account_id)
    assert bound is not None and bound.id == org.id
    assert await OrganizationRepository(pool).account_ids(org.id) == [account_id]
    code, out, _ = await run_cli(dsn, tmp_path, "org", "show", str(org.id))
    assert f"eab_key: {fields['kid']}\tactive\taccount {account_id}" in out

    await OrganizationRepository(pool).revoke(org.id, datetime.now(UTC), "operator:test")
    code, _, err = await run_cli(dsn, tmp_path, "eab", "create", "--org", str(org.id))
    assert code == 1 and "revoked" in err
    # A key for an organization whose vetting is past the reuse period could order nothing.
    stale = await add_org(pool, datetime.now(UTC) - timedelta(days=400), name="Stale K.K.")
    code, _, err = await run_cli(dsn, tmp_path, "eab", "create", "--org", str(stale.id))
    assert code == 1 and "at most 398 days" in err and "vet it again" in err, err
    code, _, err = await run_cli(dsn, tmp_path, "eab", "create", "--org", "999999")
    assert code == 1 and "no organization 999999" in err
    assert len(await audit(pool, "eab.created")) == 1


# --------------------------------------------------------------------------- migration 009


async def test_migration_009_adds_organizations_to_an_old_database(
    postgres: EmbeddedPostgres,
) -> None:
    """A database from before 009 with a bound EAB key: the migration adds the table and the
    nullable column (the key stays bound to no organization), and replays cleanly."""
    dsn = postgres.create_database(f"m_{os.urandom(8).hex()}")
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema_before(conn, 9)
        assert await conn.fetchval("SELECT to_regclass('organizations')") is None
        await conn.execute(
            "INSERT INTO eab_keys (kid, hmac_key, created_at) VALUES ('old', $1, now())",
            os.urandom(32),
        )
        applied = await apply_schema(conn)
        assert 9 in applied
        assert await conn.fetchval("SELECT organization_id FROM eab_keys") is None
        org_id = await conn.fetchval(
            "INSERT INTO organizations (name, country, state, locality, evidence, vetted_by, "
            "vetted_at, created_at) VALUES ('A', 'JP', 'Tokyo', 'Minato-ku', 'ref', 'v', now(), "
            "now()) RETURNING id"
        )
        await conn.execute("UPDATE eab_keys SET organization_id = $1", org_id)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE organizations SET status = 'revoked'")  # no revoked_at
        assert await apply_schema(conn) == [], "replaying the schema changes nothing"
    finally:
        await conn.close()


# --------------------------------------------------------------------------- admin revoke --org


async def store_leaf(
    env: StatusEnv, account_id: int, issuer: str, policy: str, subject: x509.Name
) -> str:
    """A certificate row as the worker stores it (issuer name, DER with ``policy``); its
    serial.  Signed by a throwaway key: only the status room signs here."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = env.clock.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(env.issuers.by_name(issuer).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.jp")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(policy), None)]),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    serial = format(cert.serial_number, "x")
    await env.pool.execute(
        """INSERT INTO certificates (account_id, serial, issuer, der, not_before, not_after,
                                     created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $5)""",
        account_id,
        serial,
        issuer,
        cert.public_bytes(serialization.Encoding.DER),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )
    return serial


async def test_admin_revoke_org_revokes_its_ov_certificates_onto_the_crl(
    env: StatusEnv, dsn: str, tmp_path: Path
) -> None:
    """``acme-ca admin revoke --org ID``: every unexpired OV certificate of the organization's
    accounts is revoked (privilegeWithdrawn: its vetted information no longer holds, BR
    4.9.1.1 / 7.2.2), audited, and on the OV issuer's next CRL; its DV certificates and other
    organizations' certificates are not touched. --dry-run only lists."""
    org = await add_org(env.pool, env.clock.now() - timedelta(days=5))
    other = await add_org(env.pool, env.clock.now() - timedelta(days=5), name="Other K.K.")
    member, _ = await bound_account(env.pool, org.id)
    outsider, _ = await bound_account(env.pool, other.id)
    ov = ov_subject(org, "www.example.jp")
    ov_serial = await store_leaf(env, member, "ov-ecc", "2.23.140.1.2.2", ov)
    dv_serial = await store_leaf(env, member, "dv-ecc", "2.23.140.1.2.1", x509.Name([]))
    kept = await store_leaf(env, outsider, "ov-ecc", "2.23.140.1.2.2", ov_subject(other, None))

    code, out, err = await run_cli(
        dsn, tmp_path, "admin", "revoke", "--org", str(org.id), "--dry-run"
    )
    assert code == 0, (out, err)
    assert out.splitlines()[0].startswith(f"would revoke\t{ov_serial}\treason=privilegeWithdrawn")
    assert (
        await env.pool.fetchval("SELECT count(*) FROM certificates WHERE revoked_at IS NOT NULL")
        == 0
    )

    code, out, err = await run_cli(
        dsn, tmp_path, "admin", "revoke", "--org", str(org.id), "--actor", "dave"
    )
    assert code == 0, (out, err)
    assert out.splitlines()[0].startswith(f"revoked\t{ov_serial}\treason=privilegeWithdrawn")
    assert f"1 certificate(s) of organization {org.id}" in out
    rows = {
        r["serial"]: r
        for r in await env.pool.fetch(
            "SELECT serial, revoked_at, revocation_reason FROM certificates"
        )
    }
    assert rows[ov_serial]["revocation_reason"] == 9 and rows[ov_serial]["revoked_at"]
    assert rows[dv_serial]["revoked_at"] is None and rows[kept]["revoked_at"] is None
    (event,) = await audit(env.pool, "certificate.revoked")
    assert event["actor"] == "operator:dave" and event["details"]["serial"] == ov_serial

    await env.updater().publish_all_crls()
    record = await env.repository.latest_crl("ov-ecc")
    assert record is not None
    crl = x509.load_der_x509_crl(record.der)
    entry = crl.get_revoked_certificate_by_serial_number(int(ov_serial, 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.privilege_withdrawn
    assert crl.get_revoked_certificate_by_serial_number(int(kept, 16)) is None

    code, _, err = await run_cli(dsn, tmp_path, "admin", "revoke", "--org", "999999")
    assert code == 1 and "no organization 999999" in err
    code, _, err = await run_cli(dsn, tmp_path, "admin", "revoke", "--org", str(org.id), "x1")
    assert code == 2 and "one of SERIAL, --domain and --org" in err
