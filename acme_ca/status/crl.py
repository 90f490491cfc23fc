"""Full CRLs, one per issuing CA (and per development root), as CP Table 7.2.2 and BR 7.2 ask.

Profile (BR-CRL-1..3):

* version v2; signature and signatureAlgorithm of the issuer's key (SHA-256, or SHA-384 for
  P-384 roots), byte for byte as BR 7.1.3.2 lists them;
* issuer: the issuer certificate's subject DER, byte-identical (checked after building);
* thisUpdate = signing time (seconds), nextUpdate = thisUpdate + ``crl_validity_hours``
  (CP: 96 hours; never more than 10 days);
* extensions: CRL Number (non-critical, strictly increasing: allocated in the database) and
  AKI with keyIdentifier only (non-critical); no Issuing Distribution Point on a full CRL
  (BR 7.2.2.1: NOT RECOMMENDED);
* entries: every revoked, unexpired certificate of the issuer: serial, revocationDate and a
  non-critical reasonCode, omitted for unspecified (0); only keyCompromise (1),
  affiliationChanged (3), superseded (4), cessationOfOperation (5) and privilegeWithdrawn (9)
  are written (BR 7.2.2; never certificateHold).

Signing follows :mod:`acme_ca.ca.der`: the CRL is built and signed with a throwaway key of the
issuer's key type, that copy is linted (``lint_crl -t CRL -p BR``; an ERROR or FATAL finding
stops publication), and exactly its TBS bytes are signed through the issuer's
:class:`~acme_ca.ca.signer.Signer`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.ca.der import (
    TAG_CONTEXT_0,
    TAG_INTEGER,
    TAG_SEQUENCE,
    read_tlv,
    sign_tbs_crl,
    throwaway_signed_crl,
)
from acme_ca.ca.lint import CertificateLinter, LintFinding
from acme_ca.ca.signer import HashName, Signer, default_hash
from acme_ca.clock import Clock
from acme_ca.db.status import CrlDraft, CrlRecord, RevokedEntry, StatusRepository

log = structlog.get_logger(component="acme_ca.status.crl")

#: BR 7.2.2: the CRLReasons a subscriber CRL may carry (0 is written as no reasonCode).
CRL_REASONS: Final[Mapping[int, x509.ReasonFlags]] = {
    1: x509.ReasonFlags.key_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    9: x509.ReasonFlags.privilege_withdrawn,
}
#: BR 4.9.7: nextUpdate at most ten days after thisUpdate for subscriber CRLs.
MAX_CRL_VALIDITY: Final = timedelta(days=10)


# --------------------------------------------------------------------------- raw DER


def der_children(der: bytes) -> list[bytes]:
    """The encoded elements inside the single constructed element ``der``."""
    _, start, end = read_tlv(der)
    if end != len(der):
        raise ValueError("trailing bytes after DER element")
    out = []
    offset = start
    while offset < end:
        _, _, stop = read_tlv(der, offset)
        out.append(der[offset:stop])
        offset = stop
    return out


def raw_subject_der(certificate: x509.Certificate) -> bytes:
    """The subject Name exactly as encoded in ``certificate`` (not re-encoded)."""
    fields = [f for f in der_children(certificate.tbs_certificate_bytes) if f[0] != TAG_CONTEXT_0]
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5 or fields[4][0] != TAG_SEQUENCE:
        raise ValueError("TBSCertificate without a subject")
    return fields[4]


def raw_crl_issuer_der(tbs_certlist: bytes) -> bytes:
    """The issuer Name inside a TBSCertList: after the version INTEGER and signature."""
    fields = [f for f in der_children(tbs_certlist) if f[0] != TAG_INTEGER]
    if len(fields) < 2 or fields[1][0] != TAG_SEQUENCE:
        raise ValueError("TBSCertList without an issuer")
    return fields[1]


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class CrlAuthority:
    """What signs a CRL: an issuing CA, or a root whose key this installation holds."""

    name: str
    certificate: x509.Certificate
    signer: Signer

    @property
    def hash(self) -> HashName:
        return default_hash(self.signer.public_key)

    @cached_property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """keyIdentifier only: the certificate's SKI, else the RFC 5280 method 1 hash."""
        try:
            ski = self.certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.signer.public_key)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


class CrlLintFailed(Exception):
    """The CRL drawn up has ERROR/FATAL lint findings; nothing was signed."""

    def __init__(self, findings: Sequence[LintFinding]) -> None:
        super().__init__("; ".join(str(f) for f in findings))
        self.findings = tuple(findings)


@dataclass(frozen=True)
class SignedCrl:
    issuer: str
    number: int
    this_update: datetime
    next_update: datetime
    der: bytes
    entries: int
    entries_digest: bytes


