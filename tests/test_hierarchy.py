"""The development hierarchy (`acme-ca init`) and loading issuers for signing.

Software keys end to end, SoftHSM2 keys through the shared token, the BR profiles checked by
hand and by pkilint, chains checked by cryptography and by `openssl verify`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    SignatureAlgorithmOID,
)

from acme_ca.ca.der import sign_tbs_certificate, throwaway_signed_certificate
from acme_ca.ca.hierarchy import (
    CROSS_FILE,
    HierarchyError,
    init_hierarchy,
)
from acme_ca.ca.issuers import Issuer, IssuerSet, load_issuers, open_root_signer
from acme_ca.ca.issuers_file import ISSUERS_FILE, IssuerConfigError, read_issuers_file
from acme_ca.ca.settings import HierarchySettings, IssuerSettings
from acme_ca.clock import FixedClock
from acme_ca.config import Config
from tests.support.pkilint import pkilint
from tests.support.softhsm import SoftHsmToken, shared_token, softhsm_available

requires_softhsm = pytest.mark.skipif(not softhsm_available(), reason="SoftHSM2 not installed")

REPO = Path(__file__).resolve().parent.parent
LINT_CERT = REPO / ".venv" / "bin" / "lint_cabf_serverauth_cert"
LINT_CHAIN = REPO / ".venv" / "bin" / "lint_pkix_signer_signee_cert_chain"
#: A public-looking name: pkilint flags 127.0.0.1 and unregistrable names as internal names.
STATUS = "http://pki.acme-ca-test.example.com"
DV = x509.ObjectIdentifier("2.23.140.1.2.1")
OV = x509.ObjectIdentifier("2.23.140.1.2.2")
T = TypeVar("T")


def run_in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine in its own loop: module fixtures may be set up inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, factory()).result()


def make_config(home: Path, **overrides: Any) -> Config:
    return replace(Config(), home=home, status_base_url=STATUS, **overrides).validate()


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def ext(cert: x509.Certificate, kind: type[T]) -> tuple[T, bool]:
    found = cert.extensions.get_extension_for_class(kind)  # type: ignore[type-var]
    return found.value, found.critical


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(autouse=True)
def no_pin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_pin refuses a second PIN source; keep the developer's environment out."""
    monkeypatch.delenv("ACME_CA_PKCS11_PIN", raising=False)


