"""Pre-issuance linting: the warm pkilint 0.13.3 linter blocks what it must and passes our profile.

Each bad case starts from a clean certificate built by the profile and changes one thing, so the
blocking finding in the row is caused by that change alone.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from acme_ca.ca.der import throwaway_key
from acme_ca.ca.lint import (
    EKU_NOT_SERVER_AUTH_ONLY,
    PKILINT_VERSION,
    UNDECODABLE,
    CertificateLinter,
    LintKind,
    LintReport,
    Severity,
    _index,
    _IndexedWalk,
)
from acme_ca.ca.profile import ProfileSettings
from tests.support.profile import (
    COMMON_NAME_PRESENT,
    SETTINGS,
    SIGNING_TIME,
    Hierarchy,
    make_hierarchy,
    prepare,
    request,
)

Ext = x509.Extension[x509.ExtensionType]


@pytest.fixture(scope="module")
def hierarchy() -> Hierarchy:
    return make_hierarchy()


@pytest.fixture(scope="module")
def good(hierarchy: Hierarchy) -> x509.Certificate:
    """A clean DV final certificate (P-256 key, P-256 issuer), as the linter sees it."""
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    prepared = prepare(hierarchy.p256, request(public_key, names=("www.example.jp",)))
    return x509.load_der_x509_certificate(prepared.lint_der)


def variant(
    good: x509.Certificate,
    *,
    replace: Sequence[Ext] = (),
    add: Sequence[Ext] = (),
    drop: Sequence[x509.ObjectIdentifier] = (),
    subject: x509.Name | None = None,
    not_after: datetime | None = None,
) -> bytes:
    """``good`` with one change, signed by a throwaway key like every linting copy."""
    by_oid = {e.oid: e for e in replace}
    extensions = [by_oid.get(e.oid, e) for e in good.extensions if e.oid not in drop]
    builder = x509.CertificateBuilder(
        good.issuer,
        subject if subject is not None else good.subject,
        good.public_key(),
        good.serial_number,
        good.not_valid_before_utc,
        not_after or good.not_valid_after_utc,
        [*extensions, *add],
    )
    return builder.sign(throwaway_key("ec", "secp256r1"), hashes.SHA256()).public_bytes(
        serialization.Encoding.DER
    )


def eku(*oids: x509.ObjectIdentifier) -> Ext:
    return x509.Extension(ExtensionOID.EXTENDED_KEY_USAGE, False, x509.ExtendedKeyUsage(list(oids)))


def san(*names: x509.GeneralName) -> Ext:
    return x509.Extension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False, x509.SubjectAlternativeName(list(names))
    )


def key_usage(*, key_cert_sign: bool) -> Ext:
    value = x509.KeyUsage(True, False, False, False, False, key_cert_sign, False, False, False)
    return x509.Extension(ExtensionOID.KEY_USAGE, True, value)


def policies(*oids: str) -> Ext:
    value = x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier(o), None) for o in oids]
    )
    return x509.Extension(ExtensionOID.CERTIFICATE_POLICIES, False, value)


def crldp(url: str) -> Ext:
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    return x509.Extension(
        ExtensionOID.CRL_DISTRIBUTION_POINTS, False, x509.CRLDistributionPoints([point])
    )


WWW = x509.DNSName("www.example.jp")
POISON: Ext = x509.Extension(x509.PrecertPoison.oid, True, x509.PrecertPoison())
BasicCA: Ext = x509.Extension(
    ExtensionOID.BASIC_CONSTRAINTS, True, x509.BasicConstraints(ca=True, path_length=None)
)

BadCase = Callable[[x509.Certificate], bytes]
BAD_CASES: list[tuple[str, BadCase, str]] = [
    # (id, how to spoil the good certificate, the blocking code that must appear)
    (
        "eku-client-auth",
        lambda g: variant(
            g, replace=[eku(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)]
        ),
        EKU_NOT_SERVER_AUTH_ONLY,
    ),
    (
        "eku-code-signing",
        lambda g: variant(
            g, replace=[eku(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING)]
        ),
        "cabf.serverauth.subscriber.codesigning_eku_present",
    ),
    (
        "san-private-ip",
        lambda g: variant(g, replace=[san(WWW, x509.IPAddress(ipaddress.ip_address("10.0.0.1")))]),
        "cabf.internal_ip_address",
    ),
    (
        "san-email",
        lambda g: variant(g, replace=[san(WWW, x509.RFC822Name("hostmaster@example.jp"))]),
        "cabf.serverauth.prohibited_san_type",
    ),
    (
        "san-internal-name",
        lambda g: variant(g, replace=[san(WWW, x509.DNSName("server.local"))]),
        "cabf.internal_domain_name",
    ),
    (
        "san-reverse-zone",
        lambda g: variant(g, replace=[san(WWW, x509.DNSName("1.2.0.192.in-addr.arpa"))]),
        "cabf.serverauth.ip_reverse_zone_domain_name_present",
    ),
    (
        "cn-not-in-san",
        lambda g: variant(
            g, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other.example.jp")])
        ),
        "cabf.serverauth.subscriber_common_name_unknown_source",
    ),
    (
        "subject-organization",
        lambda g: variant(
            g,
            subject=x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "www.example.jp"),
                ]
            ),
        ),
        "cabf.serverauth.dv.unknown_attribute_present",
    ),
    (
        "validity-201-days",
        lambda g: variant(
            g, not_after=g.not_valid_before_utc + timedelta(days=201) - timedelta(seconds=1)
        ),
        "cabf.serverauth.certificate_validity_period_exceeds_200_days",
    ),
    (
        "poison-in-final",
        lambda g: variant(g, add=[POISON]),
        "cabf.serverauth.subscriber.precert_poison_extension_present",
    ),
    (
        "ku-key-cert-sign",
        lambda g: variant(g, replace=[key_usage(key_cert_sign=True)]),
        "cabf.serverauth.subscriber_prohibited_ku_present",
    ),
    (
        "no-dv-policy",
        lambda g: variant(g, replace=[policies("1.3.6.1.4.1.53827.1.1.4")]),
        "cabf.serverauth.subscriber_missing_reserved_policy_oid",
    ),
    (
        "crldp-https",
        lambda g: variant(g, replace=[crldp("https://crl.example.jp/dv.crl")]),
        "cabf.serverauth.crldp_dpname_prohibited_uri_scheme",
    ),
    (
        "ca-true",
        lambda g: variant(g, replace=[BasicCA]),
        "cabf.serverauth.subscriber_basic_constraints_ca_bit_set",
    ),
    (
        "no-aki",
        lambda g: variant(g, drop=[ExtensionOID.AUTHORITY_KEY_IDENTIFIER]),
        "cabf.serverauth.subscriber.authority_key_identifier_extension_absent",
    ),
]


def test_good_certificate_is_clean(good: x509.Certificate, linter: CertificateLinter) -> None:
    report = linter.lint(
        good.public_bytes(serialization.Encoding.DER), "DV-FINAL-CERTIFICATE", SIGNING_TIME
    )
    assert report.ok, report.describe()
    # commonName is NOT RECOMMENDED by BR 7.1.2.7.2 but mandatory in the CP (see test_profile).
    assert {f.code for f in report.at_least(Severity.NOTICE)} == {COMMON_NAME_PRESENT}


@pytest.mark.parametrize(
    ("spoil", "code"), [(s, c) for _, s, c in BAD_CASES], ids=[i for i, _, _ in BAD_CASES]
)
async def test_bad_tbs_is_blocked(
    spoil: BadCase, code: str, good: x509.Certificate, linter: CertificateLinter
) -> None:
    der = spoil(good)
    report = await linter.alint(der, "DV-FINAL-CERTIFICATE", SIGNING_TIME)
    assert not report.ok
    assert code in {f.code for f in report.blocking}, report.describe()
    assert all(f.severity <= Severity.ERROR for f in report.blocking)


def test_client_auth_is_blocked_only_by_our_rule(
    good: x509.Certificate, linter: CertificateLinter
) -> None:
    """pkilint 0.13.3 follows BR 7.1.2.7.10 (clientAuth MAY); the Chrome rule is ours."""
    der = variant(
        good, replace=[eku(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)]
    )
    report = linter.lint(der, "DV-FINAL-CERTIFICATE", SIGNING_TIME)
    assert [f.code for f in report.blocking] == [EKU_NOT_SERVER_AUTH_ONLY], report.describe()


def test_kind_must_match_poison(hierarchy: Hierarchy, linter: CertificateLinter) -> None:
    req = request(ec.generate_private_key(ec.SECP256R1()).public_key())
    final = prepare(hierarchy.p256, req).lint_der
    pre = prepare(hierarchy.p256, req, precertificate=True).lint_der
    cases: list[tuple[bytes, LintKind, bool]] = [
        (final, "DV-FINAL-CERTIFICATE", True),
        (pre, "DV-PRE-CERTIFICATE", True),
        (pre, "DV-FINAL-CERTIFICATE", False),
        (final, "DV-PRE-CERTIFICATE", False),
    ]
    for der, kind, ok in cases:
        report = linter.lint(der, kind, SIGNING_TIME)
        assert report.ok is ok, report.describe()
    blocked = linter.lint(final, "DV-PRE-CERTIFICATE", SIGNING_TIME).blocking
    assert {f.code for f in blocked} == {
        "cabf.serverauth.subscriber.precert_poison_extension_absent"
    }


def test_validity_period_start_selects_the_rule(
    hierarchy: Hierarchy, linter: CertificateLinter
) -> None:
    """A 398-day certificate with notBefore before 2026-03-15: fine by its notBefore, blocked
    when linted for issuance on or after 2026-03-15 (SC-081)."""
    at = datetime(2026, 3, 14, 23, 0, tzinfo=UTC)
    req = request(ec.generate_private_key(ec.SECP256R1()).public_key(), signing_time=at)
    settings = ProfileSettings(
        crl_url=SETTINGS.crl_url, ca_issuers_url=SETTINGS.ca_issuers_url, validity_days=398
    )
    der = prepare(hierarchy.p256, req, settings).lint_der
    assert linter.lint(der, "DV-FINAL-CERTIFICATE").ok
    assert linter.lint(der, "DV-FINAL-CERTIFICATE", at).ok
    late = linter.lint(der, "DV-FINAL-CERTIFICATE", datetime(2026, 3, 15, tzinfo=UTC))
    assert "cabf.serverauth.certificate_validity_period_exceeds_200_days" in {
        f.code for f in late.blocking
    }, late.describe()
    # The override is per call: the next call without it is back to notBefore.
    assert linter.lint(der, "DV-FINAL-CERTIFICATE").ok


def test_undecodable_input_is_fatal(linter: CertificateLinter) -> None:
    for der in (b"", b"not DER", bytes.fromhex("3003020101")):
        report = linter.lint(der, "DV-FINAL-CERTIFICATE")
        assert [(f.severity, f.code) for f in report.blocking] == [(Severity.FATAL, UNDECODABLE)]
        assert [f.code for f in linter.lint_crl(der).blocking] == [UNDECODABLE]


def test_arguments_are_checked(good: x509.Certificate, linter: CertificateLinter) -> None:
    der = good.public_bytes(serialization.Encoding.DER)
    with pytest.raises(ValueError, match="unknown lint kind"):
        linter.lint(der, "EV-FINAL-CERTIFICATE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        linter.lint(der, "DV-FINAL-CERTIFICATE", datetime(2026, 11, 22))


def test_pinned_to_pkilint_0_13_3() -> None:
    assert PKILINT_VERSION == "0.13.3" == importlib.metadata.version("pkilint")


async def test_alint_runs_concurrently_and_agrees(
    good: x509.Certificate, linter: CertificateLinter
) -> None:
    der = good.public_bytes(serialization.Encoding.DER)
    bad = variant(good, replace=[san(WWW, x509.DNSName("server.local"))])
    expected_good = linter.lint(der, "DV-FINAL-CERTIFICATE", SIGNING_TIME)
    expected_bad = linter.lint(bad, "DV-FINAL-CERTIFICATE", SIGNING_TIME)
    reports = await asyncio.gather(
        *(
            linter.alint(d, "DV-FINAL-CERTIFICATE", SIGNING_TIME)
            for _ in range(10)
            for d in (der, bad)
        )
    )
    assert reports == [expected_good, expected_bad] * 10


# ------------------------------------------------------------------ CRLs


def _crl(hierarchy: Hierarchy, *, next_update: timedelta, reason: x509.ReasonFlags | None) -> bytes:
    issuer = hierarchy.rsa
    entry = x509.RevokedCertificateBuilder().serial_number(12345).revocation_date(SIGNING_TIME)
    if reason is not None:
        entry = entry.add_extension(x509.CRLReason(reason), critical=False)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(SIGNING_TIME)
        .next_update(SIGNING_TIME + next_update)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .add_extension(x509.CRLNumber(7), critical=False)
        .add_revoked_certificate(entry.build())
    )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def test_lint_crl(hierarchy: Hierarchy, linter: CertificateLinter) -> None:
    for reason in (None, x509.ReasonFlags.key_compromise, x509.ReasonFlags.superseded):
        report = await linter.alint_crl(
            _crl(hierarchy, next_update=timedelta(days=1), reason=reason)
        )
        assert report.kind == "CRL"
        assert not report.at_least(Severity.NOTICE), report.describe()

    too_long = linter.lint_crl(_crl(hierarchy, next_update=timedelta(days=11), reason=None))
    assert {f.code for f in too_long.blocking} == {"cabf.crl_invalid_validity_period"}
    hold = linter.lint_crl(
        _crl(hierarchy, next_update=timedelta(days=1), reason=x509.ReasonFlags.certificate_hold)
    )
    assert {f.code for f in hold.blocking} == {"cabf.crl_prohibited_reason_code"}


# ------------------------------------------------------------------ the indexed walk (issue 20)


def _pkilint_own_findings(
    der: bytes, kind: LintKind
) -> list[tuple[int, str, str | None, str, str]]:
    """What ``lint_cabf_serverauth_cert lint -t KIND`` reports, from a tree built and walked by
    pkilint alone (no :func:`_index`): severity, code, message, path, validator."""
    from pkilint import finding_filter, loader
    from pkilint.cabf import serverauth
    from pkilint.cabf.serverauth import serverauth_constants
    from pkilint.pkix import certificate

    cert_type = serverauth_constants.CertificateType.from_option_str(kind)
    tree = certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(), serverauth.create_validators(cert_type)
    )
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    results, _ = finding_filter.filter_results(
        serverauth.create_serverauth_finding_filters(cert_type), tree.validate(document.root)
    )
    return [
        (
            int(d.finding.severity),
            str(d.finding.code),
            None if d.message is None else str(d.message),
            str(r.node.path),
            type(r.validator).__name__,
        )
        for r in results
        for d in r.finding_descriptions
    ]


def _ours(report: LintReport) -> list[tuple[int, str, str | None, str, str]]:
    return [
        (int(f.severity), f.code, f.message, f.path, f.validator)
        for f in report.findings
        if f.code != EKU_NOT_SERVER_AUTH_ONLY
    ]


def test_br_lint_1_indexed_walk_reports_what_pkilint_reports(
    hierarchy: Hierarchy, good: x509.Certificate, linter: CertificateLinter
) -> None:
    """BR 4.3.1.2 / SC-075: skipping the validators that cannot match a node changes nothing
    pkilint finds, nor its order: every bad case, a precertificate and an RSA-issued one are
    linted by our tree and by a tree pkilint builds and walks alone (the dates by notBefore,
    pkilint's default)."""
    req = request(ec.generate_private_key(ec.SECP256R1()).public_key())
    cases: list[tuple[bytes, LintKind]] = [
        (good.public_bytes(serialization.Encoding.DER), "DV-FINAL-CERTIFICATE"),
        (prepare(hierarchy.p256, req, precertificate=True).lint_der, "DV-PRE-CERTIFICATE"),
        (prepare(hierarchy.rsa, req, precertificate=True).lint_der, "DV-PRE-CERTIFICATE"),
        (prepare(hierarchy.p256, req).lint_der, "DV-PRE-CERTIFICATE"),  # poison missing
        *((spoil(good), "DV-FINAL-CERTIFICATE") for _, spoil, _ in BAD_CASES),
    ]
    for der, kind in cases:
        expected = _pkilint_own_findings(der, kind)
        assert _ours(linter.lint(der, kind)) == expected
        assert _ours(linter.lint(der, kind)) == expected  # again, from the remembered shapes
    walk = linter._trees["DV-PRE-CERTIFICATE"].validator._validate_rec
    assert isinstance(walk, _IndexedWalk)


def test_br_lint_1_indexed_walk_asks_validators_it_cannot_vouch_for(
    good: x509.Certificate,
) -> None:
    """A validator whose ``match`` is not one of pkilint's audited ones is asked about every
    node, whatever its path says: the index may skip only what provably cannot match."""
    from pkilint import loader
    from pkilint.validation import Validator, ValidatorContainer

    class Everywhere(Validator):  # type: ignore[misc]
        def match(self, node: Any) -> bool:  # ignores its path
            return True

    class Plain(Validator):  # type: ignore[misc]
        pass

    everywhere, plain = Everywhere(path="nowhere"), Plain(path="nowhere")
    container = ValidatorContainer(validators=[everywhere, plain])
    _index(container)
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(
        good.public_bytes(serialization.Encoding.DER), "certificate"
    )
    results = container.validate(document.root)
    assert isinstance(container._validate_rec, _IndexedWalk)
    assert results and {r.validator for r in results} == {everywhere}
    assert len(results) == len(ValidatorContainer(validators=[everywhere]).validate(document.root))
