"""Certificate profiles (draft-ietf-acme-profiles): named tables of configuration, not code.

A profile chooses everything that differs between the certificates this CA issues: the
issuers by subscriber key type, the validity, the subject fields, key usage and EKU, SKI, the
CA/B Forum validation level (which fixes the reserved policy OID and the pkilint validation:
``DV-PRE-CERTIFICATE``/``DV-FINAL-CERTIFICATE`` or the ``OV-`` pair), the CT policy, whether
the OCSP and CRL URLs are included, the challenge types offered, the authorization reuse cap,
the ARI window, and which accounts may use it.

The configuration's ``[profiles.<name>]`` tables are read here (:func:`parse_profile_specs`):
each names only what it changes, over the shipped profile of the same name
(:data:`SHIPPED`) or, for a new name, over the defaults of :class:`ProfileSpec`.  Keys a spec
leaves unset inherit the top-level configuration keys they are named after
(``rsa_issuer``, ``ecdsa_issuer``, ``validity_days``, ``include_subject_key_identifier``,
``policy_oid``, ``authz_reuse_days``), so the ``dv`` profile issues
exactly what the CA issued before profiles existed.  :func:`resolve_profiles` turns the specs
into :class:`Profile` objects with every value concrete.

This module is pure (no room, no I/O) so that :mod:`acme_ca.config` can read the tables at
load.  What needs the date or the rooms' tables (BR 6.3.2 validity and BR 4.2.1 reuse for the
day the CA starts, known issuers, challenge types and CT policies) is checked when ``serve``
and ``worker`` start (:mod:`acme_ca.ra.profiles`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from fractions import Fraction
from typing import Any, Final, Literal, cast, get_args

from acme_ca.br import DV_POLICY_OID, OV_POLICY_OID

#: The CA/B Forum validation level of a profile (BR 7.1.2.7.1): it fixes the reserved policy
#: OID and the pkilint validation (``<level>-PRE-CERTIFICATE`` / ``<level>-FINAL-CERTIFICATE``).
ValidationLevel = Literal["DV", "OV"]
VALIDATION_LEVELS: Final[tuple[ValidationLevel, ...]] = get_args(ValidationLevel)
#: CA/B Forum reserved policy OIDs (BR 7.1.2.7.9), by validation level.
RESERVED_POLICY_OIDS: Final[Mapping[ValidationLevel, str]] = {
    "DV": DV_POLICY_OID,
    "OV": OV_POLICY_OID,
}

#: Who may order under a profile: every account, or only accounts whose EAB key binds them
#: to a vetted organization (CP 3.2.2.1(2); the OV subject comes from that record).
AccountScope = Literal["all", "organization"]
ACCOUNT_SCOPES: Final[tuple[AccountScope, ...]] = get_args(AccountScope)

#: Subject attributes a profile may put in the subject: the first dNSName as commonName, and
#: C/ST/L/O from the vetted organization record (never from the CSR).
SubjectField = Literal["cn", "organization"]
SUBJECT_FIELDS: Final[tuple[SubjectField, ...]] = get_args(SubjectField)

#: keyUsage bits a subscriber certificate may assert (BR 7.1.2.7.11); keyEncipherment only
#: ever for RSA subscriber keys.
KeyUsageBit = Literal["digitalSignature", "keyEncipherment"]
KEY_USAGE_BITS: Final[tuple[KeyUsageBit, ...]] = get_args(KeyUsageBit)

#: extKeyUsage: serverAuth only (BR 7.1.2.7.10; Chrome Root Program 1.8 requires
#: serverAuth-only certificates from 2027-03-15, and the linter refuses anything else).
ExtendedKeyUsage = Literal["serverAuth"]
EXTENDED_KEY_USAGES: Final[tuple[ExtendedKeyUsage, ...]] = get_args(ExtendedKeyUsage)

#: BR "Short-lived Subscriber Certificate" (BR 1.6.1, from 2026-03-15): at most 7 days. Such a
#: certificate may omit both the CRL distribution point and the OCSP URL (BR 7.1.2.11.2).
SHORT_LIVED: Final = timedelta(days=7)

#: The default ARI window (RFC 9773 §4.2), as fractions of the validity period: the last third,
#: ending a tenth of the lifetime before notAfter (:func:`acme_ca.acme.ari.suggested_window`).
DEFAULT_RENEWAL_WINDOW: Final = (Fraction(2, 3), Fraction(9, 10))

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class ProfileSpecError(ValueError):
    """A ``[profiles.<name>]`` table that cannot be used; the message names the key."""


def _spec(default: object, doc: str) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class ProfileSpec:
    """One ``[profiles.<name>]`` table as configured.  ``None`` inherits the top-level key of
    the same meaning; field docs are the operator documentation (``acme-ca config-doc``)."""

    name: str = _spec("", "The profile's name, as clients send it in `profile`.")
    description: str = _spec("", "Human description, published in the directory's `meta.profiles`.")
    enabled: bool = _spec(
        True, "Offer the profile. `false` withdraws it: new orders and finalize refuse it."
    )
    validation: str = _spec(
        "DV",
        "CA/B Forum validation level, `DV` or `OV`: the reserved policy OID "
        "(2.23.140.1.2.1 / 2.23.140.1.2.2) and the pkilint validation, pre- and "
        "final-certificate.",
    )
    rsa_issuer: str | None = _spec(None, "Issuer for RSA subscriber keys. Unset: `rsa_issuer`.")
    ecdsa_issuer: str | None = _spec(
        None, "Issuer for ECDSA subscriber keys. Unset: `ecdsa_issuer`."
    )
    validity_days: int | None = _spec(
        None,
        "Validity in days (inclusive). Unset and no `validity_hours`: `validity_days`, "
        "else the BR 6.3.2 SHOULD for the issuance date.",
    )
    validity_hours: int | None = _spec(
        None, "Validity in hours (inclusive), instead of `validity_days`."
    )
    subject: list[str] = _spec(  # noqa: RUF009 -- dataclasses.field() with a doc
        ["cn"],
        "Subject attributes: `cn` (the first name, when it fits 64 characters) and "
        "`organization` (C, ST, L, O of the account's vetted organization). `[]`: an "
        "empty subject and a critical SAN.",
    )
    key_usage: list[str] = _spec(  # noqa: RUF009 -- dataclasses.field() with a doc
        ["digitalSignature", "keyEncipherment"],
        "keyUsage bits: `digitalSignature` (always), `keyEncipherment` (RSA keys only).",
    )
    extended_key_usage: list[str] = _spec(  # noqa: RUF009 -- dataclasses.field() with a doc
        ["serverAuth"], "extKeyUsage: `serverAuth` only (BR-PROF-9)."
    )
    subject_key_identifier: bool | None = _spec(
        None, "Include SKI. Unset: `include_subject_key_identifier`."
    )
    policy_oid: str | None = _spec(
        None, "The CA's own policy OID after the reserved one. Unset: `policy_oid`."
    )
    ct_policy: str = _spec(
        "chrome-apple",
        "Embedded-SCT policy: `chrome-apple` (both browser policies, one RFC 6962 log) or "
        "`chrome` (Chrome's alone).",
    )
    ocsp_url: bool = _spec(True, "Include the issuer's OCSP URL in AIA.")
    crl_url: bool = _spec(
        True,
        "Include the CRL distribution point; only short-lived profiles (≤ 7 days) without "
        "an OCSP URL may leave it out (BR 7.1.2.11.2).",
    )
    challenges: list[str] | None = _spec(  # noqa: RUF009 -- dataclasses.field() with a doc
        None, "Challenge types offered, among the enabled ones. Unset: every one."
    )
    authz_reuse_days: int | None = _spec(
        None,
        "Reuse of valid authorizations, in days, capped by BR 4.2.1 for the date. "
        "Unset: `authz_reuse_days`.",
    )
    accounts: str = _spec(
        "all",
        "Who may order it: `all`, or `organization` (accounts bound by EAB to a vetted "
        "organization).",
    )
    renewal_window: list[int] | None = _spec(  # noqa: RUF009 -- dataclasses.field() with a doc
        None,
        "ARI window as [start, end] percent of the validity period. Unset: the last "
        "third, ending a tenth of the lifetime before notAfter.",
    )

    def check(self) -> ProfileSpec:
        """Every value that needs neither the date nor another room; names the key."""
        where = f"profiles.{self.name}"
        if not _NAME.fullmatch(self.name):
            raise ProfileSpecError(
                f"profile name {self.name!r}: lower-case letters, digits, '-' and '_', "
                "at most 32 characters"
            )
        if not self.description.strip():
            raise ProfileSpecError(f"{where}.description must say what the profile is")
        _one_of(where, "validation", self.validation, VALIDATION_LEVELS)
        _one_of(where, "accounts", self.accounts, ACCOUNT_SCOPES)
        if self.validity_days is not None and self.validity_hours is not None:
            raise ProfileSpecError(f"{where}: set validity_days or validity_hours, not both")
        for key in ("validity_days", "validity_hours", "authz_reuse_days"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ProfileSpecError(f"{where}.{key} must be positive")
        _subset(where, "subject", self.subject, SUBJECT_FIELDS)
        _subset(where, "key_usage", self.key_usage, KEY_USAGE_BITS)
        if "digitalSignature" not in self.key_usage:
            raise ProfileSpecError(
                f"{where}.key_usage must include digitalSignature (BR 7.1.2.7.11: ECDSA keys "
                "MUST, RSA keys SHOULD)"
            )
        _subset(where, "extended_key_usage", self.extended_key_usage, EXTENDED_KEY_USAGES)
        if not self.extended_key_usage:
            raise ProfileSpecError(f"{where}.extended_key_usage must be ['serverAuth']")
        if self.validation == "OV" and "organization" not in self.subject:
            raise ProfileSpecError(
                f"{where}: an OV profile's subject must include `organization` (BR 7.1.2.7.4)"
            )
        if "organization" in self.subject and self.accounts != "organization":
            raise ProfileSpecError(
                f"{where}: a subject with `organization` needs accounts = 'organization' "
                "(the subject comes only from the account's vetted organization)"
            )
        if self.validation == "DV" and "organization" in self.subject:
            raise ProfileSpecError(f"{where}: a DV subject holds no organization (BR 7.1.2.7.2)")
        if self.challenges is not None and not self.challenges:
            raise ProfileSpecError(f"{where}.challenges must offer at least one challenge type")
        if self.renewal_window is not None:
            window = self.renewal_window
            if len(window) != 2 or not 0 < window[0] < window[1] < 100:
                raise ProfileSpecError(
                    f"{where}.renewal_window must be [start, end] percent, 0 < start < end < 100"
                )
        return self


def _one_of(where: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ProfileSpecError(f"{where}.{key} must be one of {', '.join(allowed)}: {value!r}")


def _subset(where: str, key: str, values: list[str], allowed: tuple[str, ...]) -> None:
    for value in values:
        _one_of(where, key, value, allowed)
    if len(set(values)) != len(values):
        raise ProfileSpecError(f"{where}.{key} lists a value twice")


#: The profiles this CA ships.  ``dv`` is the CP's DV profile exactly as issued before
#: profiles (and the default ``default_profile``); ``tlsserver`` and ``shortlived`` follow
#: Let's Encrypt's profiles of the same names; ``ov`` is the CP's OV profile (CP 7.1,
#: "JPRS Organization Validation Authority - G3": C, ST, L, O in the subject).
SHIPPED: Final[Mapping[str, ProfileSpec]] = {
    spec.name: spec
    for spec in (
        ProfileSpec(
            name="dv",
            description=(
                "Domain Validation (CP 7.1 DV profile): CN and SAN from the order, "
                "2.23.140.1.2.1, validity per BR 6.3.2"
            ),
        ),
        ProfileSpec(
            name="tlsserver",
            description=(
                "TLS server, as Let's Encrypt's tlsserver: no subject CN, no SKI, serverAuth "
                "only, digitalSignature only, 45 days"
            ),
            subject=[],
            key_usage=["digitalSignature"],
            subject_key_identifier=False,
            validity_days=45,
        ),
        ProfileSpec(
            name="shortlived",
            description=(
                "Short-lived (BR short-lived certificate): 160 hours, CRL distribution point "
                "kept, no OCSP URL"
            ),
            validity_hours=160,
            ocsp_url=False,
            crl_url=True,
            renewal_window=[50, 75],
        ),
        ProfileSpec(
            name="ov",
            description=(
                "Organization Validation (CP 7.1 OV profile): C, ST, L, O from the vetted "
                "organization bound to the account by EAB, 2.23.140.1.2.2"
            ),
            validation="OV",
            rsa_issuer="ov-rsa",
            ecdsa_issuer="ov-ecc",
            subject=["organization", "cn"],
            accounts="organization",
        ),
    )
}
DEFAULT_PROFILE: Final = "dv"

#: The keys a ``[profiles.<name>]`` table may carry (every field but ``name``).
SPEC_KEYS: Final = tuple(f.name for f in fields(ProfileSpec) if f.name != "name")


def _typed(where: str, key: str, raw: object, default: object) -> object:
    """A TOML value checked against the type of the field's default (lists of str/int)."""
    hint = {f.name: f.type for f in fields(ProfileSpec)}[key]
    kinds: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "bool": (bool,),
        "int": (int,),
        "list[str]": (list,),
        "list[int]": (list,),
    }
    base = str(hint).replace(" | None", "")
    if isinstance(raw, bool) and base == "int":
        raise ProfileSpecError(f"{where}.{key}: expected an integer, got {raw!r}")
    if not isinstance(raw, kinds[base]):
        raise ProfileSpecError(f"{where}.{key}: expected {base}, got {raw!r}")
    if base in ("list[str]", "list[int]"):
        item = str if base == "list[str]" else int
        items = cast("list[object]", raw)
        if not all(isinstance(v, item) and not isinstance(v, bool) for v in items):
            raise ProfileSpecError(f"{where}.{key}: expected {base}, got {raw!r}")
        return list(items)
    return raw