def entries_digest(entries: Iterable[RevokedEntry]) -> bytes:
    """SHA-256 over (serial, revocation second, reason) in serial order: equal digests mean
    two CRLs list the same revocations."""
    lines = sorted(
        f"{int(e.serial, 16):x}:{int(e.revoked_at.timestamp())}:{e.reason}" for e in entries
    )
    return hashlib.sha256("\n".join(lines).encode()).digest()


def crl_entry(entry: RevokedEntry) -> x509.RevokedCertificate:
    """One CRL entry: serial, revocationDate and, unless unspecified, a reasonCode."""
    builder = x509.RevokedCertificateBuilder(
        int(entry.serial, 16), entry.revoked_at.replace(microsecond=0)
    )
    reason = CRL_REASONS.get(entry.reason)
    if reason is not None:
        builder = builder.add_extension(x509.CRLReason(reason), critical=False)
    return builder.build()


def crl_builder(
    authority: CrlAuthority,
    number: int,
    entries: Sequence[RevokedEntry],
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationListBuilder:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority.authority_key_identifier, critical=False)
    )
    for entry in sorted(entries, key=lambda e: int(e.serial, 16)):
        builder = builder.add_revoked_certificate(crl_entry(entry))
    return builder


async def sign_crl(
    authority: CrlAuthority,
    draft: CrlDraft,
    *,
    now: datetime,
    validity: timedelta,
    linter: CertificateLinter,
) -> SignedCrl:
    """Build, lint and sign the CRL ``draft`` describes; raises :class:`CrlLintFailed`."""
    if not timedelta(0) < validity <= MAX_CRL_VALIDITY:
        raise ValueError(f"CRL validity {validity} is outside (0, 10 days] (BR 4.9.7)")
    this_update = now.replace(microsecond=0)
    next_update = this_update + validity
    builder = crl_builder(authority, draft.number, draft.entries, this_update, next_update)
    lint_copy = throwaway_signed_crl(builder, authority.signer, authority.hash)
    report = await linter.alint_crl(lint_copy.public_bytes(Encoding.DER))
    if report.blocking:
        raise CrlLintFailed(report.blocking)
    tbs = lint_copy.tbs_certlist_bytes
    if raw_crl_issuer_der(tbs) != raw_subject_der(authority.certificate):
        raise ValueError(f"{authority.name}: CRL issuer is not byte-identical to the subject")
    crl = await sign_tbs_crl(tbs, authority.signer, authority.hash)
    if not crl.is_signature_valid(authority.signer.public_key):
        raise ValueError(f"{authority.name}: CRL signature does not verify")
    return SignedCrl(
        issuer=authority.name,
        number=draft.number,
        this_update=this_update,
        next_update=next_update,
        der=crl.public_bytes(Encoding.DER),
        entries=len(draft.entries),
        entries_digest=entries_digest(draft.entries),
    )


async def publish_crl(
    repository: StatusRepository,
    authority: CrlAuthority,
    *,
    clock: Clock,
    validity: timedelta,
    linter: CertificateLinter,
    with_entries: bool = True,
    trigger: str = "scheduled",
) -> CrlRecord | None:
    """Allocate a CRL Number, build, lint, sign and store the CRL; log ``crl.published``.

    ``with_entries=False`` (roots) lists nothing: revoked CA certificates are not tracked in
    the database.  A CRL with blocking lint findings is not published: ``crl.lint_failed`` is
    logged as an error and None returned; the previous CRL stays the latest.
    """
    now = clock.now()
    if with_entries:
        draft = await repository.begin_crl(authority.name, now)
    else:
        draft = CrlDraft(authority.name, await repository.next_crl_number(authority.name), ())
    odd = sorted({e.reason for e in draft.entries if e.reason and e.reason not in CRL_REASONS})
    if odd:
        log.error(
            "crl.reason_not_allowed",
            issuer=authority.name,
            reasons=odd,
            detail="listed without reasonCode: BR 7.2.2 allows only 1, 3, 4, 5 and 9",
        )
    try:
        signed = await sign_crl(authority, draft, now=now, validity=validity, linter=linter)
    except CrlLintFailed as e:
        log.error(  # noqa: TRY400 - the findings are the story, not a traceback
            "crl.lint_failed",
            issuer=authority.name,
            number=draft.number,
            findings=[str(f) for f in e.findings],
        )
        return None
    record = CrlRecord(
        issuer=signed.issuer,
        number=signed.number,
        this_update=signed.this_update,
        next_update=signed.next_update,
        der=signed.der,
        entries=signed.entries,
        entries_digest=signed.entries_digest,
        created_at=clock.now(),
    )
    await repository.store_crl(record)
    log.info(
        "crl.published",
        issuer=record.issuer,
        number=record.number,
        entries=record.entries,
        this_update=record.this_update.isoformat(),
        next_update=record.next_update.isoformat(),
        trigger=trigger,
    )
    return record