@pytest.fixture(scope="module")
def software_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One software hierarchy for the read-only tests; copy it before changing anything."""
    home = tmp_path_factory.mktemp("software-home")
    run_in_thread(lambda: init_hierarchy(HierarchySettings.from_config(make_config(home))))
    return home


@pytest.fixture
def home_copy(software_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(software_home, home)
    return home


@pytest.fixture
def pki(software_home: Path) -> Path:
    return software_home / "pki"


# ----------------------------------------------------------------------------- init


def test_software_init_writes_the_hierarchy(pki: Path) -> None:
    names = {p.name for p in pki.iterdir()}
    assert {
        "root.pem",
        "root-x1.pem",
        CROSS_FILE,
        "dv-rsa.pem",
        "dv-ecc.pem",
        "ov-rsa.pem",
        "ov-ecc.pem",
        ISSUERS_FILE,
        "keys",
    } <= names
    keys = pki / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    key_files = sorted(p.name for p in keys.iterdir())
    assert key_files == [
        "dv-ecc.key.pem",
        "dv-rsa.key.pem",
        "ov-ecc.key.pem",
        "ov-rsa.key.pem",
        "root-r1.key.pem",
        "root-x1.key.pem",
    ]
    for key in keys.iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    parsed = read_issuers_file(pki)
    assert parsed.root.subject == load(pki / "root.pem").subject
    assert list(parsed.issuers) == ["dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc"]
    assert {n: e.purpose for n, e in parsed.issuers.items()} == {
        "dv-rsa": "dv",
        "dv-ecc": "dv",
        "ov-rsa": "ov",
        "ov-ecc": "ov",
    }
    # The DV tables keep the shape older releases wrote: no purpose key (read as "dv").
    assert (pki / ISSUERS_FILE).read_text().count("purpose = ") == 2
    for name, entry in parsed.issuers.items():
        assert entry.chain == ()
        assert entry.alternate_chains == ((load(pki / CROSS_FILE),),)
        assert entry.key.key_file == pki / "keys" / f"{name}.key.pem"
        assert entry.crl_url == f"{STATUS}/crl/{name}.crl"
        assert entry.ocsp_url == f"{STATUS}/ocsp/{name}"
        assert entry.ca_issuers_url == f"{STATUS}/issuer/{name}.cer"
    assert set(parsed.roots) == {"root-r1", "root-x1"}
    assert parsed.roots["root-r1"].crl_url == f"{STATUS}/crl/root-r1.crl"


async def test_init_twice_is_idempotent(home_copy: Path) -> None:
    config = make_config(home_copy)
    before = snapshot(config.pki_path)
    assert (
        await init_hierarchy(HierarchySettings.from_config(config))
        == config.pki_path / ISSUERS_FILE
    )
    assert snapshot(config.pki_path) == before


async def test_concurrent_inits_make_one_hierarchy(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    first, second = await asyncio.gather(
        init_hierarchy(HierarchySettings.from_config(config)),
        init_hierarchy(HierarchySettings.from_config(config)),
    )
    assert first == second == config.pki_path / ISSUERS_FILE
    assert len(list((config.pki_path / "keys").iterdir())) == 6
    (await load_issuers(IssuerSettings.from_config(config))).names()


async def test_partial_directory_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.pki_path.mkdir(parents=True)
    (config.pki_path / "root.pem").write_text("left over\n")
    with pytest.raises(HierarchyError, match=r"root\.pem but no issuers\.toml"):
        await init_hierarchy(HierarchySettings.from_config(config))
    assert not (config.pki_path / ISSUERS_FILE).exists()


async def test_pki_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, pki_dir=tmp_path / "pki")
    (tmp_path / "pki").write_text("")
    with pytest.raises(HierarchyError, match="not a directory"):
        await init_hierarchy(HierarchySettings.from_config(config))


async def test_validity_follows_the_clock(tmp_path: Path) -> None:
    at = datetime(2026, 4, 1, 12, 0, 0, 123456, tzinfo=UTC)
    config = make_config(tmp_path)
    await init_hierarchy(HierarchySettings.from_config(config), clock=FixedClock(at))
    start = at.replace(microsecond=0)
    root = load(config.pki_path / "root.pem")
    issuer = load(config.pki_path / "dv-rsa.pem")
    assert root.not_valid_before_utc == issuer.not_valid_before_utc == start
    # 25 and 5 years, counted inclusively (RFC 5280 4.1.2.5): BR 7.1.2.1.1 caps roots at 9132.
    assert root.not_valid_after_utc - start + timedelta(seconds=1) == timedelta(days=9131)
    assert issuer.not_valid_after_utc - start + timedelta(seconds=1) == timedelta(days=1826)


# ----------------------------------------------------------------------------- profiles


def ca_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme_ca Development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@pytest.mark.parametrize(
    ("file", "cn", "algorithm"),
    [
        ("root.pem", "acme_ca Development Root R1", SignatureAlgorithmOID.ECDSA_WITH_SHA384),
        ("root-x1.pem", "acme_ca Development Root X1", SignatureAlgorithmOID.RSA_WITH_SHA256),
    ],
)
def test_root_profile(pki: Path, file: str, cn: str, algorithm: x509.ObjectIdentifier) -> None:
    """BR 7.1.2.1."""
    root = load(pki / file)
    assert root.subject == root.issuer == ca_name(cn)
    assert root.subject.public_bytes() == root.issuer.public_bytes()
    assert root.signature_algorithm_oid == algorithm
    public_key = root.public_key()
    if file == "root.pem":
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp384r1"
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
    assert 0 < root.serial_number < 2**159
    constraints, critical = ext(root, x509.BasicConstraints)
    assert critical and constraints.ca and constraints.path_length is None
    usage, critical = ext(root, x509.KeyUsage)
    assert critical and usage.key_cert_sign and usage.crl_sign
    assert not (usage.digital_signature or usage.key_encipherment or usage.key_agreement)
    ski, critical = ext(root, x509.SubjectKeyIdentifier)
    assert not critical
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(public_key).digest
    aki, critical = ext(root, x509.AuthorityKeyIdentifier)  # BR 7.1.2.1.3: equal to the SKI
    assert not critical and aki.key_identifier == ski.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    assert {e.oid for e in root.extensions} == {
        x509.BasicConstraints.oid,
        x509.KeyUsage.oid,
        x509.SubjectKeyIdentifier.oid,
        x509.AuthorityKeyIdentifier.oid,
    }


def _is_p256(k: object) -> bool:
    return isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp256r1"


@pytest.mark.parametrize(
    ("name", "cn", "key_check", "reserved"),
    [
        ("dv-rsa", "acme_ca DV RSA CA 2026", lambda k: isinstance(k, rsa.RSAPublicKey), DV),
        ("dv-ecc", "acme_ca DV ECC CA 2026", _is_p256, DV),
        ("ov-rsa", "acme_ca OV RSA CA 2026", lambda k: isinstance(k, rsa.RSAPublicKey), OV),
        ("ov-ecc", "acme_ca OV ECC CA 2026", _is_p256, OV),
    ],
)
def test_issuing_ca_profile(
    pki: Path,
    name: str,
    cn: str,
    key_check: Callable[[object], bool],
    reserved: x509.ObjectIdentifier,
) -> None:
    """BR 7.1.2.6 (TLS subordinate CA), under Root R1; the OV issuers (CP 7.1.2, "JPRS
    Organization Validation Authority") assert the CA/B OV policy instead of DV (OV-3)."""
    root = load(pki / "root.pem")
    cert = load(pki / f"{name}.pem")
    assert cert.subject == ca_name(cn)
    assert cert.issuer.public_bytes() == root.subject.public_bytes()
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384  # R1: P-384
    assert key_check(cert.public_key())
    if isinstance(cert.public_key(), rsa.RSAPublicKey):
        assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    constraints, critical = ext(cert, x509.BasicConstraints)
    assert critical and constraints.ca and constraints.path_length == 0
    usage, critical = ext(cert, x509.KeyUsage)
    assert critical and usage.digital_signature and usage.key_cert_sign and usage.crl_sign
    assert not (usage.key_encipherment or usage.key_agreement or usage.content_commitment)
    eku, critical = ext(cert, x509.ExtendedKeyUsage)
    assert not critical and list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    policies, critical = ext(cert, x509.CertificatePolicies)
    assert not critical
    assert [p.policy_identifier for p in policies] == [
        reserved,
        x509.ObjectIdentifier(Config().policy_oid),
    ]
    assert all(p.policy_qualifiers is None for p in policies)
    aki, _ = ext(cert, x509.AuthorityKeyIdentifier)
    root_ski, _ = ext(root, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == root_ski.digest and aki.authority_cert_issuer is None
    ski, _ = ext(cert, x509.SubjectKeyIdentifier)
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    aia, critical = ext(cert, x509.AuthorityInformationAccess)
    assert not critical
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{STATUS}/issuer/root-r1.cer")
    ]
    crldp, critical = ext(cert, x509.CRLDistributionPoints)
    assert not critical and len(crldp) == 1
    (point,) = crldp
    assert point.full_name is not None
    assert [n.value for n in point.full_name] == [f"{STATUS}/crl/root-r1.crl"]
    assert point.reasons is None and point.crl_issuer is None
    assert len(cert.extensions) == 8


def test_cross_certificate_profile(pki: Path) -> None:
    """BR 7.1.2.2: Root R1's subject, key and SKI, signed by Root X1."""
    r1, x1, cross = load(pki / "root.pem"), load(pki / "root-x1.pem"), load(pki / CROSS_FILE)
    assert cross.subject.public_bytes() == r1.subject.public_bytes()
    assert cross.issuer.public_bytes() == x1.subject.public_bytes()
    assert cross.public_key() == r1.public_key()
    assert ext(cross, x509.SubjectKeyIdentifier)[0] == ext(r1, x509.SubjectKeyIdentifier)[0]
    aki, _ = ext(cross, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == ext(x1, x509.SubjectKeyIdentifier)[0].digest
    constraints, critical = ext(cross, x509.BasicConstraints)
    assert critical and constraints.ca and constraints.path_length is None
    assert list(ext(cross, x509.ExtendedKeyUsage)[0]) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aia, _ = ext(cross, x509.AuthorityInformationAccess)
    assert [d.access_location.value for d in aia] == [f"{STATUS}/issuer/root-x1.cer"]
    crldp, _ = ext(cross, x509.CRLDistributionPoints)
    assert [n.value for p in crldp for n in p.full_name or []] == [f"{STATUS}/crl/root-x1.crl"]
    assert cross.not_valid_before_utc == r1.not_valid_before_utc
    assert cross.not_valid_after_utc <= min(r1.not_valid_after_utc, x1.not_valid_after_utc)


# ----------------------------------------------------------------------------- chains


def test_chains_verify_by_signature(pki: Path) -> None:
    r1, x1, cross = load(pki / "root.pem"), load(pki / "root-x1.pem"), load(pki / CROSS_FILE)
    r1.verify_directly_issued_by(r1)
    x1.verify_directly_issued_by(x1)
    cross.verify_directly_issued_by(x1)
    for name in ("dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc"):
        issuer = load(pki / f"{name}.pem")
        issuer.verify_directly_issued_by(r1)
        issuer.verify_directly_issued_by(cross)  # the alternate chain's first link
    with pytest.raises(ValueError):
        load(pki / "dv-rsa.pem").verify_directly_issued_by(x1)


def openssl_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-x509_strict", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_verifies_primary_and_alternate_chains(pki: Path) -> None:
    for name in ("dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc"):
        issuer = str(pki / f"{name}.pem")
        primary = openssl_verify("-CAfile", str(pki / "root.pem"), issuer)
        assert primary.returncode == 0, primary.stdout + primary.stderr
        alternate = openssl_verify(
            "-CAfile", str(pki / "root-x1.pem"), "-untrusted", str(pki / CROSS_FILE), issuer
        )
        assert alternate.returncode == 0, alternate.stdout + alternate.stderr
        # Without the cross-certificate, X1 alone does not vouch for the issuer.
        alone = openssl_verify("-CAfile", str(pki / "root-x1.pem"), issuer)
        assert alone.returncode != 0
    cross = openssl_verify("-CAfile", str(pki / "root-x1.pem"), str(pki / CROSS_FILE))
    assert cross.returncode == 0, cross.stdout + cross.stderr


# ----------------------------------------------------------------------------- pkilint


LINT_CASES = [
    ("root.pem", "ROOT-CA"),
    ("root-x1.pem", "ROOT-CA"),
    # Our issuing CAs are subordinate to our own roots: internal, not externally operated.
    ("dv-rsa.pem", "INTERNAL-UNCONSTRAINED-TLS-CA"),
    ("dv-ecc.pem", "INTERNAL-UNCONSTRAINED-TLS-CA"),
    ("ov-rsa.pem", "INTERNAL-UNCONSTRAINED-TLS-CA"),
    ("ov-ecc.pem", "INTERNAL-UNCONSTRAINED-TLS-CA"),
    # X1 and R1 have the same operator.
    (CROSS_FILE, "INTERNAL-CROSS-CA"),
]


@pytest.mark.skipif(not LINT_CERT.exists(), reason="pkilint not installed in .venv")
@pytest.mark.parametrize(("file", "kind"), LINT_CASES)
def test_pkilint_finds_nothing_above_notice(pki: Path, file: str, kind: str) -> None:
    """No FATAL, ERROR or WARNING (exit code = number of findings at the threshold or above)."""
    result = pkilint(LINT_CERT, "lint", "-t", kind, "-s", "WARNING", pki / file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "FATAL" not in result.stdout


@pytest.mark.skipif(not LINT_CHAIN.exists(), reason="pkilint not installed in .venv")
@pytest.mark.parametrize(
    ("signer", "signee"),
    [
        ("root.pem", "dv-rsa.pem"),
        ("root.pem", "dv-ecc.pem"),
        ("root.pem", "ov-rsa.pem"),
        ("root.pem", "ov-ecc.pem"),
        ("root-x1.pem", CROSS_FILE),
        (CROSS_FILE, "dv-rsa.pem"),
    ],
)
def test_pkilint_signer_signee_pairs(pki: Path, signer: str, signee: str) -> None:
    result = pkilint(LINT_CHAIN, "lint", "-s", "WARNING", pki / signer, pki / signee)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- load_issuers


async def sign_leaf(issuer: Issuer, public_key: Any) -> x509.Certificate:
    now = datetime.now(UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("leaf.example.com")]), critical=True
        )
        .add_extension(issuer.authority_key_identifier, critical=False)
    )
    draft = throwaway_signed_certificate(builder, issuer.signer, issuer.hash)
    return await sign_tbs_certificate(draft.tbs_certificate_bytes, issuer.signer, issuer.hash)


