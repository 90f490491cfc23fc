"""Certificate profiles (draft-ietf-acme-profiles; issue 15): the configured table, the start
refusal at the BR limits of the day, the protocol (directory, newOrder, order object) and each
shipped profile issued by the real signing worker and linted by pkilint at its level.

Real PostgreSQL, the real front end, a development hierarchy from ``acme-ca init`` (DV and OV
issuing CAs, software keys), in-process CT test logs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from acme_ca.acme import ari
from acme_ca.acme.problems import AcmeError
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.issuance_profiles import profile_settings_factory
from acme_ca.ca.issuers import IssuerSet
from acme_ca.ca.lint import CertificateLinter, LintKind
from acme_ca.ca.settings import IssuanceSettings
from acme_ca.ca.worker import SigningWorker
from acme_ca.cli import main
from acme_ca.clock import FixedClock, SystemClock
from acme_ca.config import Config, ConfigError, load_config
from acme_ca.db.eab import EabKeyRepository
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.migrate import apply_schema
from acme_ca.db.organizations import OrganizationRepository
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.log import configure_logging
from acme_ca.profiles import SHIPPED, ProfileSpec
from acme_ca.ra.organizations import OrganizationPolicy
from acme_ca.ra.profiles import ProfileConfigError, build_catalog
from acme_ca.ra.settings import CatalogSettings
from acme_ca.testsrv.ct_log import TestLogSpec
from tests.fixtures import CaFactory
from tests.support.accounts import bare_account
from tests.support.ct import Harness, harness, three_operators
from tests.support.jws import JwsClient
from tests.support.migrations import create_schema_before
from tests.support.orders import Subscriber
from tests.support.organizations import add_organization
from tests.support.revocation import account_id_of, make_issuer, make_leaf, store_certificate
from tests.support.worker import build_csr, insert_ready_order, make_pki_config

INVALID_PROFILE = "urn:ietf:params:acme:error:invalidProfile"
DV_ISSUERS = {"dv-rsa": "dv", "dv-ecc": "dv"}
ALL_ISSUERS = {**DV_ISSUERS, "ov-rsa": "ov", "ov-ecc": "ov"}
UTC_2026_06 = datetime(2026, 6, 1, tzinfo=UTC)


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def config_with(*specs: ProfileSpec, **changes: Any) -> Config:
    return replace(Config(), profiles=specs, **changes).validate()


# --------------------------------------------------------------------------- the table


def test_prof_1_shipped_profiles() -> None:
    table = Config().validate().profile_table
    assert list(table) == ["dv", "tlsserver", "shortlived", "ov"]
    dv, tls, short, ov = (table[n] for n in ("dv", "tlsserver", "shortlived", "ov"))
    # dv is exactly the CP DV profile of the top-level keys (as before profiles).
    assert (dv.validation, dv.validity, dv.subject_common_name, dv.rsa_key_encipherment) == (
        "DV",
        None,
        True,
        True,
    )
    assert (dv.rsa_issuer, dv.ecdsa_issuer, dv.ocsp_url, dv.crl_url) == (
        "dv-rsa",
        "dv-ecc",
        True,
        True,
    )
    assert (tls.subject_common_name, tls.subject_key_identifier, tls.rsa_key_encipherment) == (
        False,
        False,
        False,
    )
    assert tls.validity == timedelta(days=45)
    assert (short.validity, short.ocsp_url, short.crl_url) == (timedelta(hours=160), False, True)
    assert (ov.validation, ov.subject_organization, ov.accounts) == ("OV", True, "organization")
    assert (ov.rsa_issuer, ov.ecdsa_issuer, ov.reserved_policy_oid) == (
        "ov-rsa",
        "ov-ecc",
        "2.23.140.1.2.2",
    )
    assert ov.lint_pre == "OV-PRE-CERTIFICATE" and dv.lint_final == "DV-FINAL-CERTIFICATE"


def test_profiles_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "acme-ca.toml"
    path.write_text(
        'default_profile = "tlsserver"\n'
        "[profiles.tlsserver]\nvalidity_days = 30\n"
        '[profiles.partners]\ndescription = "DV for bound partners"\naccounts = "organization"\n'
        'challenges = ["dns-01"]\nrenewal_window = [40, 60]\n'
    )
    config = load_config(path, env={})
    table = config.profile_table
    assert config.default_profile == "tlsserver"
    assert table["tlsserver"].validity == timedelta(days=30)
    assert table["tlsserver"].subject_common_name is False  # the rest stays as shipped
    partners = table["partners"]
    assert (partners.accounts, partners.challenges, partners.validation) == (
        "organization",
        ("dns-01",),
        "DV",
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        pytest.param("[profiles.dv]\nvalidty_days = 3\n", "unknown key 'validty_days'", id="typo"),
        pytest.param("[profiles.dv]\nvalidity_days = '3'\n", "expected int", id="type"),
        pytest.param(
            "[profiles.dv]\nvalidity_days = 3\nvalidity_hours = 3\n", "not both", id="both"
        ),
        pytest.param('[profiles.x]\ndescription = "x"\nsubject = ["o"]\n', "subject", id="subj"),
        pytest.param(
            '[profiles.x]\ndescription = "x"\nextended_key_usage = ["clientAuth"]\n',
            "extended_key_usage",
            id="eku",
        ),
        pytest.param(
            '[profiles.x]\ndescription = "x"\nvalidation = "OV"\n', "organization", id="ov-subj"
        ),
        pytest.param("[profiles.x]\nenabled = true\n", "description", id="no-description"),
        pytest.param('default_profile = "classic"\n', "default_profile", id="default"),
        pytest.param(
            'default_profile = "shortlived"\n[profiles.shortlived]\nenabled = false\n',
            "default_profile",
            id="default-withdrawn",
        ),
    ],
)
def test_profile_tables_are_validated_at_load(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "acme-ca.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})


# --------------------------------------------------------------------------- start refusal


def test_br_6_3_2_profile_validity_over_the_br_maximum_refuses_to_start() -> None:
    """150 days is within BR 6.3.2 until 2027-03-14 and beyond it from 2027-03-15 (100)."""
    config = config_with(ProfileSpec(name="long", description="150 days", validity_days=150))
    assert (
        "long"
        in build_catalog(
            CatalogSettings.from_config(config), at(2027, 3, 14), issuers=DV_ISSUERS
        ).offered
    )
    with pytest.raises(ProfileConfigError, match=r"profiles\.long: validity 150 days exceeds"):
        build_catalog(CatalogSettings.from_config(config), at(2027, 3, 15), issuers=DV_ISSUERS)
    with pytest.raises(ProfileConfigError, match=r"BR 6\.3\.2 validity maximum of 100 days"):
        build_catalog(CatalogSettings.from_config(config), at(2027, 3, 15), issuers=DV_ISSUERS)
    # The shipped profiles stay within every date's limit (tlsserver: 45 <= 47 from 2029).
    assert (
        build_catalog(
            CatalogSettings.from_config(Config()), at(2029, 3, 15), issuers=DV_ISSUERS
        ).default
        == "dv"
    )


def test_br_4_2_1_profile_reuse_over_the_br_maximum_refuses_to_start() -> None:
    reuse = replace(SHIPPED["tlsserver"], authz_reuse_days=150)
    config = config_with(reuse)
    assert build_catalog(CatalogSettings.from_config(config), at(2027, 3, 14), issuers=DV_ISSUERS)
    with pytest.raises(ProfileConfigError, match=r"BR 4\.2\.1 validation reuse maximum of 100"):
        build_catalog(CatalogSettings.from_config(config), at(2027, 3, 15), issuers=DV_ISSUERS)


async def test_front_end_refuses_to_start_on_a_profile_over_the_br(
    ca_factory: CaFactory,
) -> None:
    long = ProfileSpec(name="long", description="150 days", validity_days=150)
    with pytest.raises(ProfileConfigError, match=r"BR 6\.3\.2"):
        await ca_factory.start(clock=FixedClock(at(2027, 6, 1)), profiles=(long,))


def test_sl_1_crl_url_may_be_left_out_only_by_short_lived_profiles_without_ocsp() -> None:
    no_crl = replace(SHIPPED["tlsserver"], crl_url=False, ocsp_url=False)
    with pytest.raises(ProfileConfigError, match=r"BR 7\.1\.2\.11\.2"):
        build_catalog(
            CatalogSettings.from_config(config_with(no_crl)), UTC_2026_06, issuers=DV_ISSUERS
        )
    short_no_crl = replace(SHIPPED["shortlived"], crl_url=False)
    assert build_catalog(
        CatalogSettings.from_config(config_with(short_no_crl)), UTC_2026_06, issuers=DV_ISSUERS
    )


def test_ov_profile_needs_ov_issuers() -> None:
    # Without OV issuing CAs the shipped ov profile is not offered (and nothing refuses).
    catalog = build_catalog(CatalogSettings.from_config(Config()), UTC_2026_06, issuers=DV_ISSUERS)
    assert "ov" not in catalog.offered and "ov-rsa" in catalog.unavailable["ov"]
    with pytest.raises(AcmeError) as refused:
        catalog.requested("ov")
    assert refused.value.problem.type == INVALID_PROFILE
    assert (
        "ov"
        in build_catalog(
            CatalogSettings.from_config(Config()), UTC_2026_06, issuers=ALL_ISSUERS
        ).offered
    )
    # An OV profile on DV issuing CAs, or a DV profile on OV ones, never starts (CP 1.1).
    wrong = replace(SHIPPED["ov"], rsa_issuer="dv-rsa")
    with pytest.raises(ProfileConfigError, match="dv-rsa is a dv issuer"):
        build_catalog(
            CatalogSettings.from_config(config_with(wrong)), UTC_2026_06, issuers=ALL_ISSUERS
        )


def test_prof_2_finalize_under_a_withdrawn_profile_is_invalid_profile() -> None:
    withdrawn = replace(SHIPPED["shortlived"], enabled=False)
    catalog = build_catalog(
        CatalogSettings.from_config(config_with(withdrawn)), UTC_2026_06, issuers=DV_ISSUERS
    )
    assert catalog.for_finalize("tlsserver").name == "tlsserver"
    with pytest.raises(AcmeError) as refused:
        catalog.for_finalize("shortlived")
    assert refused.value.problem.type == INVALID_PROFILE
    assert "withdrawn" in (refused.value.problem.detail or "")


# --------------------------------------------------------------------------- protocol


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


async def client(ca_url: str, session: aiohttp.ClientSession) -> JwsClient:
    c = JwsClient(session, ca_url, ec.generate_private_key(ec.SECP256R1()))
    await c.load_directory()
    assert (await c.register()).status == 201
    return c


async def new_order(c: JwsClient, name: str, profile: str | None = None) -> Any:
    payload: dict[str, Any] = {"identifiers": [{"type": "dns", "value": name}]}
    if profile is not None:
        payload["profile"] = profile
    return await c.post(c.directory["newOrder"], payload)


async def test_prof_1_directory_and_new_order(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    partners = ProfileSpec(name="partners", description="bound partners", accounts="organization")
    ca = await ca_factory.start(profiles=(partners,))
    c = await client(ca.directory_url, session)
    profiles = c.directory["meta"]["profiles"]
    # No OV issuing CAs under this front end: ov is not offered; the others with descriptions.
    assert set(profiles) == {"dv", "tlsserver", "shortlived", "partners"}
    assert profiles["tlsserver"].startswith("TLS server")

    default = await new_order(c, "default.profiles.example.com")
    assert default.status == 201 and default.body["profile"] == "dv"
    chosen = await new_order(c, "tls.profiles.example.com", "tlsserver")
    assert chosen.status == 201 and chosen.body["profile"] == "tlsserver"
    fetched = await c.post(chosen.headers["Location"], None)
    assert fetched.body["profile"] == "tlsserver"
    row = await c.post(default.headers["Location"], None)
    assert row.body["profile"] == "dv"

    for name, words in (
        ("classic", "unknown profile 'classic'"),
        ("ov", "not offered"),
        ("partners", "only for accounts bound by External Account Binding"),
    ):
        refused = await new_order(c, "x.profiles.example.com", name)
        assert (refused.status, refused.body["type"]) == (400, INVALID_PROFILE), refused.body
        assert words in refused.body["detail"]


async def test_prof_1_challenges_follow_the_profile(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    dns_only = replace(SHIPPED["shortlived"], challenges=["dns-01"])
    http_only = ProfileSpec(name="webonly", description="http-01 only", challenges=["http-01"])
    ca = await ca_factory.start(profiles=(dns_only, http_only))
    c = await client(ca.directory_url, session)
    dv = await new_order(c, "same.challenges.example.com")
    short = await new_order(c, "same.challenges.example.com", "shortlived")
    dv_authz = await c.post(dv.body["authorizations"][0], None)
    short_authz = await c.post(short.body["authorizations"][0], None)
    assert {ch["type"] for ch in dv_authz.body["challenges"]} >= {"http-01", "dns-01"}
    # Not the dv order's pending authorization (it offers http-01): a new one, dns-01 only.
    assert short.body["authorizations"] != dv.body["authorizations"]
    assert [ch["type"] for ch in short_authz.body["challenges"]] == ["dns-01"]
    wildcard = await new_order(c, "*.web.challenges.example.com", "webonly")
    assert (wildcard.status, wildcard.body["type"]) == (
        400,
        "urn:ietf:params:acme:error:rejectedIdentifier",
    )
    assert "webonly profile allows only http-01" in wildcard.body["detail"]


# --------------------------------------------------------------------------- issuance


@pytest.fixture(scope="module")
def pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_pki_config(tmp_path_factory.mktemp("profiles-pki"))


async def bind_to_organization(pool: asyncpg.Pool, account_id: int, now: datetime) -> None:
    """The account registered with an EAB key of a vetted organization (acme-ca eab create
    --org), as the EAB binding of newAccount leaves it."""
    org = await add_organization(pool, now - timedelta(days=10), now=now, actor="test")
    kid = f"kid-{account_id}-{os.urandom(4).hex()}"
    await EabKeyRepository(pool).create(
        kid, os.urandom(32), "test", now, "test", organization_id=org.id
    )
    await pool.execute(
        "UPDATE eab_keys SET account_id = $1, bound_at = $2 WHERE kid = $3", account_id, now, kid
    )
    await pool.execute("UPDATE accounts SET eab_kid = $1 WHERE id = $2", kid, account_id)


def lint_clean(linter: CertificateLinter, cert: x509.Certificate, kind: LintKind) -> set[str]:
    """pkilint at the profile's level: no ERROR/FATAL; the WARNING codes."""
    report = linter.lint(cert.public_bytes(Encoding.DER), kind)
    assert not report.blocking, (kind, [str(f) for f in report.blocking])
    return {f.code for f in report.findings if f.severity.name == "WARNING"}


