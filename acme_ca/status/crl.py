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

Signing follows :mod:`acme_ca.ca.der`, in time linear in the entries and off the event loop
(:func:`draw_up_crl` runs in a worker thread; a CRL may list 100,000 entries):

* cryptography's builder makes the header (issuer, times, extensions) and a lint copy, signed
  with a throwaway key of the issuer's key type, that lists one entry of each encoding shape
  (:func:`specimen_indexes`); that copy is linted (``lint_crl -t CRL -p BR``; an ERROR or
  FATAL finding stops publication).  pkilint needs about a millisecond per entry, and more as
  the list grows (minutes for 100,000), so the full list is not linted; see
  docs/performance.md.
* every entry is DER-encoded here (:func:`encode_crl_entry`); the lint copy's entries must be
  byte-identical to cryptography's encoding of them, else nothing is signed.  (Appending
  entries to cryptography's builder one by one copies its list each time: quadratic.)
* the TBSCertList, the lint copy's with the full entry list spliced in, is signed through the
  issuer's :class:`~acme_ca.ca.signer.Signer`, then parsed and verified in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.ca.der import (
    TAG_CONTEXT_0,
    TAG_ENUMERATED,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    encode_integer,
    encode_time,
    encode_tlv,
    read_tlv,
    sign_tbs,
    split_signed,
    throwaway_signed_crl,
)
from acme_ca.ca.lint import CertificateLinter, LintFinding
from acme_ca.ca.signer import (
    HashName,
    SignatureCheckFailed,
    Signer,
    default_hash,
    verify_signature,
)
from acme_ca.clock import Clock
from acme_ca.db.status import (
    CrlDraft,
    CrlRecord,
    RevokedEntries,
    RevokedEntry,
    SignedCrl,
    StatusRepository,
)

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
class _Ordered:
    """``entries`` in serial order, as positions into its columns: no object per entry (see
    :class:`~acme_ca.db.status.RevokedEntries`)."""

    entries: RevokedEntries
    numbers: list[int]  #: serial numbers, in the columns' order
    order: list[int]  #: positions, by serial number

    @classmethod
    def of(cls, entries: RevokedEntries) -> _Ordered:
        """The database gives entries in serial order, so the sort is one linear pass; a
        long sort would hold the GIL, and with it the event loop."""
        numbers = [int(serial, 16) for serial in entries.serials]
        return cls(entries, numbers, sorted(range(len(numbers)), key=numbers.__getitem__))

    def digest(self) -> bytes:
        revoked_at, reasons = self.entries.revoked_at, self.entries.reasons
        lines = (
            f"{self.numbers[i]:x}:{int(revoked_at[i].timestamp())}:{reasons[i]}" for i in self.order
        )
        return hashlib.sha256("\n".join(lines).encode()).digest()


def entries_digest(entries: RevokedEntries) -> bytes:
    """SHA-256 over (serial, revocation second, reason) in serial order: equal digests mean
    two CRLs list the same revocations."""
    return _Ordered.of(entries).digest()


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
    """cryptography's builder for this CRL: for the lint copy's few entries only, since each
    ``add_revoked_certificate`` copies the list so far (quadratic in the entries)."""
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


@dataclass(frozen=True)
class DrawnCrl:
    """A CRL ready for the real signature: the TBSCertList to sign and the copy to lint."""

    tbs: bytes
    #: The same header (issuer, times, extensions) with one entry per distinct entry encoding
    #: (see :func:`specimen_indexes`), signed with the throwaway key: what the linter checks.
    lint_copy: bytes
    entries: int
    entries_digest: bytes


#: ``crlEntryExtensions`` of each written reasonCode: one non-critical CRLReason extension.
_REASON_EXTENSIONS: Final[Mapping[int, bytes]] = {
    code: encode_tlv(
        TAG_SEQUENCE,
        encode_tlv(
            TAG_SEQUENCE,
            encode_tlv(TAG_OID, bytes([0x55, 0x1D, 0x15]))  # id-ce-cRLReasons 2.5.29.21
            + encode_tlv(TAG_OCTET_STRING, encode_tlv(TAG_ENUMERATED, bytes([code]))),
        ),
    )
    for code in CRL_REASONS
}
#: RFC 5280 4.1.2.2 / BR 7.1.2.7: serial numbers are positive and at most 20 octets.
_MAX_SERIAL_OCTETS: Final = 20


def encode_crl_entry(serial: int, revoked_at: datetime, reason: int) -> bytes:
    """One revokedCertificates element, byte for byte as cryptography's builder writes it
    (:func:`crl_entry`): serial, revocationDate and, for 1/3/4/5/9 only, a reasonCode."""
    serial_der = encode_integer(serial)
    if serial == 0 or len(serial_der) - 2 > _MAX_SERIAL_OCTETS:
        raise ValueError(f"serial {serial:x} is not a positive INTEGER of at most 20 octets")
    body = serial_der + encode_time(revoked_at) + _REASON_EXTENSIONS.get(reason, b"")
    return encode_tlv(TAG_SEQUENCE, body)


def specimen_indexes(encoded: Sequence[bytes]) -> list[int]:
    """One entry per encoding shape, plus the first and the last.

    Entries of one shape (serial length, Time type, reasonCode) differ only in the serial's
    and the date's digits, so linting one of each checks every structure the CRL holds.
    """
    seen: dict[tuple[int, int, bytes], int] = {}
    for index, entry in enumerate(encoded):
        # SEQUENCE { INTEGER, Time, [extensions] }: at most 58 bytes (a serial of at most 20
        # octets, encode_crl_entry), so every length is one byte
        serial_length = entry[3]
        time_at = 4 + serial_length
        key = (serial_length, entry[time_at], entry[time_at + 2 + entry[time_at + 1] :])
        seen.setdefault(key, index)
    picked = set(seen.values())
    if encoded:
        picked |= {0, len(encoded) - 1}
    return sorted(picked)


