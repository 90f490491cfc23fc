"""``issuers.toml`` under ``pki_dir``: the issuing hierarchy's file, read and checked.

``issuers.toml`` is written by ``acme-ca init`` for a development hierarchy and by hand by the
operators of a real one.  Paths are relative to the directory holding the file (absolute paths
are used as they are); every PEM file holds exactly one certificate.  Unknown keys are errors,
so a misspelt key cannot be silently ignored::

    # Written by `acme-ca init` only: marks a development hierarchy (acme_ca.deployment).
    # A hand-written or imported hierarchy leaves it out and is production-shaped.
    # generated_by = "acme-ca init"

    # The root relying parties verify the primary chains against (a self-signed certificate).
    root = "root.pem"

    # One table per issuing CA; the name is how config.rsa_issuer / config.ecdsa_issuer and the
    # status URLs refer to it (letters, digits, "-" and "_").
    [issuers.dv-rsa]
    certificate = "dv-rsa.pem"               # the issuing CA's certificate
    # Certificates between the issuer and `root`, nearest first, the root itself excluded.
    # Usually empty: the issuer is signed by the root directly.
    chain = []
    # Further chains offered as RFC 8555 §7.4.2 Link: rel="alternate", each nearest first
    # and ending below some other root, e.g. a cross-certificate of `root` by an older root.
    # A chain may begin with another certificate for this issuing CA (same subject and key,
    # issued by another CA): it then stands in for `certificate` in that chain.
    alternate_chains = [["cross-r1-by-x1.pem"]]
    # Where the private key is: exactly one of
    pkcs11_key_label = "acme-ca-dv-rsa"      # CKA_LABEL in the token config.pkcs11_token_label
    # key_file = "keys/dv-rsa.key.pem"       # unencrypted PEM on disk: development only
    crl_url = "http://status.example/crl/dv-rsa.crl"         # CRL Distribution Point, http://
    ocsp_url = "http://status.example/ocsp/dv-rsa"           # optional: AIA OCSP, http://
    ca_issuers_url = "http://status.example/issuer/dv-rsa.cer"  # AIA caIssuers, http://
    # What the issuer signs: "dv" (the default when absent) or "ov", organization-validated
    # certificates only (profiles choose issuers by purpose; the signing worker refuses an
    # "ov" issuer's job unless the account's vetted organization is still usable).
    # purpose = "dv"

    # Optional: root CAs whose CRLs (ARLs) this installation signs.  Real roots are offline,
    # so production omits the key; ``acme-ca init`` records its development root keys here.
    [roots.r1]
    certificate = "root.pem"
    key_file = "keys/root-r1.key.pem"        # or pkcs11_key_label; omit for an offline root
    crl_url = "http://status.example/crl/root-r1.crl"

:func:`read_issuers_file` reads and checks it (every chain link by signature and name) without
opening any key; :func:`acme_ca.ca.issuers.load_issuers` opens the signers.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from acme_ca.br import DV_POLICY_OID, OV_POLICY_OID
from acme_ca.log import get_logger

_log = get_logger(__name__)

#: The file under ``config.pki_path`` that lists the issuers.
ISSUERS_FILE: Final = "issuers.toml"
#: ``generated_by`` value ``acme-ca init`` writes: with roots whose subjects say "Development"
#: it makes the hierarchy a development one (:mod:`acme_ca.deployment`).
GENERATED_BY_INIT: Final = "acme-ca init"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_ISSUER_KEYS: Final = frozenset(
    {
        "certificate",
        "chain",
        "alternate_chains",
        "key_file",
        "pkcs11_key_label",
        "crl_url",
        "ocsp_url",
        "ca_issuers_url",
        "purpose",
    }
)
#: The ``purpose`` values: domain-validated or organization-validated certificates.
PURPOSES: Final = ("dv", "ov")
DEFAULT_PURPOSE: Final = "dv"
#: The CA/B Forum reserved policy identifier (BR 7.1.6.1) each purpose's certificates assert;
#: an issuing CA certificate with policies must allow it, or be anyPolicy (BR 7.1.2.10.5).
PURPOSE_POLICY_OIDS: Final = {"dv": DV_POLICY_OID, "ov": OV_POLICY_OID}
_ANY_POLICY: Final = "2.5.29.32.0"
_ROOT_KEYS: Final = frozenset({"certificate", "key_file", "pkcs11_key_label", "crl_url"})


class IssuerConfigError(Exception):
    """issuers.toml or what it names cannot be used; the message is meant for the operator."""


# --------------------------------------------------------------------------- file model


@dataclass(frozen=True)
class KeyRef:
    """Where a CA private key lives: a PEM file (development) or a label in the HSM token."""

    key_file: Path | None = None
    pkcs11_key_label: str | None = None

    def __post_init__(self) -> None:
        if (self.key_file is None) == (self.pkcs11_key_label is None):
            raise ValueError("exactly one of key_file and pkcs11_key_label")

    def describe(self) -> str:
        if self.pkcs11_key_label is not None:
            return f"PKCS#11 key {self.pkcs11_key_label!r}"
        return f"key file {self.key_file}"


@dataclass(frozen=True)
class IssuerEntry:
    """One ``[issuers.<name>]`` table with its certificates read, before any key is opened."""

    name: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    alternate_chains: tuple[tuple[x509.Certificate, ...], ...]
    key: KeyRef
    crl_url: str
    ocsp_url: str | None
    ca_issuers_url: str
    #: ``dv`` or ``ov`` (:data:`PURPOSES`); absent in the file means ``dv``.
    purpose: str = DEFAULT_PURPOSE


@dataclass(frozen=True)
class RootEntry:
    """One ``[roots.<name>]`` table: a root whose CRL this installation may sign."""

    name: str
    certificate: x509.Certificate
    key: KeyRef | None
    crl_url: str | None


@dataclass(frozen=True)
class IssuersFile:
    """The parsed and chain-checked content of issuers.toml."""

    path: Path
    root: x509.Certificate
    issuers: Mapping[str, IssuerEntry]
    roots: Mapping[str, RootEntry]
    generated_by: str | None = None
    """The top-level ``generated_by`` key: :data:`GENERATED_BY_INIT` for ``acme-ca init``."""


def read_issuers_file(pki_path: Path, *, now: datetime | None = None) -> IssuersFile:
    """Parse ``pki_path/issuers.toml`` and check it; blocking file I/O, no keys are opened.

    Checks: every certificate parses and is a CA certificate; every chain (primary up to
    ``root``, alternates among themselves) links by issuer name and signature; issuer
    certificates have not expired (at ``now``, default the current time).
    """
    path = pki_path / ISSUERS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IssuerConfigError(
            f"{path} does not exist: run `acme-ca init` for a development hierarchy, or write "
            "it for your issuing CAs (format: acme_ca.ca.issuers_file)"
        ) from None
    except OSError as e:
        raise IssuerConfigError(f"cannot read {path}: {e}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise IssuerConfigError(f"{path}: not valid TOML: {e}") from e
    return _parse(path, data, now or datetime.now(UTC))


def _parse(path: Path, data: Mapping[str, object], now: datetime) -> IssuersFile:
    base = path.parent
    unknown = set(data) - {"root", "issuers", "roots", "generated_by"}
    if unknown:
        raise IssuerConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    generated_by = data.get("generated_by")
    if generated_by is not None and not isinstance(generated_by, str):
        raise IssuerConfigError(f"{path}: `generated_by` must be a string")
    root_path = data.get("root")
    if not isinstance(root_path, str):
        raise IssuerConfigError(f"{path}: `root` must name the root certificate's PEM file")
    root = _load_cert(base, root_path, f"{path}: root")
    _require_ca(root, f"root {root_path}")
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise IssuerConfigError(f"root {root_path} is not a self-signed certificate: {e}") from e

    tables = data.get("issuers")
    if not isinstance(tables, dict) or not tables:
        raise IssuerConfigError(f"{path}: no [issuers.<name>] tables")
    issuers: dict[str, IssuerEntry] = {}
    for name, table in tables.items():
        where = f"{path}: [issuers.{name}]"
        _check_name(name, where)
        if not isinstance(table, dict):
            raise IssuerConfigError(f"{where} must be a table")
        _check_keys(table, _ISSUER_KEYS, where)
        issuers[name] = _parse_issuer(base, name, table, root, now, where)

    roots: dict[str, RootEntry] = {}
    root_tables = data.get("roots", {})
    if not isinstance(root_tables, dict):
        raise IssuerConfigError(f"{path}: `roots` must be a set of [roots.<name>] tables")
    for name, table in root_tables.items():
        where = f"{path}: [roots.{name}]"
        _check_name(name, where)
        if not isinstance(table, dict):
            raise IssuerConfigError(f"{where} must be a table")
        _check_keys(table, _ROOT_KEYS, where)
        cert = _load_cert(base, _str(table, "certificate", where), where)
        _require_ca(cert, where)
        has_key = "key_file" in table or "pkcs11_key_label" in table
        crl_url = _url(table, "crl_url", where, required=False)
        roots[name] = RootEntry(
            name, cert, _key_ref(base, table, where) if has_key else None, crl_url
        )
    return IssuersFile(path, root, MappingProxyType(issuers), MappingProxyType(roots), generated_by)


def _parse_issuer(
    base: Path,
    name: str,
    table: Mapping[str, object],
    root: x509.Certificate,
    now: datetime,
    where: str,
) -> IssuerEntry:
    cert = _load_cert(base, _str(table, "certificate", where), where)
    _require_ca(cert, f"{where} certificate")
    eku = extension_value(cert, x509.ExtendedKeyUsage)
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise IssuerConfigError(f"{where}: the certificate's EKU does not allow serverAuth")
    if cert.not_valid_after_utc <= now:
        raise IssuerConfigError(
            f"{where}: the certificate expired at {cert.not_valid_after_utc.isoformat()}"
        )
    if cert.not_valid_before_utc > now:
        _log.warning(
            "issuers.not_yet_valid", issuer=name, not_before=cert.not_valid_before_utc.isoformat()
        )

    chain = tuple(_load_chain(base, table.get("chain", []), f"{where} chain"))
    _check_links((cert, *chain, root), f"{where} chain (up to root)")

    raw_alternates = table.get("alternate_chains", [])
    if not isinstance(raw_alternates, list):
        raise IssuerConfigError(f"{where}: alternate_chains must be a list of lists of paths")
    alternates: list[tuple[x509.Certificate, ...]] = []
    for i, raw in enumerate(raw_alternates):
        what = f"{where} alternate_chains[{i}]"
        alternate = tuple(_load_chain(base, raw, what))
        if not alternate:
            raise IssuerConfigError(f"{what} is empty")
        _check_links(alternate_path(cert, alternate), what)
        alternates.append(alternate)

    return IssuerEntry(
        name=name,
        certificate=cert,
        chain=chain,
        alternate_chains=tuple(alternates),
        key=_key_ref(base, table, where),
        crl_url=_require(_url(table, "crl_url", where, required=True), "crl_url", where),
        ocsp_url=_url(table, "ocsp_url", where, required=False),
        ca_issuers_url=_require(
            _url(table, "ca_issuers_url", where, required=True), "ca_issuers_url", where
        ),
        purpose=_purpose(table, cert, where),
    )


def _purpose(table: Mapping[str, object], cert: x509.Certificate, where: str) -> str:
    """The issuer's ``purpose``; its certificate's policies (when it has any) must allow the
    purpose's reserved OID, so an OV issuer cannot be one whose certificate says DV only."""
    value = table.get("purpose", DEFAULT_PURPOSE)
    if value not in PURPOSES:
        raise IssuerConfigError(f"{where}: `purpose` must be one of {', '.join(PURPOSES)}")
    assert isinstance(value, str)
    policies = extension_value(cert, x509.CertificatePolicies)
    if policies is not None:
        oids = {p.policy_identifier.dotted_string for p in policies}
        if _ANY_POLICY not in oids and PURPOSE_POLICY_OIDS[value] not in oids:
            raise IssuerConfigError(
                f"{where}: purpose {value!r} but the certificate's policies "
                f"({', '.join(sorted(oids))}) do not include {PURPOSE_POLICY_OIDS[value]} "
                "or anyPolicy (BR 7.1.2.10.5)"
            )
    return value