def worker(h: Harness, pool: asyncpg.Pool, now: datetime) -> SigningWorker:
    """The signing worker as main/worker wires it, organizations included (OV)."""
    organizations = OrganizationPolicy(OrganizationRepository(pool), FixedClock(now))
    ct = CertificateTransparency(h.source, SystemClock(), h.settings)
    h.cts.append(ct)
    return SigningWorker(
        IssuanceRepository(pool),
        h.issuers,
        h.linter,
        SystemClock(),
        profile_for=profile_settings_factory(IssuanceSettings.from_config(h.config)),
        ct=ct,
        production=False,  # a development hierarchy: no remote perspectives needed
        organizations=organizations,
        organization_subject=organizations.subject,
    )


async def sign_once(
    h: Harness,
    pool: asyncpg.Pool,
    ready: tuple[int, int],
    names: list[str],
    *,
    issuer: str,
    profile: str,
    now: datetime | None = None,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
) -> None:
    """Queue the ready order's job (``ready``: account id, order id) under ``profile``, as
    finalize does, and let the signing worker take it once."""
    now = now or datetime.now(UTC)
    account_id, order_id = ready
    assert await IssuanceRepository(pool).enqueue(
        order_id=order_id,
        account_id=account_id,
        csr_der=build_csr(names, key=key),
        names=names,
        issuer=issuer,
        now=now,
        profile=profile,
    )
    assert await worker(h, pool, now).run_once()


