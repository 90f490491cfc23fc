"""A test hierarchy and a prepared DV request for the profile and linting tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acme_ca.ca.profile import (
    IssuanceRequest,
    PreparedCertificate,
    ProfileSettings,
    SubscriberPublicKey,
    build_certificate,
    new_serial,
)
from acme_ca.ca.signer import CaPrivateKey, HashName, SoftwareSigner

SIGNING_TIME = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


CRL_URL = "http://crl.example.jp/dv-g1.crl"


CA_ISSUERS_URL = "http://repo.example.jp/dv-g1.der"


SETTINGS = ProfileSettings(crl_url=CRL_URL, ca_issuers_url=CA_ISSUERS_URL)


NAMES = ("www.example.jp", "example.jp", "*.shop.example.com")


COMMON_NAME_PRESENT = "cabf.serverauth.dv.common_name_attribute_present"


@dataclass(frozen=True)
class Issuer:
    cert: x509.Certificate
    key: CaPrivateKey
    hash: HashName

    def signer(self) -> SoftwareSigner:
        return SoftwareSigner(self.key)


def ca_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Registry Services Co., Ltd."),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_root() -> Issuer:
    key = ec.generate_private_key(ec.SECP384R1())
    name = ca_name("Example Test Root CA - G1")
    cert = (
        x509.CertificateBuilder()
        .issuer_name(name)
        .subject_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return Issuer(cert, key, "sha384")


def make_issuer(root: Issuer, key: CaPrivateKey, cn: str, hash: HashName) -> Issuer:
    """A TLS subordinate CA (BR 7.1.2.6 shape) under ``root``."""
    cert = (
        x509.CertificateBuilder()
        .issuer_name(root.cert.subject)
        .subject_name(ca_name(cn))
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(datetime(2025, 6, 1, tzinfo=UTC))
        .not_valid_after(datetime(2035, 6, 1, tzinfo=UTC))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(root.key, hashes.SHA384())
    )
    return Issuer(cert, key, hash)


@dataclass(frozen=True)
class Hierarchy:
    root: Issuer
    rsa: Issuer
    p256: Issuer
    p384: Issuer

    def for_key(self, public_key: SubscriberPublicKey) -> Issuer:
        """RSA subscriber keys go to the RSA issuer, ECDSA keys to the P-256 issuer."""
        return self.rsa if isinstance(public_key, rsa.RSAPublicKey) else self.p256


def make_hierarchy() -> Hierarchy:
    root = make_root()
    return Hierarchy(
        root=root,
        rsa=make_issuer(
            root,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "Example DV RSA CA - G1",
            "sha256",
        ),
        p256=make_issuer(
            root, ec.generate_private_key(ec.SECP256R1()), "Example DV ECC CA - G1", "sha256"
        ),
        p384=make_issuer(
            root, ec.generate_private_key(ec.SECP384R1()), "Example DV ECC384 CA - G1", "sha384"
        ),
    )


def request(
    public_key: SubscriberPublicKey,
    names: tuple[str, ...] = NAMES,
    signing_time: datetime = SIGNING_TIME,
) -> IssuanceRequest:
    return IssuanceRequest(
        names=names, public_key=public_key, serial=new_serial(), signing_time=signing_time
    )


def prepare(
    issuer: Issuer,
    req: IssuanceRequest,
    settings: ProfileSettings = SETTINGS,
    *,
    precertificate: bool = False,
    hash: HashName | None = None,
) -> PreparedCertificate:
    return build_certificate(
        issuer.cert,
        issuer.key.public_key(),
        hash or issuer.hash,
        settings,
        req,
        precertificate=precertificate,
    )
