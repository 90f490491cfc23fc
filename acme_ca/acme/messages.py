"""ACME request payloads (RFC 8555 §7), one frozen josepy object per message.

As in certbot's ``acme/messages.py``, each message is a ``josepy.JSONObjectWithFields`` with
one ``jose.field`` per JSON member and the member's decoder on the field.  Unlike josepy's own
``from_json``, :meth:`Message.from_json` answers every bad payload with an RFC 8555 problem
that names the member (``malformed`` unless the RFC fixes another type, e.g. ``badCSR`` for a
CSR that is not base64url), so the rooms behind the front end only ever see typed values.

Conventions for every message: unknown members are ignored (§7.3: never reflected); an
optional member sent as JSON ``null`` counts as absent; a required member may not be ``null``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Self

import josepy.json_util as jose
from josepy.errors import DeserializationError

from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_decode
from acme_ca.acme.jwk import Jwk, JwkError, parse_jwk
from acme_ca.acme.problems import AcmeError, Identifier, Problem
from acme_ca.acme.status import AccountStatus, AuthorizationStatus

ProblemFactory = Callable[[str], Problem]


class MemberError(DeserializationError):
    """A member's value is wrong; ``problem`` is the RFC 8555 type to answer with."""

    def __init__(self, reason: str, problem: ProblemFactory = problems.malformed) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problem = problem


class Message(jose.JSONObjectWithFields):
    """A request payload; :meth:`from_json` is the only way one is built from the wire."""

    #: The resource the payload is sent to, as the directory names it; used in details.
    resource: ClassVar[str] = "request"

    @classmethod
    def from_json(cls, jobj: Any) -> Self:
        """Decode ``jobj`` or raise :class:`AcmeError` naming the first bad member."""
        if not isinstance(jobj, Mapping):
            raise AcmeError(problems.malformed(f"{cls.resource}: payload must be a JSON object"))
        values: dict[str, object] = {}
        for slot, fld in cls._fields.items():
            name = fld.json_name
            value = jobj.get(name)
            if value is None:
                if not fld.omitempty:
                    raise AcmeError(
                        problems.malformed(f"{cls.resource}: member {name!r} is required")
                    )
                values[slot] = fld.default
                continue
            try:
                values[slot] = fld.decode(value)
            except MemberError as exc:
                raise AcmeError(
                    exc.problem(f"{cls.resource}: member {name!r} {exc.reason}")
                ) from None
        return cls(**values)