async def test_load_issuers_picks_by_key_type(pki: Path, software_home: Path) -> None:
    config = make_config(software_home)
    async with await load_issuers(IssuerSettings.from_config(config)) as issuers:
        assert issuers.names() == ("dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc")
        assert len(issuers) == 4
        assert issuers.root == load(pki / "root.pem")
        ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        p384_key = ec.generate_private_key(ec.SECP384R1()).public_key()
        rsa_key = rsa.generate_private_key(65537, 2048).public_key()
        assert issuers.for_key(ec_key).name == "dv-ecc"
        assert issuers.for_key(p384_key).name == "dv-ecc"
        assert issuers.for_key(rsa_key).name == "dv-rsa"
        with pytest.raises(ValueError, match="Ed25519"):
            issuers.for_key(ed25519.Ed25519PrivateKey.generate().public_key())
        assert issuers.for_purpose("ov", ec_key).name == "ov-ecc"
        assert issuers.for_purpose("ov", rsa_key).name == "ov-rsa"
        assert issuers.for_purpose("dv", rsa_key).name == "dv-rsa"
        assert issuers.by_name("ov-ecc").purpose == "ov"
        assert issuers.by_name("dv-ecc").purpose == "dv"
        with pytest.raises(KeyError, match="no issuer named 'dv-dsa'"):
            issuers.by_name("dv-dsa")

        rsa_issuer, ecc_issuer = issuers.by_name("dv-rsa"), issuers.by_name("dv-ecc")
        assert (rsa_issuer.key_type, rsa_issuer.hash) == ("rsa", "sha256")
        assert (ecc_issuer.key_type, ecc_issuer.hash) == ("ec", "sha256")
        assert rsa_issuer.ca_issuers_url == f"{STATUS}/issuer/dv-rsa.cer"
        cross = load(pki / CROSS_FILE)
        for issuer in issuers:
            assert x509.load_pem_x509_certificates(issuer.pem_chain()) == [issuer.certificate]
            assert x509.load_pem_x509_certificates(issuer.pem_chain(0)) == [
                issuer.certificate,
                cross,
            ]
            leaf = await sign_leaf(issuer, ec_key)
            leaf.verify_directly_issued_by(issuer.certificate)
    await issuers.aclose()  # a second close is harmless


