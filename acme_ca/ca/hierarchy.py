"""A development issuing hierarchy for ``acme-ca init``, shaped like JPRS's under SECOM.

What :func:`init_hierarchy` writes under ``settings.pki_path``::

    root.pem              acme_ca Development Root R1   ECDSA P-384, 25 years, self-signed
    root-x1.pem           acme_ca Development Root X1   RSA 3072, 25 years, self-signed
    cross-r1-by-x1.pem    Root R1's subject and key, signed by X1 (the alternate chain)
    dv-rsa.pem            acme_ca DV RSA CA 2026        RSA 2048, 5 years, signed by R1
    dv-ecc.pem            acme_ca DV ECC CA 2026        ECDSA P-256, 5 years, signed by R1
    ov-rsa.pem            acme_ca OV RSA CA 2026        RSA 2048, 5 years, signed by R1
    ov-ecc.pem            acme_ca OV ECC CA 2026        ECDSA P-256, 5 years, signed by R1
    issuers.toml          the issuers, their keys and URLs (format: acme_ca.ca.issuers_file),
                          marked ``generated_by = "acme-ca init"`` (a development
                          hierarchy, :mod:`acme_ca.deployment`)
    keys/*.key.pem        software keys (0600), only without ``pkcs11_module``

With ``pkcs11_module`` set every key, the roots' included, is generated in the token
(labels ``acme-ca-root-r1``, ``acme-ca-root-x1``, ``acme-ca-dv-rsa``, ``acme-ca-dv-ecc``,
``acme-ca-ov-rsa``, ``acme-ca-ov-ecc``) and no key file is written.  Either way each
certificate is built with cryptography, signed by a throwaway key, and its TBS re-signed
through the real :class:`~acme_ca.ca.signer.Signer` (:mod:`acme_ca.ca.der`), so the HSM and
the software path run the same code.

Profiles (CA/B Forum BR 7.1.2): the roots follow 7.1.2.1 (basicConstraints critical cA without
pathLenConstraint; keyUsage critical keyCertSign+cRLSign; SKI, and the AKI that 7.1.2.1.2
recommends, equal to it; no EKU or policies); the issuing CAs follow 7.1.2.6 for TLS
subordinate CAs (C, O, CN; pathLenConstraint 0; keyUsage digitalSignature+keyCertSign+cRLSign;
EKU serverAuth only; policies 2.23.140.1.2.1, or 2.23.140.1.2.2 for the OV issuers, then
``policy_oid``; AKI; SKI; AIA caIssuers and CRLDP over http); the cross-certificate
follows 7.1.2.2 (same subject, key and SKI as Root R1, restricted to serverAuth).

Status URLs come from ``status_base_url``: ``/crl/<name>.crl``, ``/ocsp/<name>`` and
``/issuer/<name>.cer`` for the issuers, ``/crl/root-r1.crl`` and ``/issuer/root-r1.cer`` in the
issuing CAs' certificates, ``/crl/root-x1.crl`` and ``/issuer/root-x1.cer`` in the cross.

The directory is written at most once: an existing issuers.toml means "done" (nothing is
touched), and a directory holding anything else is refused, as a previous run that stopped
part-way may have left keys behind.  issuers.toml is written last, atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from acme_ca.br import DV_POLICY_OID
from acme_ca.ca.der import sign_tbs_certificate, throwaway_signed_certificate
from acme_ca.ca.issuers_file import GENERATED_BY_INIT, ISSUERS_FILE, PURPOSE_POLICY_OIDS
from acme_ca.ca.settings import HierarchySettings, HsmSettings
from acme_ca.ca.signer import (
    CaPrivateKey,
    KeySpec,
    Signer,
    SignerError,
    SoftwareSigner,
    default_hash,
)
from acme_ca.clock import Clock, SystemClock
from acme_ca.localca import write_new
from acme_ca.log import get_logger

_log = get_logger(__name__)

COUNTRY: Final = "JP"
ORGANIZATION: Final = "acme_ca Development"
#: 25 years; BR 7.1.2.1.1 allows a root at most 9132 days.
ROOT_VALIDITY: Final = timedelta(days=9131)
#: 5 years, like JPRS's 2024 G1 issuing CAs.
ISSUER_VALIDITY: Final = timedelta(days=1826)
#: The cross-certificate of Root R1 by Root X1: every issuer's alternate chain.
CROSS_FILE: Final = "cross-r1-by-x1.pem"
KEYS_DIR: Final = "keys"
#: Held (flock) while the hierarchy is written, so concurrent first starts do not race.
LOCK_FILE: Final = ".init.lock"
DEFAULT_KEY_LABEL_PREFIX: Final = "acme-ca"


class HierarchyError(Exception):
    """The hierarchy cannot be created; the message says what to do."""


@dataclass(frozen=True)
class CaSpec:
    """One CA of the development hierarchy."""

    name: str  #: in issuers.toml, key labels, file names and status URLs
    common_name: str
    key_spec: KeySpec
    file: str
    #: issuers.toml ``purpose``: "dv" or "ov" (the CP's two authorities, CP 1.1 / 7.1.1).
    purpose: str = "dv"


ROOT_R1: Final = CaSpec("root-r1", "acme_ca Development Root R1", "ec-p384", "root.pem")
#: PKCS#11 key generation offers RSA up to 3072 bits, so X1 is RSA 3072 in both key stores.
ROOT_X1: Final = CaSpec("root-x1", "acme_ca Development Root X1", "rsa3072", "root-x1.pem")
ISSUING_CAS: Final = (
    CaSpec("dv-rsa", "acme_ca DV RSA CA 2026", "rsa2048", "dv-rsa.pem"),
    CaSpec("dv-ecc", "acme_ca DV ECC CA 2026", "ec-p256", "dv-ecc.pem"),
    # The CP's "JPRS Organization Validation Authority - G3", in the development shape.
    CaSpec("ov-rsa", "acme_ca OV RSA CA 2026", "rsa2048", "ov-rsa.pem", purpose="ov"),
    CaSpec("ov-ecc", "acme_ca OV ECC CA 2026", "ec-p256", "ov-ecc.pem", purpose="ov"),
)


# --------------------------------------------------------------------------- keys


KeySupply = Callable[[KeySpec], CaPrivateKey | None]
"""Fresh software keys made elsewhere, by type (``serve --test --ephemeral``'s early RSA keys);
None: generate here."""


class _KeyStore:
    """Creates each CA key in the HSM (when configured) or as a 0600 PEM under keys/."""

    def __init__(
        self,
        hsm: HsmSettings,
        pki: Path,
        label_prefix: str,
        stack: _Closer,
        supplied: KeySupply | None = None,
    ) -> None:
        self._hsm = hsm
        self._pki = pki
        self._prefix = label_prefix
        self._closer = stack
        self._supplied = supplied
        self._pin: str | None = None

    @property
    def in_hsm(self) -> bool:
        return self._hsm.module is not None

    async def create(self, ca: CaSpec) -> tuple[Signer, Mapping[str, str]]:
        """Generate ``ca``'s key; return its signer and issuers.toml key location."""
        module = self._hsm.module
        if module is None:
            keys = self._pki / KEYS_DIR
            await asyncio.to_thread(keys.mkdir, mode=0o700, exist_ok=True)
            relative = f"{KEYS_DIR}/{ca.name}.key.pem"
            signer: Signer = await SoftwareSigner.generate(
                ca.key_spec, self._pki / relative, supplied=self._supplied
            )
            self._closer.add(signer)
            return signer, {"key_file": relative}
        # Imported here: python-pkcs11 loads for an HSM hierarchy only, not on serve --test's
        # path to ready (issue 21 item 8).
        from acme_ca.ca.pkcs11_signer import Pkcs11Signer, generate_pkcs11_key

        token = self._hsm.token_label
        label = f"{self._prefix}-{ca.name}"
        pin = await self._get_pin()
        try:
            await generate_pkcs11_key(module, token, pin, label, ca.key_spec)
        except SignerError as e:
            raise HierarchyError(
                f"cannot create key {label!r} in token {token!r}: {e}. If an earlier "
                "`acme-ca init` stopped part-way, delete its acme-ca-* keys from the token "
                f"(pkcs11-tool --delete-object --label {label} ...) and the pki directory"
            ) from e
        signer = await Pkcs11Signer.open(module, token, label, pin, pool_size=1)
        self._closer.add(signer)
        return signer, {"pkcs11_key_label": label}

    async def _get_pin(self) -> str:
        from acme_ca.ca.pkcs11_signer import resolve_pin  # HSM only, as above

        if self._pin is None:
            self._pin = await asyncio.to_thread(resolve_pin, self._hsm.pin, self._hsm.pin_file)
        return self._pin


class _Closer:
    """Closes every signer opened during init, however init ends."""

    def __init__(self) -> None:
        self._signers: list[Signer] = []

    def add(self, signer: Signer) -> None:
        self._signers.append(signer)

    async def aclose(self) -> None:
        for signer in reversed(self._signers):
            try:
                await signer.aclose()
            except Exception as e:  # close the others regardless
                _log.warning("hierarchy.signer_close_failed", error=repr(e))


# --------------------------------------------------------------------------- certificates


def _name(common_name: str) -> x509.Name:
    """BR 7.1.2.10.2 CA naming: C, O, CN, in the 7.1.4 order, one attribute per RDN."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer))


def _policies(policy_oid: str, reserved: str = DV_POLICY_OID) -> x509.CertificatePolicies:
    oids = [reserved] + ([policy_oid] if policy_oid != reserved else [])
    return x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in oids]
    )


def _status_links(
    builder: x509.CertificateBuilder, urls: _Urls, parent: str
) -> x509.CertificateBuilder:
    """AIA caIssuers and CRLDP of a certificate signed by the CA named ``parent``."""
    return builder.add_extension(
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(urls.ca_issuers(parent)),
                )
            ]
        ),
        critical=False,
    ).add_extension(
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(urls.crl(parent))],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
        critical=False,
    )


@dataclass(frozen=True)
class _Urls:
    base: str

    def crl(self, name: str) -> str:
        return f"{self.base}/crl/{name}.crl"

    def ocsp(self, name: str) -> str:
        return f"{self.base}/ocsp/{name}"

    def ca_issuers(self, name: str) -> str:
        return f"{self.base}/issuer/{name}.cer"


async def _sign(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    """Build with a throwaway key, then put the real signer's signature on that TBS."""
    hash = default_hash(signer.public_key)
    draft = throwaway_signed_certificate(builder, signer, hash)
    return await sign_tbs_certificate(draft.tbs_certificate_bytes, signer, hash)


async def _root(ca: CaSpec, signer: Signer, not_before: datetime) -> x509.Certificate:
    """BR 7.1.2.1 root CA certificate, self-signed."""
    name = _name(ca.common_name)
    public_key = signer.public_key
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + ROOT_VALIDITY - timedelta(seconds=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=False), critical=True)
        .add_extension(ski, critical=False)
        # BR 7.1.2.1.2 RECOMMENDS an AKI on roots; 7.1.2.1.3 makes it keyIdentifier == SKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return await _sign(builder, signer)


