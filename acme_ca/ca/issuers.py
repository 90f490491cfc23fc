"""The issuing CAs this process signs with, opened from ``issuers.toml`` (format and parsing:
:mod:`acme_ca.ca.issuers_file`).

:func:`load_issuers` reads the file, checks every chain link by signature and name, opens one
signer per issuer (PKCS#11 with ``pkcs11_sessions`` sessions, or a software key) and
refuses to start when an issuer certificate's public key is not the signer's key: such a CA
would sign certificates nobody can verify.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from acme_ca.ca.issuers_file import (
    DEFAULT_PURPOSE,
    IssuerConfigError,
    KeyRef,
    RootEntry,
    alternate_path,
    extension_value,
    read_issuers_file,
)
from acme_ca.ca.settings import HsmSettings, IssuerSettings
from acme_ca.ca.signer import (
    HashName,
    KeyType,
    Signer,
    SignerError,
    SoftwareSigner,
    default_hash,
)
from acme_ca.clock import Clock, SystemClock
from acme_ca.log import get_logger

_log = get_logger(__name__)

#: Environment variable :func:`~acme_ca.ca.pkcs11_signer.resolve_pin` consults for the HSM PIN.
PIN_ENV_VAR: Final = "ACME_CA_PKCS11_PIN"


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class Issuer:
    """An issuing CA ready to sign: its certificate, chains, URLs and open signer."""

    name: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    alternate_chains: tuple[tuple[x509.Certificate, ...], ...]
    signer: Signer
    crl_url: str
    ocsp_url: str | None
    ca_issuers_url: str
    #: ``dv`` or ``ov``: what this issuer signs (issuers.toml ``purpose``).
    purpose: str = DEFAULT_PURPOSE

    @property
    def key_type(self) -> KeyType:
        return self.signer.key_type

    @property
    def hash(self) -> HashName:
        """The hash this issuer signs with: SHA-384 for P-384 keys, SHA-256 otherwise."""
        return default_hash(self.signer.public_key)

    @property
    def subject(self) -> x509.Name:
        """The issuer name to copy into certificates and CRLs (BR: byte-identical)."""
        return self.certificate.subject

    @cached_property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """AKI (keyIdentifier only) for what this issuer signs, from its certificate's SKI."""
        ski = extension_value(self.certificate, x509.SubjectKeyIdentifier)
        if ski is None:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.signer.public_key)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def pem_chain(self, alternate: int | None = None) -> bytes:
        """PEM of the issuer certificate and the chain above it, to follow a leaf's PEM.

        ``alternate=None`` gives the primary chain (towards ``root``); ``alternate=i`` gives
        ``alternate_chains[i]``, for RFC 8555 §7.4.2 ``Link: rel="alternate"``.
        """
        if alternate is None:
            return _pem((self.certificate, *self.chain))
        return _pem(alternate_path(self.certificate, self.alternate_chains[alternate]))