async def test_config_chooses_the_issuers(software_home: Path) -> None:
    config = make_config(software_home, rsa_issuer="dv-ecc", ecdsa_issuer="dv-rsa")
    issuers = await load_issuers(IssuerSettings.from_config(config))
    try:
        assert issuers.for_key(rsa.generate_private_key(65537, 2048).public_key()).name == "dv-ecc"
    finally:
        await issuers.aclose()


async def test_unknown_issuer_name_is_refused(software_home: Path) -> None:
    config = make_config(software_home, ecdsa_issuer="dv-ecdsa")
    with pytest.raises(IssuerConfigError, match=r"ecdsa_issuer = 'dv-ecdsa' names no issuer"):
        await load_issuers(IssuerSettings.from_config(config))
    with pytest.raises(IssuerConfigError, match="names no issuer"):
        IssuerSet(
            issuers={},
            root=load(software_home / "pki" / "root.pem"),
            rsa_issuer="a",
            ecdsa_issuer="b",
        )


async def test_missing_issuers_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(
        IssuerConfigError, match=r"issuers\.toml does not exist: run `acme-ca init`"
    ):
        await load_issuers(IssuerSettings.from_config(make_config(tmp_path)))


def rewrite(toml: Path, old: str, new: str) -> None:
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))


async def test_mismatched_key_is_refused(home_copy: Path) -> None:
    """A different key of the right type: the CA would sign what nobody can verify."""
    key_path = home_copy / "pki" / "keys" / "dv-rsa.key.pem"
    other = rsa.generate_private_key(65537, 2048)
    key_path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(IssuerConfigError, match=r"issuer 'dv-rsa'.*does not match key file"):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))