def _check_name(name: str, where: str) -> None:
    if not _NAME.fullmatch(name):
        raise IssuerConfigError(f"{where}: names are letters, digits, '-' and '_'")


def _check_keys(table: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise IssuerConfigError(f"{where}: unknown keys {sorted(unknown)}")


def _str(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise IssuerConfigError(f"{where}: `{key}` must be a non-empty string")
    return value


def _url(table: Mapping[str, object], key: str, where: str, *, required: bool) -> str | None:
    if key not in table and not required:
        return None
    value = _str(table, key, where)
    if not value.startswith("http://"):
        raise IssuerConfigError(f"{where}: `{key}` must be a plain http:// URL (BR 7.1.2)")
    return value


def _require(value: str | None, key: str, where: str) -> str:
    if value is None:  # pragma: no cover - _url(required=True) never returns None
        raise IssuerConfigError(f"{where}: `{key}` is required")
    return value


def _key_ref(base: Path, table: Mapping[str, object], where: str) -> KeyRef:
    has_file = "key_file" in table
    has_label = "pkcs11_key_label" in table
    if has_file == has_label:
        raise IssuerConfigError(f"{where}: give exactly one of key_file and pkcs11_key_label")
    if has_file:
        return KeyRef(key_file=base / _str(table, "key_file", where))
    return KeyRef(pkcs11_key_label=_str(table, "pkcs11_key_label", where))


def _load_cert(base: Path, relative: str, where: str) -> x509.Certificate:
    path = base / relative
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise IssuerConfigError(f"{where}: cannot read {path}: {e.strerror or e}") from e
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise IssuerConfigError(f"{where}: {path} holds no PEM certificate") from e
    if len(certs) != 1:
        raise IssuerConfigError(f"{where}: {path} holds {len(certs)} certificates, not one")
    return certs[0]


def _load_chain(base: Path, raw: object, where: str) -> list[x509.Certificate]:
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise IssuerConfigError(f"{where} must be a list of PEM paths")
    certs = [_load_cert(base, p, where) for p in raw]
    for p, cert in zip(raw, certs, strict=True):
        _require_ca(cert, f"{where} {p}")
    return certs


def extension_value(cert: x509.Certificate, kind: type[Any]) -> Any:
    """The value of ``cert``'s extension of class ``kind``; None if it has none."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _require_ca(cert: x509.Certificate, what: str) -> None:
    """Refuse certificates that cannot issue: no basicConstraints cA, or keyUsage lacking it."""
    constraints = extension_value(cert, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise IssuerConfigError(
            f"{what} ({cert.subject.rfc4514_string()}) is not a CA certificate "
            "(basicConstraints cA is not true)"
        )
    usage = extension_value(cert, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise IssuerConfigError(
            f"{what} ({cert.subject.rfc4514_string()}) may not sign certificates "
            "(keyUsage lacks keyCertSign)"
        )


def alternate_path(
    certificate: x509.Certificate, alternate: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The certificates an alternate chain serves after the leaf: the issuer's
    ``certificate`` and then ``alternate``, unless ``alternate`` begins with another
    certificate for the issuer itself (same subject and public key, issued by another CA, as
    in test mode's Pebble-shaped chains), which then stands in for ``certificate``."""
    if alternate and _same_ca(alternate[0], certificate):
        return tuple(alternate)
    return (certificate, *alternate)


def _same_ca(a: x509.Certificate, b: x509.Certificate) -> bool:
    return a.subject == b.subject and a.public_key() == b.public_key()


def _check_links(path: Sequence[x509.Certificate], what: str) -> None:
    """Each certificate must be signed by, and name as issuer, the next one."""
    for child, parent in itertools.pairwise(path):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise IssuerConfigError(
                f"{what}: {child.subject.rfc4514_string()} is not issued by "
                f"{parent.subject.rfc4514_string()} ({e or type(e).__name__})"
            ) from e