@dataclass
class IssuerSet:
    """Every issuer of this process, and which one signs for which subscriber key type."""

    issuers: Mapping[str, Issuer]
    root: x509.Certificate
    rsa_issuer: str
    ecdsa_issuer: str
    roots: Mapping[str, RootEntry] = field(default_factory=dict)
    _closed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        for setting, name in (("rsa_issuer", self.rsa_issuer), ("ecdsa_issuer", self.ecdsa_issuer)):
            if name not in self.issuers:
                raise IssuerConfigError(
                    f"{setting} = {name!r} names no issuer in issuers.toml "
                    f"(known: {', '.join(sorted(self.issuers))})"
                )

    def for_key(self, public_key: PublicKeyTypes) -> Issuer:
        """The issuer for a subscriber key: ``ecdsa_issuer`` for EC keys, ``rsa_issuer`` for RSA."""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            return self.issuers[self.ecdsa_issuer]
        if isinstance(public_key, rsa.RSAPublicKey):
            return self.issuers[self.rsa_issuer]
        raise ValueError(f"no issuer for {type(public_key).__name__} subscriber keys")

    def for_purpose(self, purpose: str, public_key: PublicKeyTypes) -> Issuer:
        """The first issuer (issuers.toml order) with ``purpose`` whose key type suits the
        subscriber key: an EC issuer for EC keys, an RSA issuer for RSA keys.  ``dv`` keeps
        the configured ``rsa_issuer``/``ecdsa_issuer`` (:meth:`for_key`)."""
        if purpose == DEFAULT_PURPOSE:
            return self.for_key(public_key)
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise TypeError(f"no issuer for {type(public_key).__name__} subscriber keys")
        ecdsa = isinstance(public_key, ec.EllipticCurvePublicKey)
        for issuer in self.issuers.values():
            issuer_ecdsa = isinstance(issuer.signer.public_key, ec.EllipticCurvePublicKey)
            if issuer.purpose == purpose and issuer_ecdsa == ecdsa:
                return issuer
        kind = "ECDSA" if ecdsa else "RSA"
        raise KeyError(f"no {purpose} issuer in issuers.toml for {kind} subscriber keys")

    def by_name(self, name: str) -> Issuer:
        try:
            return self.issuers[name]
        except KeyError:
            raise KeyError(
                f"no issuer named {name!r} (known: {', '.join(sorted(self.issuers))})"
            ) from None

    def names(self) -> tuple[str, ...]:
        """The issuer names, in issuers.toml order."""
        return tuple(self.issuers)

    def __iter__(self) -> Iterator[Issuer]:
        return iter(self.issuers.values())

    def __len__(self) -> int:
        return len(self.issuers)

    async def aclose(self) -> None:
        """Close every signer; the set cannot sign afterwards."""
        if self._closed:
            return
        self._closed = True
        await _close_all([i.signer for i in self.issuers.values()])

    async def __aenter__(self) -> IssuerSet:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _close_all(signers: Sequence[Signer]) -> None:
    for signer in signers:
        try:
            await signer.aclose()
        except Exception as e:  # closing the rest matters more than one failure
            _log.warning("issuers.close_failed", error=repr(e))


class _PinSource:
    """Resolves the HSM PIN once, on first need, so software-only files never ask for it."""

    def __init__(self, hsm: HsmSettings) -> None:
        self._hsm = hsm
        self._pin: str | None = None

    async def get(self) -> str:
        # Imported here: python-pkcs11 loads for HSM keys only, not for software keys
        # (serve --test's path to ready, issue 21 item 8).
        from acme_ca.ca.pkcs11_signer import resolve_pin

        if self._pin is None:
            self._pin = await asyncio.to_thread(resolve_pin, self._hsm.pin, self._hsm.pin_file)
        return self._pin


async def open_key(
    key: KeyRef, hsm: HsmSettings, *, pin: str | None = None, pool_size: int | None = None
) -> Signer:
    """Open the signer for ``key``: the HSM token of ``hsm``, or the PEM file.

    ``pin`` defaults to the one ``hsm`` (``pkcs11_pin``, ``pkcs11_pin_file`` or
    ``ACME_CA_PKCS11_PIN``) gives; ``pool_size`` to ``hsm.sessions``.
    """
    if key.key_file is not None:
        try:
            return await SoftwareSigner.load(key.key_file)
        except OSError as e:
            raise SignerError(f"cannot read key file {key.key_file}: {e.strerror or e}") from e
        except ValueError as e:
            raise SignerError(f"key file {key.key_file}: {e}") from e
    assert key.pkcs11_key_label is not None
    if hsm.module is None:
        raise SignerError(
            f"PKCS#11 key {key.pkcs11_key_label!r} but pkcs11_module is not configured"
        )
    from acme_ca.ca.pkcs11_signer import Pkcs11Signer  # HSM keys only, as in _PinSource

    if pin is None:
        pin = await _PinSource(hsm).get()
    return await Pkcs11Signer.open(
        hsm.module,
        hsm.token_label,
        key.pkcs11_key_label,
        pin,
        pool_size=pool_size or hsm.sessions,
        session_wait=float(hsm.session_wait_seconds),
        sign_timeout=float(hsm.sign_timeout_seconds),
    )


