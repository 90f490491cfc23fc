"""Who may revoke what, and with which reason (RFC 8555 §7.6, BR 4.9.1.1, BR 7.2.2, CP 4.9).

**ACME (subscribers and other key or name holders).**  A revokeCert request is accepted when
it is signed by the account that ordered the certificate, by an account holding valid
authorizations for every name in it, or (``jwk``) by the certificate's own key.  Reasons a
requester may give (BR 7.2.2, ACME-REV-2): unspecified (0, or the reason omitted),
keyCompromise (1), affiliationChanged (3), superseded (4), cessationOfOperation (5); anything
else, privilegeWithdrawn (9) included, is ``badRevocationReason``.  A second request for a
revoked certificate is ``alreadyRevoked``.

**Key blocking (BR 6.1.1.3(4), ACME-REV-3).**  The certificate's key goes on ``blocked_keys``
(which the key policy consults for every CSR and every account key) in the same transaction as
the revocation when

* the request is signed by the certificate key: whoever sent it holds the private key, so we
  treat the key as out of the subscriber's sole control whatever reason was given; or
* the reason is keyCompromise, from any authorized requester.

**Key compromise (BR 4.9.1.1 #3, 4.9.12, 7.2.2; KC-1..3).**  A keyCompromise revocation, by
any route (the certificate key, an account, ``acme-ca admin revoke``, ``acme-ca admin
block-key``), also queues a durable sweep in that transaction: the signing workers revoke
every unexpired certificate and precertificate with the same SubjectPublicKeyInfo, of any
account, as keyCompromise (``status/key_compromise.py``).  A certificate revoked earlier for
another reason and then reported as keyCompromise gets reason keyCompromise (its
revocationDate stays, or moves back to an earlier known compromise date): the request
succeeds; only a second keyCompromise report is ``alreadyRevoked``.  A revocation signed by
the certificate key with another reason blocks the key but sweeps nothing: holding the key
is not evidence that it leaked.

Decision for keyCompromise *without* proof of possession (an account request): accepted,
recorded as reason 1 and the key blocked.  BR 4.9.1.1 #3 makes us revoke within 24 hours
once we have evidence of compromise, and the subscriber's own statement is such evidence;
CP 4.9.1 obliges subscribers to apply when the key "has been or may be compromised", and
refusing would leave a certificate we were told is compromised unrevoked.  The block records
that it rests on a statement, not on proof (``blocked_keys.reason``), so an operator can
review it; the worst a dishonest requester with authorizations for every name can do is
force the holder of that key to use a new one.

**Operators** (``acme-ca admin revoke``, CP 4.9.1 "the CA may revoke ... at the CA's
discretion") may also use privilegeWithdrawn (9), revoke by serial (any assigned serial: a
precertificate whose certificate was never stored is revoked all the same, BR 7.1.2.9) or
every unexpired certificate under a registered domain, and block a key they learnt is
compromised (``block-key``); they are recorded by name in the audit trail.

The CRL/OCSP side of a revocation is the status room's job; this module only decides and
records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import idna
import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from acme_ca.acme import problems
from acme_ca.acme.jwk import PublicKey
from acme_ca.acme.problems import AcmeError
from acme_ca.br import OV_POLICY_OID
from acme_ca.clock import Clock
from acme_ca.db.accounts import Account
from acme_ca.db.certificates import (
    CertificateRecord,
    CertificateRepository,
    KeyBlock,
    RevocationOutcome,
)
from acme_ca.keyid import spki_sha256
from acme_ca.psl import icann_public_suffix_list

log = structlog.get_logger(component="acme_ca.ra.revocation")

UNSPECIFIED = 0
KEY_COMPROMISE = 1
PRIVILEGE_WITHDRAWN = 9

#: RFC 5280 CRLReason names an operator may use (BR 7.2.2; 2, 6, 8 and 10 never apply).
REASON_CODES: dict[str, int] = {
    "unspecified": UNSPECIFIED,
    "keyCompromise": KEY_COMPROMISE,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "privilegeWithdrawn": PRIVILEGE_WITHDRAWN,
}
REASON_NAMES: dict[int, str] = {code: name for name, code in REASON_CODES.items()}
#: What an ACME requester may ask for (ACME-REV-2: 9 is not offered).
SUBSCRIBER_REASONS = frozenset({0, 1, 3, 4, 5})
OPERATOR_REASONS = frozenset(REASON_CODES.values())


class OperatorRevocationError(ValueError):
    """An operator's revocation request cannot be carried out (unknown serial, bad domain)."""