def _replace_entries(tbs: bytes, revoked: bytes | None) -> tuple[bytes, bytes | None]:
    """``tbs`` with its revokedCertificates replaced by ``revoked`` (None: no such field),
    and the field it had (None if it had none)."""
    fields = der_children(tbs)
    # version, signature, issuer, thisUpdate, nextUpdate, [revokedCertificates], [0] extensions
    head, rest = fields[:5], fields[5:]
    had = rest.pop(0) if rest and rest[0][0] == TAG_SEQUENCE else None
    middle = [] if revoked is None else [revoked]
    return encode_tlv(TAG_SEQUENCE, b"".join([*head, *middle, *rest])), had


def draw_up_crl(
    authority: CrlAuthority,
    number: int,
    entries: RevokedEntries,
    this_update: datetime,
    next_update: datetime,
) -> DrawnCrl:
    """The TBSCertList and its lint copy, in time linear in the entries (plus one sort).

    CPU-bound: callers on an event loop run it in a worker thread.  cryptography's builder
    makes the header and the lint copy's few entries; every entry is encoded here, and the
    lint copy's entries must come out byte-identical to cryptography's, else nothing is signed.
    """
    ordered = _Ordered.of(entries)
    numbers, revoked_at, reasons = ordered.numbers, entries.revoked_at, entries.reasons
    encoded = [encode_crl_entry(numbers[i], revoked_at[i], reasons[i]) for i in ordered.order]
    for previous, following in zip(ordered.order, ordered.order[1:], strict=False):
        if numbers[previous] == numbers[following]:
            raise ValueError(f"{authority.name}: serial {numbers[following]:x} listed twice")
    picked = specimen_indexes(encoded)
    specimens = [entries[ordered.order[i]] for i in picked]
    builder = crl_builder(authority, number, specimens, this_update, next_update)
    lint_copy = throwaway_signed_crl(builder, authority.signer, authority.hash)
    revoked = encode_tlv(TAG_SEQUENCE, b"".join(encoded)) if encoded else None
    tbs, specimen = _replace_entries(lint_copy.tbs_certlist_bytes, revoked)
    expected = encode_tlv(TAG_SEQUENCE, b"".join(encoded[i] for i in picked)) if picked else None
    if specimen != expected:
        raise ValueError(f"{authority.name}: CRL entry encoding differs from cryptography's")
    if raw_crl_issuer_der(tbs) != raw_subject_der(authority.certificate):
        raise ValueError(f"{authority.name}: CRL issuer is not byte-identical to the subject")
    return DrawnCrl(
        tbs=tbs,
        lint_copy=lint_copy.public_bytes(Encoding.DER),
        entries=len(encoded),
        entries_digest=ordered.digest(),
    )


def _check_signed(authority: CrlAuthority, der: bytes, entries: int) -> None:
    """The signed CRL parses, lists ``entries`` entries, and its signature verifies (over
    the TBS bytes: cryptography's ``is_signature_valid`` re-encodes every entry first)."""
    crl = x509.load_der_x509_crl(der)
    if len(crl) != entries:
        raise ValueError(f"{authority.name}: CRL lists {len(crl)} entries, not {entries}")
    tbs, _, signature = split_signed(der)
    try:
        verify_signature(authority.signer.public_key, signature, tbs, authority.hash)
    except SignatureCheckFailed as e:
        raise ValueError(f"{authority.name}: CRL signature does not verify") from e


async def sign_crl(
    authority: CrlAuthority,
    draft: CrlDraft,
    *,
    now: datetime,
    validity: timedelta,
    linter: CertificateLinter,
) -> SignedCrl:
    """Build, lint and sign the CRL ``draft`` describes; raises :class:`CrlLintFailed`.

    Building, linting and the final checks run in worker threads: a CRL of 100,000 entries
    is about 4 MB of DER, and the signing worker's event loop must keep serving meanwhile.
    """
    if not timedelta(0) < validity <= MAX_CRL_VALIDITY:
        raise ValueError(f"CRL validity {validity} is outside (0, 10 days] (BR 4.9.7)")
    this_update = now.replace(microsecond=0)
    next_update = this_update + validity
    drawn = await asyncio.to_thread(
        draw_up_crl, authority, draft.number, draft.entries, this_update, next_update
    )
    report = await linter.alint_crl(drawn.lint_copy)
    if report.blocking:
        raise CrlLintFailed(report.blocking)
    der = await sign_tbs(drawn.tbs, authority.signer, authority.hash)
    await asyncio.to_thread(_check_signed, authority, der, drawn.entries)
    return SignedCrl(
        issuer=authority.name,
        number=draft.number,
        this_update=this_update,
        next_update=next_update,
        der=der,
        entries=drawn.entries,
        entries_digest=drawn.entries_digest,
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
        draft = CrlDraft(
            authority.name, await repository.next_crl_number(authority.name), RevokedEntries()
        )
    odd = sorted({r for r in draft.entries.reasons if r and r not in CRL_REASONS})
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
    record = CrlRecord(**asdict(signed), created_at=clock.now())
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