def parse_profile_specs(tables: object) -> tuple[ProfileSpec, ...]:
    """The ``profiles`` table of the configuration file: ``{name: {key: value}}``, each over the
    shipped profile of that name or the :class:`ProfileSpec` defaults.  Unknown keys are
    errors.  Returns the configured specs only (shipped profiles not named stay as shipped)."""
    if not isinstance(tables, Mapping):
        raise ProfileSpecError("profiles must be a table of [profiles.<name>] tables")
    specs = []
    for name, table in cast("Mapping[object, object]", tables).items():
        if not isinstance(name, str) or not isinstance(table, Mapping):
            raise ProfileSpecError(f"profiles.{name}: expected a [profiles.{name}] table")
        where = f"profiles.{name}"
        base = SHIPPED.get(name, ProfileSpec(name=name))
        changes: dict[str, object] = {}
        for key, raw in cast("Mapping[object, object]", table).items():
            if key not in SPEC_KEYS:
                raise ProfileSpecError(f"{where}: unknown key {key!r}")
            assert isinstance(key, str)
            changes[key] = _typed(where, key, raw, getattr(base, key))
        if "validity_days" in changes and "validity_hours" not in changes:
            changes["validity_hours"] = None  # the table's own choice replaces the shipped one
        if "validity_hours" in changes and "validity_days" not in changes:
            changes["validity_days"] = None
        specs.append(replace(base, **changes))  # type: ignore[arg-type]
    return tuple(specs)


