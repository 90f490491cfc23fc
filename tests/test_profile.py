"""The DV subscriber profile, byte by byte, against a throwaway hierarchy built here.

Hierarchy: a P-384 root, an RSA 2048 issuer, an ECDSA P-256 issuer and an ECDSA P-384 issuer
(the last only for the ecdsa-with-SHA384 encoding).  Subscriber keys: RSA 2048, RSA 4096, P-256
and P-384.  Every certificate is linted with the warm :class:`CertificateLinter`, and two are
also put through pkilint's own CLI as an independent check.  The expected DER below is written
out by hand from the BRs and RFC 5280, not produced by the code under test.

Two WARNINGs remain on clean certificates and are expected (see ``EXPECTED_WARNINGS``):

* ``cabf.serverauth.dv.common_name_attribute_present``: BR 7.1.2.7.2 makes commonName NOT
  RECOMMENDED in DV certificates, but the CP's Table 7.1.1.2 makes it mandatory, so we keep it
  (only when the first name fits in 64 characters).
* ``cabf.serverauth.subscriber_rsa_digitalsignature_and_keyencipherment_present`` (RSA keys only):
  the CP's table lists digitalSignature and keyEncipherment; BR 7.1.2.7.11 allows both but calls
  asserting them together NOT RECOMMENDED.  ``ProfileSettings.rsa_key_encipherment=False`` drops
  the bit and the warning (tested below).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from acme_ca.ca.lint import CertificateLinter, LintKind, LintReport, Severity
from acme_ca.ca.profile import (
    IssuanceRequest,
    PreparedCertificate,
    ProfileError,
    ProfileSettings,
    SubscriberPublicKey,
    build_certificate,
    issue,
    max_validity,
    new_serial,
    recommended_validity,
)
from acme_ca.ca.signer import HashName
from tests.support.profile import (
    CA_ISSUERS_URL,
    COMMON_NAME_PRESENT,
    CRL_URL,
    NAMES,
    SETTINGS,
    SIGNING_TIME,
    Hierarchy,
    Issuer,
    ca_name,
    make_hierarchy,
    prepare,
    request,
)

OCSP_URL = "http://ocsp.example.jp"

RSA_DIGSIG_AND_KEYENC = (
    "cabf.serverauth.subscriber_rsa_digitalsignature_and_keyencipherment_present"
)

# ------------------------------------------------------------------ DER, written out by hand

OID_AKI = "0603551d23"
OID_SKI = "0603551d0e"
OID_KU = "0603551d0f"
OID_EKU = "0603551d25"
OID_BC = "0603551d13"
OID_CP = "0603551d20"
OID_CRLDP = "0603551d1f"
OID_AIA = "06082b06010505070101"
OID_SAN = "0603551d11"
OID_POISON = "060a2b06010401d679020403"
PROFILE_ORDER = [OID_AKI, OID_KU, OID_EKU, OID_BC, OID_CP, OID_CRLDP, OID_AIA, OID_SAN]
CRITICAL = {OID_KU, OID_BC, OID_POISON}

SPKI_ALGORITHMS = {  # BR 7.1.3.1
    "rsa2048": "300d06092a864886f70d0101010500",
    "rsa4096": "300d06092a864886f70d0101010500",
    "p256": "301306072a8648ce3d020106082a8648ce3d030107",
    "p384": "301006072a8648ce3d020106052b81040022",
}
SIGNATURE_ALGORITHMS = {  # BR 7.1.3.2
    ("rsa", "sha256"): "300d06092a864886f70d01010b0500",
    ("rsa", "sha384"): "300d06092a864886f70d01010c0500",
    ("p256", "sha256"): "300a06082a8648ce3d040302",
    ("p384", "sha384"): "300a06082a8648ce3d040303",
}
CERTIFICATE_POLICIES = (
    "3019"  # SEQUENCE OF PolicyInformation, 25 octets
    "3008060667810c010201"  # { policyIdentifier 2.23.140.1.2.1 }, no qualifiers
    "300d060b2b0601040183a443010104"  # { policyIdentifier 1.3.6.1.4.1.53827.1.1.4 }
)
EKU_SERVER_AUTH_ONLY = "300a06082b06010505070301"
KU_DIGITAL_SIGNATURE = "03020780"  # 1 bit used: digitalSignature(0)
KU_DIGITAL_SIGNATURE_KEY_ENCIPHERMENT = "030205a0"  # bits 0 and 2, 5 unused
BASIC_CONSTRAINTS_EE = "3000"  # cA DEFAULT FALSE is omitted in DER


def tlv(data: bytes, at: int = 0) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``at``."""
    tag, first, start = data[at], data[at + 1], at + 2
    length = first
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return tag, start, start + length


