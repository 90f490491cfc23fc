"""Test mode's Pebble-shaped hierarchy, for ``PEBBLE_ALTERNATE_ROOTS`` and ``PEBBLE_CHAIN_LENGTH``.

Pebble 2.10 (``ca/ca.go``, ``New`` and ``newChain``) makes ``1 + PEBBLE_ALTERNATE_ROOTS``
chains; each has its own root and ``PEBBLE_CHAIN_LENGTH`` intermediates (the root excluded,
at least 1), of which the one nearest the leaf signs, with the same key and subject in every
chain.  A leaf therefore verifies through any chain: chain 0 is served at the certificate URL,
the others at its ``Link: rel="alternate"`` URLs.  Here, with ``alternate_roots`` or
``chain_length`` set (test mode only, :mod:`acme_ca.config.checks`), ``acme-ca init`` writes
that shape for each of the development hierarchy's issuing CAs::

    root.pem, root-r2.pem …          chain N's root, acme_ca Development Root R<N+1>
    int-r1-1.pem … int-r1-<L-1>.pem  chain 0's intermediates above the issuers, #1 nearest
    dv-rsa.pem, dv-rsa-r2.pem …      each issuing CA's certificate in chain 0, 1 …

issuers.toml lists chain 0 as each issuer's ``certificate`` and ``chain``, the others as
``alternate_chains`` that begin with the issuer's certificate of that chain (same subject and
key: :func:`acme_ca.ca.issuers_file.alternate_path`), and every root and intermediate with its
key as a ``[roots.*]`` table, so the status listener signs their CRLs and serves their
certificates.  CRLs and OCSP of the issuers need nothing more: one key signs in every chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.x509.oid import CertificatePoliciesOID, ExtendedKeyUsageOID

from acme_ca.ca.hierarchy import (
    ISSUER_VALIDITY,
    ISSUING_CAS,
    ROOT_R1,
    CaSpec,
    HierarchyError,
    _aki,
    _ca_table,
    _issuer_table,
    _issuing_ca,
    _key_usage,
    _KeyStore,
    _log_issuer,
    _name,
    _pem,
    _root,
    _sign,
    _status_links,
    _Urls,
    _write_hierarchy,
)
from acme_ca.ca.issuers_file import IssuersFile, alternate_path, read_issuers_file
from acme_ca.ca.settings import HierarchySettings
from acme_ca.ca.signer import Signer
from acme_ca.clock import Clock
from acme_ca.config.base import ConfigError
from acme_ca.log import get_logger

_log = get_logger(__name__)

#: Pebble's defaults (cmd/pebble/main.go): no alternate root, one intermediate per chain.
PEBBLE_ALTERNATE_ROOTS: Final = 0
PEBBLE_CHAIN_LENGTH: Final = 1


@dataclass(frozen=True)
class ChainShape:
    """How many chains, and how many certificates each puts between a leaf and its root."""

    alternate_roots: int = PEBBLE_ALTERNATE_ROOTS
    chain_length: int = PEBBLE_CHAIN_LENGTH

    @property
    def chains(self) -> int:
        return 1 + self.alternate_roots

    @classmethod
    def of(cls, settings: HierarchySettings) -> ChainShape | None:
        """The shape test mode's knobs ask for; None (neither set) keeps the development
        hierarchy's own (Root X1 through a cross-certificate)."""
        roots, length = settings.alternate_roots, settings.chain_length
        if roots is None and length is None:
            return None
        return cls(
            PEBBLE_ALTERNATE_ROOTS if roots is None else roots,
            PEBBLE_CHAIN_LENGTH if length is None else length,
        )

    @classmethod
    def of_file(cls, parsed: IssuersFile) -> ChainShape | None:
        """The shape of a hierarchy this module wrote, or None for any other (the
        development hierarchy's cross-certificate, a hand-written one)."""
        shapes = set()
        for entry in parsed.issuers.values():
            length = 1 + len(entry.chain)
            for alternate in entry.alternate_chains:
                path = alternate_path(entry.certificate, alternate)
                if path[0] == entry.certificate or len(path) != length:
                    return None  # a cross-certificate above the issuer, or another length
            shapes.add(cls(len(entry.alternate_chains), length))
        return shapes.pop() if len(shapes) == 1 else None


def chain_root(index: int) -> CaSpec:
    """Chain ``index``'s root: Root R1 (``root.pem``, the primary root) for chain 0."""
    if index == 0:
        return ROOT_R1
    n = index + 1
    return CaSpec(f"root-r{n}", f"acme_ca Development Root R{n}", "ec-p384", f"root-r{n}.pem")


def chain_intermediate(index: int, level: int) -> CaSpec:
    """Chain ``index``'s intermediate ``level`` places above the issuing CAs (1: nearest)."""
    n = index + 1
    return CaSpec(
        f"int-r{n}-{level}",
        f"acme_ca Development Intermediate R{n} #{level}",
        "ec-p256",
        f"int-r{n}-{level}.pem",
    )