@dataclass(frozen=True)
class Profile:
    """A profile with every value concrete: what the RA, the CA and the front end use."""

    name: str
    description: str
    enabled: bool
    validation: ValidationLevel
    rsa_issuer: str
    ecdsa_issuer: str
    #: Inclusive validity; None: BR 6.3.2's SHOULD for the issuance date.  Always capped at
    #: the BR maximum for the issuance date when the certificate is built.
    validity: timedelta | None
    subject_common_name: bool
    subject_organization: bool
    #: keyEncipherment for RSA subscriber keys (never for ECDSA).
    rsa_key_encipherment: bool
    subject_key_identifier: bool
    policy_oid: str
    ct_policy: str
    ocsp_url: bool
    crl_url: bool
    #: The challenge types offered under it, among those enabled; None: every enabled one.
    challenges: tuple[str, ...] | None
    #: Reuse of valid authorizations, before the BR 4.2.1 cap for the date.
    authz_reuse: timedelta
    #: The profile's own ``authz_reuse_days``, when configured: also enforced when the worker
    #: signs (None: only the BR 4.2.1 limit of the signing date applies there).
    reuse_cap: timedelta | None
    accounts: AccountScope
    renewal_window: tuple[Fraction, Fraction]

    @property
    def reserved_policy_oid(self) -> str:
        """The CA/B Forum OID of the profile's validation level (BR 7.1.2.7.9), listed first."""
        return RESERVED_POLICY_OIDS[self.validation]

    @property
    def lint_pre(self) -> str:
        """The pkilint validation of its precertificates (``DV-PRE-CERTIFICATE``...)."""
        return f"{self.validation}-PRE-CERTIFICATE"

    @property
    def lint_final(self) -> str:
        """The pkilint validation of its certificates (``DV-FINAL-CERTIFICATE``...)."""
        return f"{self.validation}-FINAL-CERTIFICATE"

    def issuer_names(self) -> tuple[str, str]:
        """The RSA and the ECDSA issuer."""
        return (self.rsa_issuer, self.ecdsa_issuer)