@dataclass(frozen=True)
class OperatorRevocation:
    """One certificate an operator's command revoked (or found already revoked)."""

    serial: str
    names: tuple[str, ...]
    account_id: int
    not_after: datetime
    reason: int
    revoked: bool  # False: it was already revoked (``updated`` says whether that changed)
    revoked_at: datetime | None
    key_blocked: bool
    updated: bool = False  # revoked before for another reason, now keyCompromise
    precertificate: bool = False  # the serial's certificate was never stored


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalize_serial(text: str) -> str:
    """An operator's serial (hex, any case, optional ``0x``/colons/leading zeros) → stored form."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise OperatorRevocationError(f"{text!r} is not a hexadecimal serial number") from None
    if value <= 0:
        raise OperatorRevocationError("a serial number is positive")
    return serial_hex(value)


def normalize_domain(text: str) -> str:
    """A registered domain (or a name under one) to revoke under, as an A-label name.

    A public suffix (``com``, ``co.jp``) is refused: that would revoke other people's names.
    """
    name = text.strip().rstrip(".").lower().removeprefix("*.")
    try:
        name = idna.encode(name, uts46=True).decode("ascii") if not name.isascii() else name
    except idna.IDNAError as exc:
        raise OperatorRevocationError(f"{text!r} is not a domain name: {exc}") from None
    if not name or "." not in name or any(not label for label in name.split(".")):
        raise OperatorRevocationError(f"{text!r} is not a registered domain name")
    psl = icann_public_suffix_list()
    if psl.publicsuffix(name, accept_unknown=False) == name:
        raise OperatorRevocationError(f"{name} is a public suffix, not a registered domain")
    return name


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))


def certificate_policies(cert: x509.Certificate) -> frozenset[str]:
    """The policy OIDs a certificate asserts (dotted strings)."""
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except (x509.ExtensionNotFound, ValueError):
        return frozenset()
    return frozenset(p.policy_identifier.dotted_string for p in policies)


def _spki(key: object) -> bytes:
    assert hasattr(key, "public_bytes")
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


class RevocationAuthority:
    def __init__(self, certificates: CertificateRepository, clock: Clock) -> None:
        self._certificates = certificates
        self._clock = clock

    # ------------------------------------------------------------------ ACME revokeCert
    async def revoke(
        self, der: bytes, reason: int | None, *, account: Account | None, jwk_key: PublicKey | None
    ) -> CertificateRecord:
        if reason is not None and reason not in SUBSCRIBER_REASONS:
            raise AcmeError(
                problems.bad_revocation_reason(
                    f"reason {reason} is not one a subscriber may request; use 0, 1, 3, 4 or 5"
                )
            )
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise AcmeError(
                problems.malformed("certificate is not a DER X.509 certificate")
            ) from None
        record = await self._certificates.get_by_serial(serial_hex(cert.serial_number))
        if record is None or record.der != der:
            raise AcmeError(problems.not_found("this certificate was not issued by this CA"))
        await self._authorize(cert, record, account, jwk_key)
        code = reason or UNSPECIFIED
        actor = f"account:{account.id}" if account else "certificate-key"
        block = self._key_block(cert, record, code, actor, proof=jwk_key is not None)
        outcome = await self._certificates.revoke(
            record.serial, reason=code, now=self._clock.now(), actor=actor, block=block
        )
        if block is not None:
            log.info(
                "key.blocked",
                serial=record.serial,
                actor=actor,
                reason=block.reason,
                sweep=block.compromise,
            )
        if outcome is RevocationOutcome.UNCHANGED:
            raise AcmeError(problems.already_revoked("the certificate is already revoked"))
        log.info(
            "certificate.revoked"
            if outcome is RevocationOutcome.REVOKED
            else "certificate.revocation_updated",
            serial=record.serial,
            reason=code,
            previous_reason=record.revocation_reason,
            actor=actor,
            account_id=record.account_id,
            order_id=record.order_id,
            key_blocked=block is not None,
        )
        updated = await self._certificates.get(record.id)
        assert updated is not None
        return updated

    @staticmethod
    def _key_block(
        cert: x509.Certificate, record: CertificateRecord, reason: int, actor: str, *, proof: bool
    ) -> KeyBlock | None:
        if proof:
            why = (
                "keyCompromise" if reason == KEY_COMPROMISE else "revocation"
            ) + f" signed by the certificate key (proof of possession), serial {record.serial}"
        elif reason == KEY_COMPROMISE:
            why = (
                f"keyCompromise stated by {actor} without proof of possession, "
                f"serial {record.serial}"
            )
        else:
            return None
        return KeyBlock(
            spki_sha256(cert.public_key()), why, actor, compromise=reason == KEY_COMPROMISE
        )

    async def _authorize(
        self,
        cert: x509.Certificate,
        record: CertificateRecord,
        account: Account | None,
        jwk_key: PublicKey | None,
    ) -> None:
        if jwk_key is not None:
            if _spki(jwk_key) != _spki(cert.public_key()):
                raise AcmeError(problems.unauthorized("the JWS key is not the certificate's key"))
            return
        assert account is not None
        if account.id == record.account_id:
            return
        names = list(certificate_names(cert))
        if names and await self._certificates.account_holds_valid_authzs(
            account.id, names, self._clock.now()
        ):
            return
        raise AcmeError(
            problems.unauthorized(
                "the account neither ordered this certificate nor holds authorizations for all "
                "its names"
            )
        )

    # ------------------------------------------------------------------ operators
    async def revoke_serial(self, serial: str, reason: int, *, actor: str) -> OperatorRevocation:
        """Revoke one certificate by serial (any hex spelling) for an operator."""
        if reason not in OPERATOR_REASONS:
            raise OperatorRevocationError(f"reason {reason} may not be used (BR 7.2.2)")
        record = await self._certificates.find_serial(normalize_serial(serial))
        if record is None:
            raise OperatorRevocationError(f"no certificate with serial {serial} was issued here")
        return await self._operator_revoke(record, reason, actor)

    async def revoke_domain(
        self, domain: str, reason: int, *, actor: str, dry_run: bool = False
    ) -> list[OperatorRevocation]:
        """Revoke every unexpired, unrevoked certificate with ``domain`` or a name under it."""
        if reason not in OPERATOR_REASONS:
            raise OperatorRevocationError(f"reason {reason} may not be used (BR 7.2.2)")
        name = normalize_domain(domain)
        found = await self.certificates_under(name)
        if dry_run:
            return [
                OperatorRevocation(
                    r.serial, names, r.account_id, r.not_after, reason, False, None, False
                )
                for r, names in found
            ]
        log.info(
            "revocation.domain_started",
            domain=name,
            reason=reason,
            actor=actor,
            certificates=len(found),
        )
        return [await self._operator_revoke(r, reason, actor) for r, _ in found]

    async def certificates_under(
        self, domain: str
    ) -> Sequence[tuple[CertificateRecord, tuple[str, ...]]]:
        """Unexpired, unrevoked certificates naming ``domain`` (normalized) or names under it,
        confirmed against each certificate's SAN."""
        out = []
        for record in await self._certificates.unrevoked_candidates_for_domain(
            domain, self._clock.now()
        ):
            names = certificate_names(x509.load_der_x509_certificate(record.der))
            if any(_under(n, domain) for n in names):  # "*.example.com" is under example.com
                out.append((record, names))
        return out

    async def revoke_organization(
        self, account_ids: Sequence[int], reason: int, *, actor: str, dry_run: bool = False
    ) -> list[OperatorRevocation]:
        """Revoke every unexpired, unrevoked OV certificate (and precertificate) ordered by
        the accounts of a revoked organization: those asserting the CA/B OV policy
        (:data:`acme_ca.br.OV_POLICY_OID`), i.e. carrying its vetted identity.  Its DV
        certificates name no organization and are left alone.  BR 4.9.1.1 (a material change
        in, or inaccuracy of, the information in the certificate) with BR 7.2.2 make that
        privilegeWithdrawn.
        """
        if reason not in OPERATOR_REASONS:
            raise OperatorRevocationError(f"reason {reason} may not be used (BR 7.2.2)")
        found = []
        for record in await self._certificates.unrevoked_for_accounts(
            list(account_ids), self._clock.now()
        ):
            cert = x509.load_der_x509_certificate(record.der)
            if OV_POLICY_OID in certificate_policies(cert):
                found.append((record, certificate_names(cert)))
        if dry_run:
            return [
                OperatorRevocation(
                    r.serial,
                    names,
                    r.account_id,
                    r.not_after,
                    reason,
                    False,
                    None,
                    False,
                    precertificate=r.precertificate,
                )
                for r, names in found
            ]
        log.info(
            "revocation.organization_started",
            accounts=list(account_ids),
            reason=reason,
            actor=actor,
            certificates=len(found),
        )
        return [await self._operator_revoke(r, reason, actor) for r, _ in found]

    async def _operator_revoke(
        self, record: CertificateRecord, reason: int, actor: str
    ) -> OperatorRevocation:
        cert = x509.load_der_x509_certificate(record.der)
        block = None
        if reason == KEY_COMPROMISE:
            block = KeyBlock(
                spki_sha256(cert.public_key()),
                f"keyCompromise decided by {actor}, serial {record.serial}",
                actor,
                compromise=True,
            )
        now = self._clock.now()
        outcome = await self._certificates.revoke(
            record.serial, reason=reason, now=now, actor=actor, block=block
        )
        log.info(
            {
                RevocationOutcome.REVOKED: "certificate.revoked",
                RevocationOutcome.UPDATED: "certificate.revocation_updated",
                RevocationOutcome.UNCHANGED: "certificate.already_revoked",
            }[outcome],
            serial=record.serial,
            reason=reason,
            actor=actor,
            account_id=record.account_id,
            order_id=record.order_id,
            key_blocked=block is not None,
            precertificate=record.precertificate,
        )
        current = await self._certificates.find_serial(record.serial)
        assert current is not None
        return OperatorRevocation(
            serial=record.serial,
            names=certificate_names(cert),
            account_id=record.account_id,
            not_after=record.not_after,
            reason=current.revocation_reason if current.revocation_reason is not None else reason,
            revoked=outcome is RevocationOutcome.REVOKED,
            revoked_at=current.revoked_at,
            key_blocked=block is not None,
            updated=outcome is RevocationOutcome.UPDATED,
            precertificate=record.precertificate,
        )

    async def block_key(
        self,
        spki_sha256_digest: bytes,
        *,
        actor: str,
        reason: str,
        compromised_at: datetime | None = None,
    ) -> KeyBlockResult:
        """An operator blocks a compromised key (``acme-ca admin block-key``): refused for
        CSRs and account keys from now on, and every unexpired certificate with it revoked by
        the queued sweep (BR 4.9.1.1 #3), dated ``compromised_at`` if given (BR 7.2.2)."""
        if len(spki_sha256_digest) != 32:
            raise OperatorRevocationError("an SPKI hash is 32 bytes of SHA-256")
        now = self._clock.now()
        if compromised_at is not None and compromised_at > now:
            raise OperatorRevocationError("the compromise date is in the future")
        block = KeyBlock(
            spki_sha256_digest,
            f"keyCompromise reported to {actor}: {reason}"
            if reason
            else f"keyCompromise decided by {actor}",
            actor,
            compromise=True,
            compromised_at=compromised_at,
        )
        sweep_id = await self._certificates.block_key(block, now)
        assert sweep_id is not None
        affected = await self._certificates.unexpired_with_key(spki_sha256_digest, now)
        log.info(
            "key.blocked",
            spki_sha256=spki_sha256_digest.hex(),
            actor=actor,
            sweep_id=sweep_id,
            certificates=affected,
        )
        return KeyBlockResult(spki_sha256_digest, sweep_id, affected)