async def test_missing_key_file_is_named(home_copy: Path) -> None:
    (home_copy / "pki" / "keys" / "dv-ecc.key.pem").unlink()
    with pytest.raises(IssuerConfigError, match=r"issuer 'dv-ecc': cannot read key file"):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))


async def test_swapped_key_files_are_refused(home_copy: Path) -> None:
    rewrite(
        home_copy / "pki" / ISSUERS_FILE,
        'key_file = "keys/dv-rsa.key.pem"',
        'key_file = "keys/dv-ecc.key.pem"',
    )
    with pytest.raises(IssuerConfigError, match="does not match"):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))


async def test_issuer_certificate_that_is_not_a_ca_is_refused(home_copy: Path) -> None:
    pki = home_copy / "pki"
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(ca_name("not a CA"))
        .issuer_name(ca_name("not a CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (pki / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    rewrite(pki / ISSUERS_FILE, 'certificate = "dv-ecc.pem"', 'certificate = "leaf.pem"')
    with pytest.raises(IssuerConfigError, match=r"\[issuers\.dv-ecc\] certificate .* is not a CA"):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))


async def test_broken_chain_is_refused(home_copy: Path) -> None:
    rewrite(home_copy / "pki" / ISSUERS_FILE, "chain = []", 'chain = ["root-x1.pem"]')
    with pytest.raises(IssuerConfigError, match="is not issued by"):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))