# --------------------------------------------------------------------------- decoders
# Each takes the JSON value (never None: Message.from_json handles absence) and returns the
# typed value or raises MemberError with the reason, worded to follow the member's name.


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise MemberError("must be a string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise MemberError("must be true or false")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MemberError("must be an array of strings")
    return tuple(value)


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str):
        raise MemberError("must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MemberError("is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise MemberError("must carry a time zone offset (RFC 3339)")
    return parsed


def _base64url(problem: ProblemFactory) -> Callable[[Any], bytes]:
    """Unpadded base64url (§6.1); a value that is no string at all is always ``malformed``."""

    def decode(value: Any) -> bytes:
        if not isinstance(value, str):
            raise MemberError("must be a base64url string")
        try:
            return b64url_decode(value)
        except ValueError:
            raise MemberError("is not unpadded base64url", problem) from None

    return decode


def _jwk(value: Any) -> Jwk:
    try:
        return parse_jwk(value)
    except JwkError as exc:
        raise MemberError(f"is not a valid JWK: {exc}") from None


def _identifiers(value: Any) -> tuple[Identifier, ...]:
    if not isinstance(value, list) or not all(
        isinstance(i, dict) and isinstance(i.get("type"), str) and isinstance(i.get("value"), str)
        for i in value
    ):
        raise MemberError("must be an array of {type, value} objects with string members")
    return tuple(Identifier(i["type"], i["value"]) for i in value)


def _revocation_reason(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MemberError("must be an integer", problems.bad_revocation_reason)
    return value


class FlattenedJws(jose.JSONObjectWithFields):
    """A flattened JWS carried inside a payload (the EAB of newAccount, §7.3.4), unverified."""

    protected: str = jose.field("protected")
    payload: str = jose.field("payload")
    signature: str = jose.field("signature")


def _flattened_jws(value: Any) -> FlattenedJws:
    members = ("protected", "payload", "signature")
    if (
        not isinstance(value, dict)
        or set(value) != set(members)
        or not all(isinstance(value[m], str) for m in members)
    ):
        raise MemberError("must be a flattened JWS with protected, payload and signature strings")
    return FlattenedJws(**value)


def _account_status_update(value: Any) -> AccountStatus | None:
    """§7.3.2: the server MUST ignore ``status`` except a deactivation (§7.3.6).

    Anything else, of any type, reads as absent: acme-python/certbot echo ``"valid"``.
    """
    return AccountStatus.DEACTIVATED if value == AccountStatus.DEACTIVATED else None


def _authz_deactivation(value: Any) -> AuthorizationStatus:
    if value != AuthorizationStatus.DEACTIVATED:
        raise MemberError('must be "deactivated", the only update to an authorization (§7.5.2)')
    return AuthorizationStatus.DEACTIVATED


# --------------------------------------------------------------------------- messages


class NewAccount(Message):
    """newAccount (§7.3); the key is the JWS ``jwk``, not a member."""

    resource = "newAccount"

    contact: tuple[str, ...] | None = jose.field("contact", omitempty=True, decoder=_strings)
    terms_of_service_agreed: bool = jose.field(
        "termsOfServiceAgreed", omitempty=True, default=False, decoder=_boolean
    )
    only_return_existing: bool = jose.field(
        "onlyReturnExisting", omitempty=True, default=False, decoder=_boolean
    )
    external_account_binding: FlattenedJws | None = jose.field(
        "externalAccountBinding", omitempty=True, decoder=_flattened_jws
    )


class AccountUpdate(Message):
    """A POST to the account URL with a payload (§7.3.2, §7.3.6); other members are ignored.

    ``contact`` None leaves the contacts as they are; ``()`` removes them all.
    """

    resource = "account"

    contact: tuple[str, ...] | None = jose.field("contact", omitempty=True, decoder=_strings)
    status: AccountStatus | None = jose.field(
        "status", omitempty=True, decoder=_account_status_update
    )


class KeyChange(Message):
    """The payload of keyChange's inner JWS (§7.3.5); the new key is that JWS's ``jwk``."""

    resource = "keyChange"

    account: str = jose.field("account", decoder=_string)
    old_key: Jwk = jose.field("oldKey", decoder=_jwk)


class NewOrder(Message):
    """newOrder (§7.4), with ``replaces`` (RFC 9773 §5) and ``profile`` (ACME profiles draft)."""

    resource = "newOrder"

    identifiers: tuple[Identifier, ...] = jose.field("identifiers", decoder=_identifiers)
    not_before: datetime | None = jose.field("notBefore", omitempty=True, decoder=_rfc3339)
    not_after: datetime | None = jose.field("notAfter", omitempty=True, decoder=_rfc3339)
    profile: str | None = jose.field("profile", omitempty=True, decoder=_string)
    replaces: str | None = jose.field("replaces", omitempty=True, decoder=_string)


class Finalize(Message):
    """finalize (§7.4): the CSR as DER; a CSR that is not base64url is ``badCSR``."""

    resource = "finalize"

    csr: bytes = jose.field("csr", decoder=_base64url(problems.bad_csr))


class AuthzUpdate(Message):
    """A POST to an authorization with a payload: only deactivation exists (§7.5.2)."""

    resource = "authorization"

    status: AuthorizationStatus = jose.field("status", decoder=_authz_deactivation)


class ChallengeResponse(Message):
    """A POST to a challenge with a payload: ``{}`` (§7.5.1, erratum 5729); members ignored."""

    resource = "challenge"


class RevokeCert(Message):
    """revokeCert (§7.6): the certificate as DER and an optional CRL reason code."""

    resource = "revokeCert"

    certificate: bytes = jose.field("certificate", decoder=_base64url(problems.malformed))
    reason: int | None = jose.field("reason", omitempty=True, decoder=_revocation_reason)