def issuer_file(ca: CaSpec, index: int) -> str:
    """The file of ``ca``'s certificate in chain ``index``."""
    return ca.file if index == 0 else ca.file.removesuffix(".pem") + f"-r{index + 1}.pem"


@dataclass(frozen=True)
class _Top:
    """The CA that signs the issuing CAs' certificates in one chain, and the files between
    it and the chain's root (nearest the issuers first)."""

    spec: CaSpec
    certificate: x509.Certificate
    signer: Signer
    above: tuple[str, ...]


async def _intermediate(
    ca: CaSpec,
    signer: Signer,
    parent: _Top,
    path_length: int,
    not_before: datetime,
    urls: _Urls,
) -> x509.Certificate:
    """A CA certificate between a root and the issuing CAs: ``path_length`` CA certificates
    may follow it (BR 7.1.2.2-like: serverAuth only; anyPolicy, which BR 7.1.2.10.5 allows
    an affiliated CA, so the DV and the OV issuers below it keep their reserved policies;
    both reserved OIDs together would be pkilint's ca_multiple_reserved_policy_oids)."""
    not_after = min(
        not_before + ISSUER_VALIDITY - timedelta(seconds=1), parent.certificate.not_valid_after_utc
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(ca.common_name))
        .issuer_name(parent.certificate.subject)
        .public_key(signer.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(digital_signature=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(CertificatePoliciesOID.ANY_POLICY, None)]
            ),
            critical=False,
        )
        .add_extension(_aki(parent.certificate), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer.public_key), critical=False)
    )
    builder = _status_links(builder, urls, parent.spec.name)
    return await _sign(builder, parent.signer)


async def create_chains(
    settings: HierarchySettings, clock: Clock, keys: _KeyStore, shape: ChainShape
) -> None:
    """Generate and write ``shape`` under ``settings.pki_path`` (see the module docstring)."""
    if shape.alternate_roots < 0 or shape.chain_length < 1:
        raise HierarchyError(f"no such chain shape: {shape}")
    pki = settings.pki_path
    urls = _Urls(settings.status_base_url.rstrip("/"))
    not_before = clock.now().replace(microsecond=0)
    files: dict[str, bytes] = {}
    ca_tables: list[str] = []
    tops: list[_Top] = []
    for index in range(shape.chains):
        spec = chain_root(index)
        signer, key = await keys.create(spec)
        cert = await _root(spec, signer, not_before)
        files[spec.file] = _pem(cert)
        ca_tables.append(_ca_table(spec, key, urls))
        top = _Top(spec, cert, signer, ())
        for level in range(shape.chain_length - 1, 0, -1):
            spec = chain_intermediate(index, level)
            signer, key = await keys.create(spec)
            cert = await _intermediate(spec, signer, top, level, not_before, urls)
            files[spec.file] = _pem(cert)
            ca_tables.append(_ca_table(spec, key, urls))
            top = _Top(spec, cert, signer, (spec.file, *top.above))
        tops.append(top)
    issuer_tables: list[str] = []
    for ca in ISSUING_CAS:
        signer, key = await keys.create(ca)
        for index, top in enumerate(tops):
            cert = await _issuing_ca(
                ca,
                signer,
                top.certificate,
                top.signer,
                not_before,
                urls,
                settings.policy_oid,
                parent_name=top.spec.name,
            )
            files[issuer_file(ca, index)] = _pem(cert)
            if index == 0:
                _log_issuer(ca, cert, in_hsm=keys.in_hsm)
        alternates = [[issuer_file(ca, i), *top.above] for i, top in enumerate(tops) if i]
        issuer_tables.append(_issuer_table(ca, key, urls, list(tops[0].above), alternates))
    _log.info(
        "hierarchy.chains_created",
        chains=shape.chains,
        chain_length=shape.chain_length,
        roots=[chain_root(i).name for i in range(shape.chains)],
    )
    await _write_hierarchy(pki, not_before, files, issuer_tables + ca_tables, in_hsm=keys.in_hsm)


def check_chain_shape(settings: HierarchySettings) -> None:
    """An existing hierarchy (a kept ``ACME_CA_HOME``) must have the shape test mode's knobs
    ask for: it is never rebuilt, since certificates it issued would lose their CRLs."""
    wanted = ChainShape.of(settings)
    if wanted is None:
        return
    have = ChainShape.of_file(read_issuers_file(settings.pki_path))
    if have != wanted:
        held = "another shape" if have is None else _describe(have)
        raise ConfigError(
            f"PEBBLE_ALTERNATE_ROOTS/PEBBLE_CHAIN_LENGTH (alternate_roots, chain_length) ask "
            f"for {_describe(wanted)}, but {settings.pki_path} holds a hierarchy of {held}: "
            "start with --ephemeral (a new hierarchy each run) or another ACME_CA_HOME"
        )


def _describe(shape: ChainShape) -> str:
    return f"{shape.chains} chain(s) of length {shape.chain_length}"