async def test_typo_in_issuers_file_is_refused(home_copy: Path) -> None:
    rewrite(home_copy / "pki" / ISSUERS_FILE, "ocsp_url =", "ocsp-url =")
    with pytest.raises(IssuerConfigError, match=r"unknown keys \['ocsp-url'\]"):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))


async def test_issuer_purpose_is_checked(home_copy: Path) -> None:
    """issuers.toml ``purpose``: absent reads as "dv" (files written before OV keep working);
    anything but "dv" or "ov" is refused, so a typo cannot make an OV issuer sign DV; and the
    issuer certificate's policies must allow the purpose's reserved OID (BR 7.1.2.10.5)."""
    rewrite(home_copy / "pki" / ISSUERS_FILE, 'purpose = "ov"', 'purpose = "OV"')
    with pytest.raises(IssuerConfigError, match=r"\[issuers\.ov-rsa\]: `purpose` must be one"):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))
    rewrite(home_copy / "pki" / ISSUERS_FILE, 'purpose = "OV"', 'purpose = "ov"')
    # An issuer whose certificate asserts DV only cannot be declared an OV issuer.
    rewrite(
        home_copy / "pki" / ISSUERS_FILE, "[issuers.dv-rsa]", '[issuers.dv-rsa]\npurpose = "ov"'
    )
    with pytest.raises(
        IssuerConfigError, match=r"dv-rsa\]: purpose 'ov' but .* 2\.23\.140\.1\.2\.2"
    ):
        await load_issuers(IssuerSettings.from_config(make_config(home_copy)))


async def test_expired_issuer_is_refused(software_home: Path) -> None:
    later = FixedClock(datetime.now(UTC) + timedelta(days=6 * 366))
    with pytest.raises(IssuerConfigError, match="expired"):
        await load_issuers(IssuerSettings.from_config(make_config(software_home)), clock=later)


async def test_root_signer_opens_for_development_arls(software_home: Path) -> None:
    config = make_config(software_home)
    signer = await open_root_signer(IssuerSettings.from_config(config), "root-r1")
    try:
        assert signer.public_key == load(config.pki_path / "root.pem").public_key()
    finally:
        await signer.aclose()
    with pytest.raises(IssuerConfigError, match=r"no \[roots\.root-z9\]"):
        await open_root_signer(IssuerSettings.from_config(config), "root-z9")


# ----------------------------------------------------------------------------- SoftHSM2


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    return shared_token(tmp_path_factory.getbasetemp() / "softhsm")


def hsm_config(home: Path, token: SoftHsmToken) -> Config:
    return make_config(
        home,
        pkcs11_module=token.module,
        pkcs11_token_label=token.label,
        pkcs11_pin=token.pin,
    )