def content(element: bytes) -> bytes:
    _, start, end = tlv(element)
    return element[start:end]


def children(element: bytes) -> list[bytes]:
    _, start, end = tlv(element)
    out, at = [], start
    while at < end:
        _, _, stop = tlv(element, at)
        out.append(element[at:stop])
        at = stop
    return out


def enc(tag: int, body: bytes) -> bytes:
    """A short-form DER element (test values stay under 128 octets)."""
    assert len(body) < 0x80
    return bytes([tag, len(body)]) + body


@dataclass(frozen=True)
class Tbs:
    version: bytes
    serial: bytes
    signature: bytes
    issuer: bytes
    validity: bytes
    subject: bytes
    spki: bytes
    extensions: list[tuple[str, bool, bytes]]  # (OID TLV hex, critical, extnValue content)


def parse_tbs(tbs_der: bytes) -> Tbs:
    version, serial, signature, issuer, validity, subject, spki, *rest = children(tbs_der)
    assert len(rest) == 1 and rest[0][0] == 0xA3, "only [3] extensions may follow the SPKI"
    extensions = []
    for ext in children(children(rest[0])[0]):
        parts = children(ext)
        critical = len(parts) == 3
        if critical:
            assert parts[1] == bytes.fromhex("0101ff"), "critical is DEFAULT FALSE: TRUE or absent"
        extensions.append((parts[0].hex(), critical, content(parts[-1])))
    return Tbs(version, serial, signature, issuer, validity, subject, spki, extensions)


def extension(tbs: Tbs, oid: str) -> tuple[bool, bytes]:
    found = [(critical, value) for o, critical, value in tbs.extensions if o == oid]
    assert len(found) == 1, f"{oid} appears {len(found)} times"
    return found[0]


def subject_of(cert: x509.Certificate) -> bytes:
    return children(cert.tbs_certificate_bytes)[5]


# ------------------------------------------------------------------ throwaway hierarchy


def make_subscriber_keys() -> dict[str, SubscriberPublicKey]:
    return {
        "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
        "rsa4096": rsa.generate_private_key(public_exponent=65537, key_size=4096).public_key(),
        "p256": ec.generate_private_key(ec.SECP256R1()).public_key(),
        "p384": ec.generate_private_key(ec.SECP384R1()).public_key(),
    }


async def prepare_and_issue(
    issuer: Issuer,
    req: IssuanceRequest,
    settings: ProfileSettings = SETTINGS,
    *,
    precertificate: bool = False,
) -> tuple[PreparedCertificate, x509.Certificate]:
    prepared = prepare(issuer, req, settings, precertificate=precertificate)
    return prepared, await issue(prepared, issuer.signer(), issuer.hash)


def expected_warnings(public_key: SubscriberPublicKey, with_cn: bool = True) -> set[str]:
    """WARNINGs a clean certificate of ours still carries; see the module docstring."""
    codes = {COMMON_NAME_PRESENT} if with_cn else set()
    if isinstance(public_key, rsa.RSAPublicKey):
        codes.add(RSA_DIGSIG_AND_KEYENC)
    return codes


def assert_clean(report: LintReport, allowed_warnings: set[str]) -> None:
    """No ERROR/FATAL, and exactly the explained WARNING/NOTICE findings, printed on failure."""
    assert not report.blocking, report.describe(Severity.NOTICE)
    remaining = {f.code for f in report.at_least(Severity.NOTICE)}
    assert remaining == allowed_warnings, report.describe(Severity.NOTICE)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def hierarchy() -> Hierarchy:
    return make_hierarchy()


@pytest.fixture(scope="module")
def subscriber_keys() -> dict[str, SubscriberPublicKey]:
    return make_subscriber_keys()