async def _issuing_ca(
    ca: CaSpec,
    signer: Signer,
    root: x509.Certificate,
    root_signer: Signer,
    not_before: datetime,
    urls: _Urls,
    policy_oid: str,
    parent_name: str = ROOT_R1.name,
) -> x509.Certificate:
    """BR 7.1.2.6 TLS subordinate CA certificate for ``signer``'s key, signed by ``root``
    (the CA named ``parent_name``: Root R1, or a test-mode chain's root or intermediate)."""
    public_key = signer.public_key
    not_after = min(not_before + ISSUER_VALIDITY - timedelta(seconds=1), root.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(ca.common_name))
        .issuer_name(root.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_policies(policy_oid, PURPOSE_POLICY_OIDS[ca.purpose]), critical=False)
        .add_extension(_aki(root), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    builder = _status_links(builder, urls, parent_name)
    return await _sign(builder, root_signer)


async def _cross(
    subject: x509.Certificate,
    issuer: x509.Certificate,
    issuer_signer: Signer,
    urls: _Urls,
    policy_oid: str,
) -> x509.Certificate:
    """BR 7.1.2.2 cross-certificate: ``subject``'s name, key and SKI, signed by ``issuer``.

    Restricted to serverAuth (7.1.2.2.4), valid from the existing certificate's notBefore
    until neither root is valid any more.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject.subject)
        .issuer_name(issuer.subject)
        .public_key(subject.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(subject.not_valid_before_utc)
        .not_valid_after(min(subject.not_valid_after_utc, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_policies(policy_oid), critical=False)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(_ski(subject), critical=False)
    )
    builder = _status_links(builder, urls, ROOT_X1.name)
    return await _sign(builder, issuer_signer)


# --------------------------------------------------------------------------- files


def _toml_str(value: str) -> str:
    """A TOML basic string; JSON string escapes are valid TOML escapes."""
    return json.dumps(value, ensure_ascii=False)


def _toml_table(header: str, items: Mapping[str, str | list[str] | list[list[str]]]) -> str:
    lines = [f"[{header}]"]
    for key, value in items.items():
        if isinstance(value, str):
            rendered = _toml_str(value)
        else:
            rendered = json.dumps(value, ensure_ascii=False)  # a valid TOML array of strings
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so issuers.toml is either whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_new(tmp, text.encode("utf-8"))
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@contextlib.asynccontextmanager
async def _exclusive(pki: Path) -> AsyncIterator[None]:
    fd = await asyncio.to_thread(os.open, pki / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _check_empty(pki: Path) -> None:
    leftovers = sorted(p.name for p in pki.iterdir() if p.name != LOCK_FILE)
    if leftovers:
        raise HierarchyError(
            f"{pki} holds {', '.join(leftovers)} but no {ISSUERS_FILE}: an earlier "
            "`acme-ca init` may have stopped part-way, or the directory belongs to something "
            "else. Remove it (and any acme-ca-* keys it created in the HSM token) to start "
            f"afresh, or write {ISSUERS_FILE} for the CAs it holds"
        )


# --------------------------------------------------------------------------- entry point


async def init_hierarchy(
    settings: HierarchySettings,
    *,
    clock: Clock | None = None,
    key_label_prefix: str = DEFAULT_KEY_LABEL_PREFIX,
    supplied: KeySupply | None = None,
) -> Path:
    """Create the development hierarchy under ``settings.pki_path``; return issuers.toml's path.

    Idempotent: with issuers.toml present nothing is done.  ``key_label_prefix`` names the
    HSM keys (``<prefix>-root-r1`` …); tests sharing one token give each run its own.  Test
    mode's ``alternate_roots``/``chain_length`` (Pebble's variables) give Pebble's shape
    instead (:mod:`acme_ca.ca.hierarchy_chains`).  ``supplied``: software keys made elsewhere
    (:data:`KeySupply`).
    """
    from acme_ca.ca.hierarchy_chains import ChainShape, create_chains

    pki = settings.pki_path
    issuers_toml = pki / ISSUERS_FILE
    if await asyncio.to_thread(issuers_toml.exists):
        _log.info("hierarchy.exists", path=str(issuers_toml))
        return issuers_toml
    if await asyncio.to_thread(lambda: pki.exists() and not pki.is_dir()):
        raise HierarchyError(f"{pki} exists and is not a directory")
    await asyncio.to_thread(pki.mkdir, mode=0o755, parents=True, exist_ok=True)
    async with _exclusive(pki):
        if await asyncio.to_thread(issuers_toml.exists):  # another process was first
            _log.info("hierarchy.exists", path=str(issuers_toml))
            return issuers_toml
        await asyncio.to_thread(_check_empty, pki)
        closer = _Closer()
        try:
            shape = ChainShape.of(settings)
            keys = _KeyStore(settings.hsm, pki, key_label_prefix, closer, supplied)
            if shape is None:
                await _create(settings, pki, clock or SystemClock(), keys)
            else:
                await create_chains(settings, clock or SystemClock(), keys, shape)
        finally:
            await closer.aclose()
    return issuers_toml


async def _create(settings: HierarchySettings, pki: Path, clock: Clock, keys: _KeyStore) -> None:
    urls = _Urls(settings.status_base_url.rstrip("/"))
    not_before = clock.now().replace(microsecond=0)

    r1_signer, r1_key = await keys.create(ROOT_R1)
    r1 = await _root(ROOT_R1, r1_signer, not_before)
    x1_signer, x1_key = await keys.create(ROOT_X1)
    x1 = await _root(ROOT_X1, x1_signer, not_before)
    cross = await _cross(r1, x1, x1_signer, urls, settings.policy_oid)

    files: dict[str, bytes] = {
        ROOT_R1.file: _pem(r1),
        ROOT_X1.file: _pem(x1),
        CROSS_FILE: _pem(cross),
    }
    tables: list[str] = []
    for ca in ISSUING_CAS:
        signer, key = await keys.create(ca)
        cert = await _issuing_ca(ca, signer, r1, r1_signer, not_before, urls, settings.policy_oid)
        files[ca.file] = _pem(cert)
        tables.append(_issuer_table(ca, key, urls, [], [[CROSS_FILE]]))
        _log_issuer(ca, cert, in_hsm=keys.in_hsm)
    for ca, root_key in ((ROOT_R1, r1_key), (ROOT_X1, x1_key)):
        tables.append(_ca_table(ca, root_key, urls))
    await _write_hierarchy(pki, not_before, files, tables, in_hsm=keys.in_hsm)


def _issuer_table(
    ca: CaSpec,
    key: Mapping[str, str],
    urls: _Urls,
    chain: list[str],
    alternate_chains: list[list[str]],
) -> str:
    """The ``[issuers.<name>]`` table of an issuing CA."""
    table: dict[str, str | list[str] | list[list[str]]] = {
        "certificate": ca.file,
        "chain": chain,
        "alternate_chains": alternate_chains,
        **key,
        "crl_url": urls.crl(ca.name),
        "ocsp_url": urls.ocsp(ca.name),
        "ca_issuers_url": urls.ca_issuers(ca.name),
        # DV tables keep the shape older releases wrote (no key means "dv").
        **({"purpose": ca.purpose} if ca.purpose != "dv" else {}),
    }
    return _toml_table(f"issuers.{ca.name}", table)


def _log_issuer(ca: CaSpec, cert: x509.Certificate, *, in_hsm: bool) -> None:
    _log.info(
        "hierarchy.issuer_created",
        issuer=ca.name,
        subject=cert.subject.rfc4514_string(),
        key_type=ca.key_spec,
        purpose=ca.purpose,
        in_hsm=in_hsm,
    )


def _ca_table(ca: CaSpec, key: Mapping[str, str], urls: _Urls) -> str:
    """The ``[roots.<name>]`` table of a CA above the issuers whose CRLs this installation
    signs (its key is at hand: a development hierarchy)."""
    return _toml_table(
        f"roots.{ca.name}", {"certificate": ca.file, **key, "crl_url": urls.crl(ca.name)}
    )


async def _write_hierarchy(
    pki: Path, not_before: datetime, files: Mapping[str, bytes], tables: list[str], *, in_hsm: bool
) -> None:
    """Write the certificates, then issuers.toml (atomically, last) with ``tables``."""
    text = (
        f"# Development hierarchy written by `acme-ca init` at {not_before.isoformat()}.\n"
        "# NOT publicly trusted. Format: see the docstring of acme_ca/ca/issuers_file.py.\n"
        "# generated_by makes it a development hierarchy: start-up may relax the production\n"
        "# invariants (logged), `acme-ca check` says so (docs/production.md).\n"
        f"generated_by = {_toml_str(GENERATED_BY_INIT)}\n\n"
        "# The root clients verify the primary chains against.\n"
        f"root = {_toml_str(ROOT_R1.file)}\n\n" + "\n".join(tables)
    )

    def write() -> None:
        for name, data in files.items():
            write_new(pki / name, data)
        _write_atomically(pki / ISSUERS_FILE, text)

    await asyncio.to_thread(write)
    _log.info("hierarchy.created", path=str(pki), in_hsm=in_hsm)