@pytest.fixture(scope="module")
def hsm_home(token: SoftHsmToken, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A hierarchy whose keys are all in the shared token, under labels unique to this run."""
    home = tmp_path_factory.mktemp("hsm-home")
    prefix = f"test-hierarchy-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ACME_CA_PKCS11_PIN", raising=False)
        run_in_thread(
            lambda: init_hierarchy(
                HierarchySettings.from_config(hsm_config(home, token)), key_label_prefix=prefix
            )
        )
    return home, prefix


def list_private_keys(token: SoftHsmToken) -> str:
    result = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            token.module,
            "--token-label",
            token.label,
            "--login",
            "--pin",
            token.pin,
            "--list-objects",
            "--type",
            "privkey",
        ],
        env={**os.environ, **token.env()},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@requires_softhsm
@pytest.mark.skipif(shutil.which("pkcs11-tool") is None, reason="pkcs11-tool not installed")
def test_hsm_init_keeps_every_key_in_the_token(
    hsm_home: tuple[Path, str], token: SoftHsmToken
) -> None:
    home, prefix = hsm_home
    pki = home / "pki"
    assert not (pki / "keys").exists()
    assert "key_file" not in (pki / ISSUERS_FILE).read_text()
    objects = list_private_keys(token)
    blocks = objects.split("Private Key Object")
    for name in ("root-r1", "root-x1", "dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc"):
        label = f"{prefix}-{name}"
        (block,) = [b for b in blocks if re.search(rf"^\s*label:\s*{re.escape(label)}$", b, re.M)]
        assert re.search(r"Access:.*\bsensitive\b.*never extractable", block), block
    parsed = read_issuers_file(pki)
    assert parsed.issuers["dv-rsa"].key.pkcs11_key_label == f"{prefix}-dv-rsa"
    assert parsed.roots["root-r1"].key is not None
    assert parsed.roots["root-r1"].key.pkcs11_key_label == f"{prefix}-root-r1"


@requires_softhsm
def test_hsm_certificates_chain_and_lint(hsm_home: tuple[Path, str]) -> None:
    pki = hsm_home[0] / "pki"
    r1, x1, cross = load(pki / "root.pem"), load(pki / "root-x1.pem"), load(pki / CROSS_FILE)
    r1.verify_directly_issued_by(r1)
    cross.verify_directly_issued_by(x1)
    for name in ("dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc"):
        load(pki / f"{name}.pem").verify_directly_issued_by(r1)
    if LINT_CERT.exists():
        for file, kind in LINT_CASES:
            result = pkilint(LINT_CERT, "lint", "-t", kind, "-s", "WARNING", pki / file)
            assert result.returncode == 0, f"{file}: {result.stdout}{result.stderr}"


@requires_softhsm
async def test_hsm_issuers_load_and_sign(hsm_home: tuple[Path, str], token: SoftHsmToken) -> None:
    home, _ = hsm_home
    config = replace(hsm_config(home, token), pkcs11_sessions=3)
    issuers = await load_issuers(IssuerSettings.from_config(config))
    try:
        ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        rsa_key = rsa.generate_private_key(65537, 2048).public_key()
        for key, purpose, expected in (
            (ec_key, "dv", "dv-ecc"),
            (rsa_key, "dv", "dv-rsa"),
            (ec_key, "ov", "ov-ecc"),
            (rsa_key, "ov", "ov-rsa"),
        ):
            issuer = issuers.for_purpose(purpose, key)
            assert issuer.name == expected
            assert getattr(issuer.signer, "pool_size", None) == 3
            leaf = await sign_leaf(issuer, key)
            leaf.verify_directly_issued_by(issuer.certificate)
    finally:
        await issuers.aclose()


@requires_softhsm
async def test_hsm_wrong_pin_names_the_issuer(
    hsm_home: tuple[Path, str], token: SoftHsmToken
) -> None:
    config = replace(hsm_config(hsm_home[0], token), pkcs11_pin="0000")
    with pytest.raises(IssuerConfigError, match="issuer 'dv-rsa'"):
        await load_issuers(IssuerSettings.from_config(config))


@requires_softhsm
async def test_hsm_labels_in_use_are_refused(
    hsm_home: tuple[Path, str], token: SoftHsmToken, tmp_path: Path
) -> None:
    """A second init with the same labels (say, after a failed run) stops with advice."""
    config = hsm_config(tmp_path, token)
    with pytest.raises(HierarchyError, match=r"cannot create key .*-root-r1.*delete"):
        await init_hierarchy(HierarchySettings.from_config(config), key_label_prefix=hsm_home[1])


@requires_softhsm
async def test_hsm_pin_from_file(
    hsm_home: tuple[Path, str], token: SoftHsmToken, tmp_path: Path
) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(token.pin + "\n")
    pin_file.chmod(0o600)
    config = replace(hsm_config(hsm_home[0], token), pkcs11_pin=None, pkcs11_pin_file=pin_file)
    issuers = await load_issuers(IssuerSettings.from_config(config))
    await issuers.aclose()