@dataclass(frozen=True)
class KeyBlockResult:
    spki_sha256: bytes
    sweep_id: int
    #: Unexpired serials with the key when it was blocked (the sweep revokes them).
    certificates: int


def spki_sha256_from_pem(data: bytes) -> bytes:
    """The blocked-key id of the key in a PEM file: a public key, certificate, CSR or private
    key (an operator may only have the leaked private key)."""
    text = data.decode("ascii", errors="replace")
    try:
        if "CERTIFICATE REQUEST" in text:
            return spki_sha256(x509.load_pem_x509_csr(data).public_key())
        if "BEGIN CERTIFICATE" in text:
            return spki_sha256(x509.load_pem_x509_certificate(data).public_key())
        if "PRIVATE KEY" in text:
            return spki_sha256(serialization.load_pem_private_key(data, password=None).public_key())
        return spki_sha256(serialization.load_pem_public_key(data))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise OperatorRevocationError(f"no key found in the PEM: {exc}") from None


def parse_spki_sha256(text: str) -> bytes:
    """An operator's SHA-256 SPKI hash: 64 hex digits, colons and spaces ignored."""
    cleaned = text.strip().lower().replace(":", "").replace(" ", "")
    try:
        digest = bytes.fromhex(cleaned)
    except ValueError:
        raise OperatorRevocationError(f"{text!r} is not hexadecimal") from None
    if len(digest) != 32:
        raise OperatorRevocationError("an SPKI hash is 64 hex digits (SHA-256)")
    return digest