@pytest.mark.parametrize(
    ("profile", "key_type"),
    [
        pytest.param("dv", "ec", id="dv"),
        pytest.param("tlsserver", "rsa", id="tlsserver"),
        pytest.param("shortlived", "ec", id="shortlived"),
        pytest.param("ov", "rsa", id="ov"),
    ],
)
async def test_each_shipped_profile_issues_and_lints_at_its_level(
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    profile: str,
    key_type: str,
) -> None:
    table = pki_config.profile_table
    p = table[profile]
    names = [f"www.{profile}.profiles.example.com", f"{profile}.profiles.example.com"]
    async with harness(pool, pki_config, issuers, linter, three_operators()) as h:
        account_id, order_id = await insert_ready_order(pool, names)
        now = datetime.now(UTC)
        if p.subject_organization:
            await bind_to_organization(pool, account_id, now)
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if key_type == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        issuer = p.rsa_issuer if key_type == "rsa" else p.ecdsa_issuer
        await sign_once(
            h, pool, (account_id, order_id), names, issuer=issuer, profile=profile, now=now, key=key
        )
        row = await pool.fetchrow(
            "SELECT c.der, p.der AS precert FROM certificates c "
            "JOIN precertificates p ON p.serial = c.serial WHERE c.order_id = $1",
            order_id,
        )
        assert row is not None, await pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        cert = x509.load_der_x509_certificate(bytes(row["der"]))
        precert = x509.load_der_x509_certificate(bytes(row["precert"]))

    assert cert.issuer == issuers.by_name(issuer).certificate.subject
    warnings = lint_clean(linter, precert, p.lint_pre)  # type: ignore[arg-type]
    assert lint_clean(linter, cert, p.lint_final) == warnings  # type: ignore[arg-type]
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [pi.policy_identifier.dotted_string for pi in policies] == [
        p.reserved_policy_oid,
        p.policy_oid,
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment == (key_type == "rsa" and p.rsa_key_encipherment)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    methods = [d.access_method for d in aia]
    crldp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert len(crldp) == 1 and crldp[0].full_name is not None

    if profile == "tlsserver":  # as Let's Encrypt's tlsserver
        assert len(cert.subject) == 0
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.critical
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        assert not ku.key_encipherment  # digitalSignature only, even for an RSA key
        assert lifetime == timedelta(days=45)
    if profile == "shortlived":  # SL-1: at most 7 days, CRL DP kept, no OCSP URL
        assert lifetime == timedelta(hours=160) <= timedelta(days=7)
        assert methods == [AuthorityInformationAccessOID.CA_ISSUERS]
        assert "cabf.serverauth.subscriber.crl_distribution_points_present" not in warnings
    else:
        assert methods == [
            AuthorityInformationAccessOID.OCSP,
            AuthorityInformationAccessOID.CA_ISSUERS,
        ]
    if profile in ("dv", "shortlived"):
        assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    if profile == "ov":  # C, ST, L, O from the vetted record only, then CN
        assert [(a.oid, a.value) for a in cert.subject] == [
            (NameOID.COUNTRY_NAME, "JP"),
            (NameOID.STATE_OR_PROVINCE_NAME, "Tokyo"),
            (NameOID.LOCALITY_NAME, "Chiyoda-ku"),
            (NameOID.ORGANIZATION_NAME, "Example Trading K.K."),
            (NameOID.COMMON_NAME, names[0]),
        ]


async def test_ov_job_of_an_unbound_account_signs_nothing(
    pool: asyncpg.Pool, pki_config: Config, issuers: IssuerSet, linter: CertificateLinter
) -> None:
    names = ["unbound.ov.profiles.example.com"]
    async with harness(pool, pki_config, issuers, linter, three_operators()) as h:
        account_id, order_id = await insert_ready_order(pool, names)
        await sign_once(h, pool, (account_id, order_id), names, issuer="ov-ecc", profile="ov")
    order = await pool.fetchrow("SELECT status, error FROM orders WHERE id = $1", order_id)
    assert order["status"] == "invalid"
    assert (
        await pool.fetchval("SELECT count(*) FROM precertificates WHERE order_id = $1", order_id)
        == 0
    )


# --------------------------------------------------------------------------- migration 008


async def test_migration_008_gives_old_orders_and_jobs_the_dv_profile(
    postgres: EmbeddedPostgres,
) -> None:
    """A database from before 008 with an order (profile NULL) and its queued job: both are
    `dv` afterwards, the column is NOT NULL with default `dv` (a process of the previous
    release, which names no profile, still inserts), and the schema replays cleanly."""
    dsn = postgres.create_database(f"m_{os.urandom(8).hex()}")
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema_before(conn, 8)
        account_id = await bare_account(conn)
        order_id = await conn.fetchval(
            "INSERT INTO orders (account_id, status, identifiers, expires_at, created_at, "
            "updated_at) VALUES ($1, 'processing', '[]', now(), now(), now()) RETURNING id",
            account_id,
        )
        assert await conn.fetchval("SELECT profile FROM orders") is None
        await conn.execute(
            "INSERT INTO issuance_jobs (order_id, account_id, csr_der, names, status, issuer, "
            "created_at, updated_at) VALUES ($1, $2, '\\x00', '[]', 'queued', 'dv-ecc', now(), "
            "now())",
            order_id,
            account_id,
        )
        applied = await apply_schema(conn)
        assert 8 in applied
        assert await conn.fetchval("SELECT profile FROM orders") == "dv"
        assert await conn.fetchval("SELECT profile FROM issuance_jobs") == "dv"
        later = await conn.fetchval(
            "INSERT INTO orders (account_id, status, identifiers, expires_at, created_at, "
            "updated_at) VALUES ($1, 'pending', '[]', now(), now(), now()) RETURNING profile",
            account_id,
        )
        assert later == "dv"
        with pytest.raises(asyncpg.NotNullViolationError):
            await conn.execute("UPDATE orders SET profile = NULL")
        assert await apply_schema(conn) == [], "replaying the schema changes nothing"
    finally:
        await conn.close()


# --------------------------------------------------------------------------- ARI per profile


async def test_ari_3_renewal_window_follows_the_profile(
    sub: Subscriber, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """RFC 9773 §4.2 per profile: a shortlived certificate's window is 50-75% of its own
    validity; a dv one keeps the last third ending a tenth before notAfter."""
    issuer = make_issuer("ARI Profile Test Issuer")
    for profile, start_at, end_at in (("shortlived", 0.5, 0.75), ("dv", 2 / 3, 0.9)):
        leaf = make_leaf(issuer, [f"ari-{profile}.profiles.example.com"])
        cert_id = await store_certificate(pool, account_id_of(sub), leaf)
        await pool.execute(
            "UPDATE orders SET profile = $1 WHERE id = "
            "(SELECT order_id FROM certificates WHERE id = $2)",
            profile,
            cert_id,
        )
        url = f"{sub.directory['renewalInfo']}/{ari.cert_id_of(leaf.cert)}"
        async with session.get(url) as resp:
            assert resp.status == 200
            window = (await resp.json())["suggestedWindow"]
        not_before = leaf.cert.not_valid_before_utc
        lifetime = leaf.cert.not_valid_after_utc - not_before
        start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
        assert abs(start - (not_before + lifetime * start_at)) < timedelta(seconds=2), profile
        assert abs(end - (not_before + lifetime * end_at)) < timedelta(seconds=2), profile


@pytest.fixture
def logging_back_to_stdout() -> Iterator[None]:
    """``main`` points structlog at the (captured) output of the test; undo that."""
    yield
    configure_logging("json", "debug")


@pytest.mark.usefixtures("logging_back_to_stdout")
def test_check_reports_profiles_for_a_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`acme-ca check --at DATE` says whether the profiles would start that day, naming the
    rule, before serve or worker refuses."""
    path = tmp_path / "acme-ca.toml"
    path.write_text(
        f'home = "{tmp_path / "home"}"\n'
        '[profiles.long]\ndescription = "150 days"\nvalidity_days = 150\n'
    )
    main(["--config", str(path), "check", "--at", "2027-03-14"])
    assert "profiles: ok, offered dv, tlsserver, shortlived, long (default dv)" in (
        capsys.readouterr().out
    )
    assert main(["--config", str(path), "check", "--at", "2027-03-15"]) == 1
    out = capsys.readouterr().out
    assert "profiles.long: validity 150 days exceeds the BR 6.3.2 validity maximum" in out


async def test_ct_policy_per_profile(
    pool: asyncpg.Pool, pki_config: Config, issuers: IssuerSet, linter: CertificateLinter
) -> None:
    """Two static-ct-api logs of two operators, no RFC 6962 log: a profile with
    ``ct_policy = "chrome"`` (Chrome's policy alone) issues; ``dv`` (chrome-apple, which asks
    for one RFC 6962 log) signs nothing and waits in the queue."""
    chrome = replace(SHIPPED["tlsserver"], name="chromeonly", description="Chrome CT only")
    chrome = replace(chrome, ct_policy="chrome")
    config = replace(pki_config, profiles=(chrome,)).validate()
    specs = [
        TestLogSpec.generate("tiled A", "operator A", mode="static-ct-api"),
        TestLogSpec.generate("tiled B", "operator B", mode="static-ct-api"),
    ]
    async with harness(pool, config, issuers, linter, specs) as h:
        orders = {}
        for profile in ("chromeonly", "dv"):
            names = [f"ct-{profile}.profiles.example.com"]
            account_id, order_id = await insert_ready_order(pool, names)
            await sign_once(
                h, pool, (account_id, order_id), names, issuer="dv-ecc", profile=profile
            )
            orders[profile] = order_id
    statuses = {
        p: await pool.fetchval("SELECT status FROM orders WHERE id = $1", o)
        for p, o in orders.items()
    }
    assert statuses == {"chromeonly": "valid", "dv": "processing"}
    job = await pool.fetchrow(
        "SELECT status, step FROM issuance_jobs WHERE order_id = $1", orders["dv"]
    )
    assert (job["status"], job["step"]) == ("queued", "queued")  # deferred, nothing signed


def test_unknown_ct_policy_or_challenge_type_refuses_to_start() -> None:
    bad_ct = replace(SHIPPED["tlsserver"], ct_policy="apple-only")
    with pytest.raises(ProfileConfigError, match="ct_policy 'apple-only'"):
        build_catalog(
            CatalogSettings.from_config(config_with(bad_ct)), UTC_2026_06, issuers=DV_ISSUERS
        )
    bad_challenge = replace(SHIPPED["tlsserver"], challenges=["dns-account-01"])
    with pytest.raises(ProfileConfigError, match="'dns-account-01' is not an enabled"):
        build_catalog(
            CatalogSettings.from_config(config_with(bad_challenge)),
            UTC_2026_06,
            issuers=DV_ISSUERS,
            challenge_types=["http-01", "dns-01"],
        )


async def test_job_of_a_profile_no_longer_configured_signs_nothing(
    pool: asyncpg.Pool, pki_config: Config, issuers: IssuerSet, linter: CertificateLinter
) -> None:
    """A custom profile removed from the configuration between finalize and the worker: the
    order fails at once with invalidProfile, nothing is signed (no retries)."""
    names = ["gone.profiles.example.com"]
    async with harness(pool, pki_config, issuers, linter, three_operators()) as h:
        account_id, order_id = await insert_ready_order(pool, names)
        await sign_once(h, pool, (account_id, order_id), names, issuer="dv-ecc", profile="partners")
    order = await pool.fetchrow("SELECT status, error FROM orders WHERE id = $1", order_id)
    assert order["status"] == "invalid" and order["error"]["type"] == INVALID_PROFILE
    assert (
        await pool.fetchval("SELECT serial FROM issuance_jobs WHERE order_id = $1", order_id)
        is None
    )


async def test_br_4_2_1_profile_reuse_rechecked_at_signing(
    pool: asyncpg.Pool, pki_config: Config, issuers: IssuerSet, linter: CertificateLinter
) -> None:
    """A profile's own authz_reuse_days (10) holds at signing as BR 4.2.1's limit does: a
    validation 12 days old is refused for it, while dv (BR limit only) signs it."""
    tight = ProfileSpec(name="tight", description="10-day reuse", authz_reuse_days=10)
    config = replace(pki_config, profiles=(tight,)).validate()
    now = datetime.now(UTC)
    results = {}
    async with harness(pool, config, issuers, linter, three_operators()) as h:
        for profile in ("tight", "dv"):
            names = [f"reuse-{profile}.profiles.example.com"]
            account_id, order_id = await insert_ready_order(
                pool, names, validated_at=now - timedelta(days=12)
            )
            # CAA was rechecked an hour ago (BR 3.2.2.8): only the reuse rule is in play.
            await pool.execute(
                "UPDATE authorizations SET caa_checked_at = $1 WHERE account_id = $2",
                now - timedelta(hours=1),
                account_id,
            )
            await sign_once(
                h, pool, (account_id, order_id), names, issuer="dv-ecc", profile=profile, now=now
            )
            results[profile] = await pool.fetchrow(
                "SELECT status, error FROM orders WHERE id = $1", order_id
            )
    assert results["dv"]["status"] == "valid", results["dv"]["error"]
    assert results["tight"]["status"] == "invalid"
    assert (
        "the order's profile reuses validations for at most 10 days"
        in (results["tight"]["error"]["detail"])
    )