@dataclass(frozen=True)
class Issued:
    issuer: Issuer
    request: IssuanceRequest
    prepared: PreparedCertificate
    cert: x509.Certificate
    pre_prepared: PreparedCertificate
    precert: x509.Certificate


@pytest.fixture(scope="module")
def issued(
    hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> dict[str, Issued]:
    """One final certificate and one precertificate (same serial) per subscriber key."""

    async def run() -> dict[str, Issued]:
        out = {}
        for label, public_key in subscriber_keys.items():
            issuer = hierarchy.for_key(public_key)
            req = request(public_key)
            prepared, cert = await prepare_and_issue(issuer, req)
            pre_prepared, precert = await prepare_and_issue(issuer, req, precertificate=True)
            out[label] = Issued(issuer, req, prepared, cert, pre_prepared, precert)
        return out

    return asyncio.run(run())


KEY_LABELS = ["rsa2048", "rsa4096", "p256", "p384"]


# ------------------------------------------------------------------ linting


@pytest.mark.parametrize("label", KEY_LABELS)
def test_subscriber_certificates_lint_clean(
    label: str, issued: dict[str, Issued], linter: CertificateLinter
) -> None:
    item = issued[label]
    allowed = expected_warnings(item.request.public_key)
    cases: list[tuple[bytes, LintKind]] = [
        (item.prepared.lint_der, "DV-FINAL-CERTIFICATE"),
        (item.cert.public_bytes(serialization.Encoding.DER), "DV-FINAL-CERTIFICATE"),
        (item.pre_prepared.lint_der, "DV-PRE-CERTIFICATE"),
        (item.precert.public_bytes(serialization.Encoding.DER), "DV-PRE-CERTIFICATE"),
    ]
    for der, kind in cases:
        assert_clean(linter.lint(der, kind, SIGNING_TIME), allowed)
        # pkilint's default validity start (notBefore) must agree on a certificate this far
        # from any BR date boundary.
        assert_clean(linter.lint(der, kind), allowed)


@pytest.mark.parametrize("label", ["rsa2048", "p256"])
def test_pkilint_cli_agrees(
    label: str, issued: dict[str, Issued], linter: CertificateLinter, tmp_path: Path
) -> None:
    """The real ``lint_cabf_serverauth_cert`` CLI, as an independent check of the warm linter."""
    item = issued[label]
    pem = tmp_path / f"{label}.pem"
    pem.write_bytes(item.cert.public_bytes(serialization.Encoding.PEM))
    cli = Path(sys.executable).parent / "lint_cabf_serverauth_cert"
    run = subprocess.run(
        [
            str(cli),
            "lint",
            "-t",
            "DV-FINAL-CERTIFICATE",
            "-f",
            "JSON",
            "-s",
            "NOTICE",
            "--validity-period-start",
            SIGNING_TIME.isoformat(),
            str(pem),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.stderr == "", run.stderr
    findings = [
        (d["severity"], d["code"])
        for r in json.loads(run.stdout)["results"]
        for d in r["finding_descriptions"]
    ]
    assert not [f for f in findings if f[0] in ("FATAL", "ERROR")], run.stdout
    # The exit code counts findings at or above the threshold (here: the expected WARNINGs).
    assert run.returncode == len(findings), run.stdout
    cli_codes = {code for _, code in findings}
    assert cli_codes == expected_warnings(item.request.public_key), run.stdout
    in_process = linter.lint(
        item.cert.public_bytes(serialization.Encoding.DER), "DV-FINAL-CERTIFICATE", SIGNING_TIME
    )
    assert {f.code for f in in_process.at_least(Severity.NOTICE)} == cli_codes


# ------------------------------------------------------------------ signing


@pytest.mark.parametrize("label", KEY_LABELS)
def test_issued_signature_verifies_with_issuer_key(label: str, issued: dict[str, Issued]) -> None:
    item = issued[label]
    for cert in (item.cert, item.precert):
        cert.verify_directly_issued_by(item.issuer.cert)
        issuer_key = item.issuer.key.public_key()
        if isinstance(issuer_key, rsa.RSAPublicKey):
            issuer_key.verify(
                cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256()
            )
        else:
            assert isinstance(issuer_key, ec.EllipticCurvePublicKey)
            issuer_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("label", KEY_LABELS)
def test_linted_tbs_equals_signed_tbs(label: str, issued: dict[str, Issued]) -> None:
    item = issued[label]
    for prepared, cert in ((item.prepared, item.cert), (item.pre_prepared, item.precert)):
        lint_copy = x509.load_der_x509_certificate(prepared.lint_der)
        assert lint_copy.tbs_certificate_bytes == prepared.tbs_der
        assert cert.tbs_certificate_bytes == prepared.tbs_der
        # The lint copy carries a throwaway signature: it can never pass for the real thing.
        with pytest.raises(Exception):  # InvalidSignature or ValueError, by backend
            lint_copy.verify_directly_issued_by(item.issuer.cert)


async def test_issue_refuses_other_key_or_hash(
    hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    prepared = prepare(hierarchy.rsa, request(subscriber_keys["p256"]))
    with pytest.raises(ProfileError, match="signer key"):
        await issue(prepared, hierarchy.p256.signer(), "sha256")
    with pytest.raises(ProfileError, match="built for sha256"):
        await issue(prepared, hierarchy.rsa.signer(), "sha384")


def test_build_refuses_mismatched_issuer(
    hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    with pytest.raises(ProfileError, match="not the key in issuer_cert"):
        build_certificate(
            hierarchy.rsa.cert,
            hierarchy.p256.key.public_key(),
            "sha256",
            SETTINGS,
            request(subscriber_keys["p256"]),
        )
    with pytest.raises(ValueError, match="must sign with sha256"):
        prepare(hierarchy.p256, request(subscriber_keys["p256"]), hash="sha384")


# ------------------------------------------------------------------ BR-PROF checklist


def test_br_prof_1_serial_64_bits_positive_max_20_octets(
    issued: dict[str, Issued], hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    serials = [new_serial() for _ in range(2000)]
    assert len(set(serials)) == len(serials)
    for serial in serials:
        assert 0 < serial < 2**159
        assert serial.bit_length() == 129  # fixed top bit over 128 CSPRNG bits
    # The low 128 bits look random: every bit position takes both values across 2000 draws.
    assert all({(s >> bit) & 1 for s in serials} == {0, 1} for bit in range(128))

    for item in issued.values():
        tbs = parse_tbs(item.prepared.tbs_der)
        assert tbs.version == bytes.fromhex("a003020102")  # v3
        assert tbs.serial[0] == 0x02
        body = content(tbs.serial)
        assert len(body) == 17 and body[0] < 0x80, "positive, 17 octets, no padding"
        assert int.from_bytes(body, "big") == item.request.serial == item.cert.serial_number
        assert tbs.issuer == subject_of(item.issuer.cert)  # byte-identical issuer
        # signatureAlgorithm identical to tbsCertificate.signature
        outer = children(item.cert.public_bytes(serialization.Encoding.DER))[1]
        assert outer == tbs.signature
        assert item.pre_prepared.serial == item.prepared.serial  # CT-2: same serial

    # The largest serial BR allows still encodes in 20 octets.
    largest = replace(request(subscriber_keys["p256"]), serial=2**159 - 1)
    body = content(parse_tbs(prepare(hierarchy.p256, largest).tbs_der).serial)
    assert len(body) == 20 and body[0] == 0x7F
    for bad in (0, -1, 2**159):
        with pytest.raises(ProfileError, match="serial"):
            replace(largest, serial=bad)


@pytest.mark.parametrize("label", KEY_LABELS)
def test_br_prof_2_spki_encodings(label: str, issued: dict[str, Issued]) -> None:
    item = issued[label]
    tbs = parse_tbs(item.prepared.tbs_der)
    key_der = item.request.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert tbs.spki == key_der
    assert children(tbs.spki)[0].hex() == SPKI_ALGORITHMS[label]


@pytest.mark.parametrize(
    ("issuer_name", "hash", "expected"),
    [
        ("rsa", "sha256", SIGNATURE_ALGORITHMS[("rsa", "sha256")]),
        ("rsa", "sha384", SIGNATURE_ALGORITHMS[("rsa", "sha384")]),
        ("p256", "sha256", SIGNATURE_ALGORITHMS[("p256", "sha256")]),
        ("p384", "sha384", SIGNATURE_ALGORITHMS[("p384", "sha384")]),
    ],
    ids=[
        "sha256WithRSAEncryption",
        "sha384WithRSAEncryption",
        "ecdsa-with-SHA256",
        "ecdsa-with-SHA384",
    ],
)
async def test_br_prof_3_signature_algorithm_bytes(
    issuer_name: str,
    hash: HashName,
    expected: str,
    hierarchy: Hierarchy,
    subscriber_keys: dict[str, SubscriberPublicKey],
    linter: CertificateLinter,
) -> None:
    issuer: Issuer = getattr(hierarchy, issuer_name)
    req = request(subscriber_keys["p256"])
    prepared = prepare(issuer, req, hash=hash)
    cert = await issue(prepared, issuer.signer(), hash)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert parse_tbs(prepared.tbs_der).signature.hex() == expected
    assert children(der)[1].hex() == expected
    cert.verify_directly_issued_by(issuer.cert)
    assert_clean(
        linter.lint(der, "DV-FINAL-CERTIFICATE", SIGNING_TIME), expected_warnings(req.public_key)
    )


def test_br_prof_4_subject_cn_only(issued: dict[str, Issued]) -> None:
    for item in issued.values():
        tbs = parse_tbs(item.prepared.tbs_der)
        cn = NAMES[0].encode()
        # SEQUENCE { SET { SEQUENCE { id-at-commonName, UTF8String } } }: one RDN, CN only
        atv = enc(0x30, bytes.fromhex("0603550403") + enc(0x0C, cn))
        assert tbs.subject == enc(0x30, enc(0x31, atv))
        critical, _ = extension(tbs, OID_SAN)
        assert critical is False  # subject not empty: SAN MUST NOT be critical


@pytest.mark.parametrize(
    ("first", "with_cn"),
    [
        ("a" * 51 + ".example.jp", True),  # exactly 62 characters
        ("a" * 53 + ".example.jp", True),  # exactly 64 characters: ub-common-name
        ("a" * 54 + ".example.jp", False),  # 65 characters
        ("a" * 63 + "." + "b" * 20 + ".example.jp", False),
    ],
    ids=["62", "64", "65", "95"],
)
async def test_long_first_name_gives_empty_subject_and_critical_san(
    first: str,
    with_cn: bool,
    hierarchy: Hierarchy,
    subscriber_keys: dict[str, SubscriberPublicKey],
    linter: CertificateLinter,
) -> None:
    public_key = subscriber_keys["p256"]
    req = request(public_key, names=(first, "example.jp"))
    kinds: list[tuple[bool, LintKind]] = [
        (False, "DV-FINAL-CERTIFICATE"),
        (True, "DV-PRE-CERTIFICATE"),
    ]
    for precertificate, kind in kinds:
        prepared, cert = await prepare_and_issue(hierarchy.p256, req, precertificate=precertificate)
        tbs = parse_tbs(prepared.tbs_der)
        san_critical, _ = extension(tbs, OID_SAN)
        if with_cn:
            assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == first
            assert san_critical is False
        else:
            assert tbs.subject == bytes.fromhex("3000")  # empty SEQUENCE
            assert san_critical is True  # BR 7.1.2.7.12 / RFC 5280 4.2.1.6
        assert_clean(
            linter.lint(cert.public_bytes(serialization.Encoding.DER), kind, SIGNING_TIME),
            expected_warnings(public_key, with_cn=with_cn),
        )


def test_br_prof_7_extensions_and_criticality(
    issued: dict[str, Issued], hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    for item in issued.values():
        tbs = parse_tbs(item.prepared.tbs_der)
        assert [oid for oid, _, _ in tbs.extensions] == PROFILE_ORDER
        for oid, critical, _ in tbs.extensions:
            assert critical is (oid in CRITICAL), oid
        # AKI: keyIdentifier [0] only, equal to the issuer's SKI extension value.
        issuer_ski = item.issuer.cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.key_identifier
        _, aki = extension(tbs, OID_AKI)
        assert aki == enc(0x30, enc(0x80, issuer_ski))
        _, bc = extension(tbs, OID_BC)
        assert bc.hex() == BASIC_CONSTRAINTS_EE

    # SKI and OCSP when configured: SKI right after AKI, OCSP before caIssuers.
    public_key = subscriber_keys["p256"]
    settings = replace(SETTINGS, include_subject_key_identifier=True, ocsp_url=OCSP_URL)
    tbs = parse_tbs(prepare(hierarchy.p256, request(public_key), settings).tbs_der)
    assert [oid for oid, _, _ in tbs.extensions] == [OID_AKI, OID_SKI, *PROFILE_ORDER[1:]]
    ski_critical, ski = extension(tbs, OID_SKI)
    assert ski_critical is False
    assert ski == enc(0x04, x509.SubjectKeyIdentifier.from_public_key(public_key).digest)
    _, aia = extension(tbs, OID_AIA)
    assert aia == enc(
        0x30,
        enc(0x30, bytes.fromhex("06082b06010505073001") + enc(0x86, OCSP_URL.encode()))
        + enc(0x30, bytes.fromhex("06082b06010505073002") + enc(0x86, CA_ISSUERS_URL.encode())),
    )


def test_issuer_without_ski_gets_computed_aki(
    hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .issuer_name(hierarchy.root.cert.subject)
        .subject_name(ca_name("No SKI CA"))
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(datetime(2025, 6, 1, tzinfo=UTC))
        .not_valid_after(datetime(2035, 6, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(hierarchy.root.key, hashes.SHA384())
    )
    tbs = parse_tbs(prepare(Issuer(cert, key, "sha256"), request(subscriber_keys["p256"])).tbs_der)
    _, aki = extension(tbs, OID_AKI)
    expected = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    assert aki == enc(0x30, enc(0x80, expected))


def test_br_prof_8_certificate_policies(
    issued: dict[str, Issued], hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    for item in issued.values():
        critical, policies = extension(parse_tbs(item.prepared.tbs_der), OID_CP)
        assert critical is False
        assert policies.hex() == CERTIFICATE_POLICIES  # DV OID first, no qualifiers

    settings = replace(SETTINGS, policy_oid="1.2.3.4")
    _, policies = extension(
        parse_tbs(prepare(hierarchy.p256, request(subscriber_keys["p256"]), settings).tbs_der),
        OID_CP,
    )
    assert policies.hex() == (
        "3011"  # 17 octets
        "3008060667810c010201"  # 2.23.140.1.2.1 stays first
        "300506032a0304"  # 1.2.3.4
    )
    for bad in ("2.5.29.32.0", "2.23.140.1.2.1", "2.23.140.1.2.2", "not-an-oid"):
        with pytest.raises(ProfileError, match="policy_oid"):
            replace(SETTINGS, policy_oid=bad)


def test_br_prof_9_eku_server_auth_only(issued: dict[str, Issued]) -> None:
    for item in issued.values():
        critical, eku = extension(parse_tbs(item.prepared.tbs_der), OID_EKU)
        assert critical is False
        assert eku.hex() == EKU_SERVER_AUTH_ONLY


async def test_br_prof_10_key_usage_rsa_vs_ecdsa(
    issued: dict[str, Issued],
    hierarchy: Hierarchy,
    subscriber_keys: dict[str, SubscriberPublicKey],
    linter: CertificateLinter,
) -> None:
    expected = {
        "rsa2048": KU_DIGITAL_SIGNATURE_KEY_ENCIPHERMENT,
        "rsa4096": KU_DIGITAL_SIGNATURE_KEY_ENCIPHERMENT,
        "p256": KU_DIGITAL_SIGNATURE,
        "p384": KU_DIGITAL_SIGNATURE,
    }
    for label, item in issued.items():
        critical, ku = extension(parse_tbs(item.prepared.tbs_der), OID_KU)
        assert critical is True
        assert ku.hex() == expected[label], label

    # Without keyEncipherment, RSA certificates lose the BR NOT RECOMMENDED warning.
    settings = replace(SETTINGS, rsa_key_encipherment=False)
    public_key = subscriber_keys["rsa2048"]
    prepared, cert = await prepare_and_issue(hierarchy.rsa, request(public_key), settings)
    _, ku = extension(parse_tbs(prepared.tbs_der), OID_KU)
    assert ku.hex() == KU_DIGITAL_SIGNATURE
    report = linter.lint(
        cert.public_bytes(serialization.Encoding.DER), "DV-FINAL-CERTIFICATE", SIGNING_TIME
    )
    assert_clean(report, {COMMON_NAME_PRESENT})


def test_br_prof_11_san_and_crldp(issued: dict[str, Issued]) -> None:
    for item in issued.values():
        tbs = parse_tbs(item.prepared.tbs_der)
        _, san = extension(tbs, OID_SAN)
        assert san == enc(0x30, b"".join(enc(0x82, n.encode()) for n in NAMES))  # request order
        critical, crldp = extension(tbs, OID_CRLDP)
        assert critical is False
        # one DistributionPoint { distributionPoint [0] { fullName [0] { URI } } }, no reasons,
        # no cRLIssuer
        uri = enc(0x86, CRL_URL.encode())
        assert crldp == enc(0x30, enc(0x30, enc(0xA0, enc(0xA0, uri))))
        critical, aia = extension(tbs, OID_AIA)
        assert critical is False
        assert aia == enc(
            0x30,
            enc(0x30, bytes.fromhex("06082b06010505073002") + enc(0x86, CA_ISSUERS_URL.encode())),
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("crl_url", "https://crl.example.jp/dv.crl"),
        ("crl_url", "ldap://crl.example.jp/dv"),
        ("ca_issuers_url", "https://repo.example.jp/dv.der"),
        ("ocsp_url", "https://ocsp.example.jp"),
        ("ocsp_url", "http:///no-host"),
    ],
)
def test_settings_require_http_urls(field: str, value: str) -> None:
    changes: dict[str, Any] = {field: value}
    with pytest.raises(ProfileError, match=field):
        replace(SETTINGS, **changes)


@pytest.mark.parametrize(
    ("names", "match"),
    [
        ((), "non-empty"),
        (("example.jp.",), "trailing dot"),
        (("example.jp", "EXAMPLE.jp"), "duplicate"),
        (("exämple.jp",), "LDH"),
        (("",), "non-empty"),
    ],
    ids=["none", "trailing-dot", "duplicate", "unicode", "empty"],
)
def test_request_rejects_bad_names(
    names: tuple[str, ...], match: str, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    with pytest.raises(ProfileError, match=match):
        IssuanceRequest(names, subscriber_keys["p256"], new_serial(), SIGNING_TIME)


def test_request_rejects_disallowed_keys() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ProfileError, match="1024 bits"):
        IssuanceRequest(NAMES, small, new_serial(), SIGNING_TIME)
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(ProfileError, match="secp256k1"):
        IssuanceRequest(NAMES, k1, new_serial(), SIGNING_TIME)
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ProfileError, match="timezone-aware"):
        IssuanceRequest(NAMES, p256, new_serial(), datetime(2026, 11, 22))


# ------------------------------------------------------------------ CT


@pytest.mark.parametrize("label", KEY_LABELS)
def test_ct_1_poison_extension(label: str, issued: dict[str, Issued]) -> None:
    item = issued[label]
    pre = parse_tbs(item.pre_prepared.tbs_der)
    final = parse_tbs(item.prepared.tbs_der)
    assert pre.extensions[-1] == (OID_POISON, True, bytes.fromhex("0500"))
    assert OID_POISON not in [oid for oid, _, _ in final.extensions]
    # CT-2/CT-3: precertificate = final certificate + poison; everything else byte-identical.
    assert pre.extensions[:-1] == final.extensions
    assert (
        pre.version,
        pre.serial,
        pre.signature,
        pre.issuer,
        pre.validity,
        pre.subject,
        pre.spki,
    ) == (
        final.version,
        final.serial,
        final.signature,
        final.issuer,
        final.validity,
        final.subject,
        final.spki,
    )
    assert item.pre_prepared.precertificate and not item.prepared.precertificate


# ------------------------------------------------------------------ BR-VAL-1


@pytest.mark.parametrize(
    ("signing_time", "max_days", "should_days"),
    [
        (datetime(2026, 3, 14, 12, 0, tzinfo=UTC), 398, 397),
        (datetime(2026, 3, 14, 23, 59, 59, tzinfo=UTC), 398, 397),
        (datetime(2026, 3, 15, 0, 0, tzinfo=UTC), 200, 199),
        (datetime(2027, 3, 14, 12, 0, tzinfo=UTC), 200, 199),
        (datetime(2027, 3, 14, 23, 59, 59, tzinfo=UTC), 200, 199),
        (datetime(2027, 3, 15, 0, 0, tzinfo=UTC), 100, 99),
        (datetime(2029, 3, 14, 12, 0, tzinfo=UTC), 100, 99),
        (datetime(2029, 3, 15, 0, 0, tzinfo=UTC), 47, 46),
        (datetime(2035, 1, 1, tzinfo=UTC), 47, 46),
    ],
    ids=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
)
async def test_br_val_1_validity_schedule(
    signing_time: datetime,
    max_days: int,
    should_days: int,
    hierarchy: Hierarchy,
    subscriber_keys: dict[str, SubscriberPublicKey],
    linter: CertificateLinter,
) -> None:
    assert max_validity(signing_time) == timedelta(days=max_days)
    assert recommended_validity(signing_time) == timedelta(days=should_days)
    # Same instant in another zone: the schedule is in UTC.
    jst = signing_time.astimezone(datetime.fromisoformat("2000-01-01T00:00:00+09:00").tzinfo)
    assert max_validity(jst) == timedelta(days=max_days)

    public_key = subscriber_keys["p256"]
    req = request(public_key, signing_time=signing_time)
    for validity_days, days in ((None, should_days), (max_days, max_days)):
        settings = replace(SETTINGS, validity_days=validity_days)
        prepared, cert = await prepare_and_issue(hierarchy.p256, req, settings)
        # Inclusive counting: notAfter - notBefore + 1 s is the validity period.
        assert prepared.not_before == signing_time - SETTINGS.backdate
        assert prepared.not_after == prepared.not_before + timedelta(days=days, seconds=-1)
        assert cert.not_valid_before_utc == prepared.not_before
        assert cert.not_valid_after_utc == prepared.not_after
        report = linter.lint(
            cert.public_bytes(serialization.Encoding.DER), "DV-FINAL-CERTIFICATE", signing_time
        )
        allowed = expected_warnings(public_key)
        if days == max_days:
            # At the MUST limit, pkilint warns that the SHOULD (one day less) is exceeded.
            allowed.add(f"cabf.serverauth.certificate_validity_period_exceeds_{should_days}_days")
        assert_clean(report, allowed)


async def test_validity_days_above_max_capped(
    hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    at = datetime(2027, 3, 15, 0, 0, 30, tzinfo=UTC)
    req = request(subscriber_keys["p256"], signing_time=at)
    for asked, got in ((398, 100), (200, 100), (100, 100), (90, 90), (1, 1)):
        settings = replace(SETTINGS, validity_days=asked)
        prepared = prepare(hierarchy.p256, req, settings)
        assert prepared.not_after - prepared.not_before + timedelta(seconds=1) == timedelta(
            days=got
        )
    # The limit is taken at the signing time, even when backdating puts notBefore on the
    # previous (longer) side of a boundary.
    settings = replace(SETTINGS, validity_days=398, backdate=timedelta(minutes=5))
    prepared = prepare(hierarchy.p256, req, settings)
    assert prepared.not_before < datetime(2027, 3, 15, tzinfo=UTC)
    assert prepared.not_after - prepared.not_before + timedelta(seconds=1) == timedelta(days=100)
    with pytest.raises(ProfileError, match="validity_days"):
        replace(SETTINGS, validity_days=0)


def test_backdate_whole_seconds_and_48h_bound(
    hierarchy: Hierarchy, subscriber_keys: dict[str, SubscriberPublicKey]
) -> None:
    at = SIGNING_TIME.replace(microsecond=654321)
    settings = replace(SETTINGS, backdate=timedelta(hours=1))
    prepared = prepare(hierarchy.p256, request(subscriber_keys["p256"], signing_time=at), settings)
    assert prepared.not_before == datetime(2026, 11, 22, 11, 0, 0, tzinfo=UTC)
    settings = replace(SETTINGS, backdate=timedelta(0))
    prepared = prepare(hierarchy.p256, request(subscriber_keys["p256"]), settings)
    assert prepared.not_before == SIGNING_TIME
    for bad in (timedelta(hours=48), timedelta(seconds=-1)):
        with pytest.raises(ProfileError, match="backdate"):
            replace(SETTINGS, backdate=bad)