@dataclass(frozen=True)
class Inherited:
    """The top-level configuration keys an unset profile key falls back to."""

    rsa_issuer: str
    ecdsa_issuer: str
    validity_days: int | None
    include_subject_key_identifier: bool
    policy_oid: str
    authz_reuse_days: int


def resolve(spec: ProfileSpec, inherited: Inherited) -> Profile:
    """The concrete profile of a checked spec."""
    validity: timedelta | None
    if spec.validity_hours is not None:
        validity = timedelta(hours=spec.validity_hours)
    elif spec.validity_days is not None:
        validity = timedelta(days=spec.validity_days)
    elif inherited.validity_days is not None:
        validity = timedelta(days=inherited.validity_days)
    else:
        validity = None
    window = DEFAULT_RENEWAL_WINDOW
    if spec.renewal_window is not None:
        window = (Fraction(spec.renewal_window[0], 100), Fraction(spec.renewal_window[1], 100))
    return Profile(
        name=spec.name,
        description=spec.description,
        enabled=spec.enabled,
        validation=cast(ValidationLevel, spec.validation),
        rsa_issuer=spec.rsa_issuer or inherited.rsa_issuer,
        ecdsa_issuer=spec.ecdsa_issuer or inherited.ecdsa_issuer,
        validity=validity,
        subject_common_name="cn" in spec.subject,
        subject_organization="organization" in spec.subject,
        rsa_key_encipherment="keyEncipherment" in spec.key_usage,
        subject_key_identifier=(
            inherited.include_subject_key_identifier
            if spec.subject_key_identifier is None
            else spec.subject_key_identifier
        ),
        policy_oid=spec.policy_oid or inherited.policy_oid,
        ct_policy=spec.ct_policy,
        ocsp_url=spec.ocsp_url,
        crl_url=spec.crl_url,
        challenges=None if spec.challenges is None else tuple(spec.challenges),
        authz_reuse=timedelta(days=spec.authz_reuse_days or inherited.authz_reuse_days),
        reuse_cap=None if spec.authz_reuse_days is None else timedelta(days=spec.authz_reuse_days),
        accounts=cast(AccountScope, spec.accounts),
        renewal_window=window,
    )


def resolve_profiles(
    configured: Iterable[ProfileSpec], inherited: Inherited
) -> Mapping[str, Profile]:
    """Every profile (shipped, replaced by the configured spec of the same name, then the
    configured new ones), resolved; in shipped-then-configured order."""
    specs = dict(SHIPPED)
    for spec in configured:
        specs[spec.name] = spec
    return {name: resolve(spec.check(), inherited) for name, spec in specs.items()}