async def open_root_signer(settings: IssuerSettings, name: str) -> Signer:
    """Open the key of ``[roots.<name>]`` (development ARL signing); refuses offline roots."""
    parsed = await asyncio.to_thread(read_issuers_file, settings.pki_path)
    entry = parsed.roots.get(name)
    if entry is None:
        raise IssuerConfigError(f"{parsed.path}: no [roots.{name}] table")
    if entry.key is None:
        raise IssuerConfigError(f"{parsed.path}: root {name!r} is offline (no key configured)")
    try:
        signer = await open_key(entry.key, settings.hsm, pool_size=1)
    except SignerError as e:
        raise IssuerConfigError(f"root {name!r}: {e}") from e
    try:
        _check_key_matches(signer, entry.certificate, f"root {name!r}", entry.key)
    except BaseException:
        await _close_all([signer])
        raise
    return signer


def _check_key_matches(
    signer: Signer, certificate: x509.Certificate, what: str, key: KeyRef
) -> None:
    if _spki(signer.public_key) != _spki(certificate.public_key()):
        raise IssuerConfigError(
            f"{what}: the certificate's public key ({certificate.subject.rfc4514_string()}) "
            f"does not match {key.describe()}; refusing to sign certificates nobody could "
            "verify"
        )


async def load_issuers(settings: IssuerSettings, *, clock: Clock | None = None) -> IssuerSet:
    """Read issuers.toml under ``settings.pki_path`` and open every issuer's signer.

    Raises :class:`IssuerConfigError` (with every signer already closed again) for a missing or
    malformed file, a certificate that is not a CA or does not chain, a key that cannot be
    opened or does not match its certificate, or ``rsa_issuer``/``ecdsa_issuer`` naming no
    issuer.
    """
    now = (clock or SystemClock()).now()
    parsed = await asyncio.to_thread(read_issuers_file, settings.pki_path, now=now)
    chosen = (("rsa_issuer", settings.rsa_issuer), ("ecdsa_issuer", settings.ecdsa_issuer))
    for setting, name in chosen:
        if name not in parsed.issuers:
            raise IssuerConfigError(
                f"{setting} = {name!r} names no issuer in {parsed.path} "
                f"(known: {', '.join(sorted(parsed.issuers))})"
            )
    pins = _PinSource(settings.hsm)
    opened: list[Signer] = []
    issuers: dict[str, Issuer] = {}
    try:
        for name, entry in parsed.issuers.items():
            try:
                pin = await pins.get() if entry.key.pkcs11_key_label is not None else None
                signer = await open_key(entry.key, settings.hsm, pin=pin)
            except SignerError as e:
                raise IssuerConfigError(f"issuer {name!r}: {e}") from e
            opened.append(signer)
            _check_key_matches(signer, entry.certificate, f"issuer {name!r}", entry.key)
            issuers[name] = Issuer(
                name=name,
                certificate=entry.certificate,
                chain=entry.chain,
                alternate_chains=entry.alternate_chains,
                signer=signer,
                crl_url=entry.crl_url,
                ocsp_url=entry.ocsp_url,
                ca_issuers_url=entry.ca_issuers_url,
                purpose=entry.purpose,
            )
            _log.info(
                "issuers.loaded",
                issuer=name,
                subject=entry.certificate.subject.rfc4514_string(),
                key=entry.key.describe(),
                key_type=signer.key_type,
                purpose=entry.purpose,
                not_after=entry.certificate.not_valid_after_utc.isoformat(),
            )
    except BaseException:
        await _close_all(opened)
        raise
    return IssuerSet(
        issuers=MappingProxyType(issuers),
        root=parsed.root,
        rsa_issuer=settings.rsa_issuer,
        ecdsa_issuer=settings.ecdsa_issuer,
        roots=parsed.roots,
    )
