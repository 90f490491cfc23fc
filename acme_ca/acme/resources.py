"""ACME resources as they go on the wire (RFC 8555 §7.1.2-§7.1.5), built at response time.

Each holds typed values and the ids of the resources it links to; ``to_json(urls)`` turns ids
into absolute URLs, because only the front end knows the base URL (as Pebble's
``orderForDisplay`` and Boulder's ``orderToOrderJSON`` do).  What a resource shows (its derived
status, which challenges) is decided by whoever builds it; these classes only render.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from acme_ca.acme.jsontypes import JsonObject, JsonValue
from acme_ca.acme.jwk import Jwk
from acme_ca.acme.messages import FlattenedJws
from acme_ca.acme.problems import Identifier, Problem
from acme_ca.acme.status import (
    AccountStatus,
    AuthorizationStatus,
    ChallengeStatus,
    OrderStatus,
)


class ResourceUrls(Protocol):
    """The absolute URLs a resource links to (``acme_ca.wfe.urls.Urls`` is one)."""

    def account_orders(self, account_id: int) -> str: ...
    def order(self, order_id: int) -> str: ...
    def finalize(self, order_id: int) -> str: ...
    def authz(self, authz_id: int) -> str: ...
    def challenge(self, challenge_id: int) -> str: ...
    def certificate(self, certificate_id: int) -> str: ...


def rfc3339(at: datetime) -> str:
    """RFC 3339 UTC with a Z suffix, to the second, as ACME clients expect."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Account:
    """An account object (§7.1.2); the binding is reflected only when just verified (§7.3.4).

    ``key`` is the account's public JWK, as Boulder (``core.Registration``) and Pebble send it:
    clients read it back after a key rollover to see which key the account holds.
    """

    id: int
    status: AccountStatus
    key: Jwk
    contact: tuple[str, ...]
    created_at: datetime
    terms_of_service_agreed: bool
    external_account_binding: FlattenedJws | None = None

    def to_json(self, urls: ResourceUrls) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
            "status": str(self.status),
            "key": dict(self.key.to_json()),
            "contact": list(self.contact),
            "orders": urls.account_orders(self.id),
            "createdAt": rfc3339(self.created_at),
        }
        if self.terms_of_service_agreed:
            body["termsOfServiceAgreed"] = True
        if self.external_account_binding is not None:
            body["externalAccountBinding"] = self.external_account_binding.to_json()
        return body


DNS_PERSIST_01 = "dns-persist-01"
"""The challenge type whose object carries no token but the CA's Issuer Domain Names and the
account URI (draft-ietf-acme-dns-persist §3.1; Pebble sends both since 2.10)."""


@dataclass(frozen=True)
class Challenge:
    """A challenge object (§7.1.5, §8); ``validation_record`` is the VA's records as stored.

    A dns-persist-01 challenge shows ``issuer-domain-names`` (one of which the TXT record must
    name) and ``accounturi`` (the value its ``accounturi=`` parameter must hold) instead of a
    token: its record is bound to the account, not to one challenge.
    """

    id: int
    type: str
    token: str
    status: ChallengeStatus
    validated: datetime | None = None
    error: Problem | None = None
    validation_record: tuple[JsonObject, ...] = ()
    issuer_domain_names: tuple[str, ...] = ()
    account_uri: str | None = None

    def to_json(self, urls: ResourceUrls) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {"type": self.type, "url": urls.challenge(self.id)}
        if self.type == DNS_PERSIST_01:
            body["issuer-domain-names"] = list(self.issuer_domain_names)
            if self.account_uri is not None:
                body["accounturi"] = self.account_uri
        else:
            body["token"] = self.token
        body["status"] = str(self.status)
        if self.validated is not None:
            body["validated"] = rfc3339(self.validated)
        if self.error is not None:
            body["error"] = self.error.to_json()
        if self.validation_record:
            body["validationRecord"] = [dict(r) for r in self.validation_record]
        return body


@dataclass(frozen=True)
class Authorization:
    """An authorization object (§7.1.4): the identifier without ``*.``; ``wildcard`` if it had."""

    identifier: Identifier
    status: AuthorizationStatus
    expires: datetime
    challenges: tuple[Challenge, ...]
    wildcard: bool = False

    def to_json(self, urls: ResourceUrls) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
            "identifier": self.identifier.to_json(),
            "status": str(self.status),
            "expires": rfc3339(self.expires),
            "challenges": [c.to_json(urls) for c in self.challenges],
        }
        if self.wildcard:
            body["wildcard"] = True
        return body


@dataclass(frozen=True)
class Order:
    """An order object (§7.1.3), with ``replaces`` reflected in every response (RFC 9773 §5)
    and the ``profile`` it is issued under (draft-ietf-acme-profiles §4)."""

    id: int
    status: OrderStatus
    expires: datetime
    identifiers: tuple[Identifier, ...]
    authz_ids: tuple[int, ...]
    error: Problem | None = None
    certificate_id: int | None = None
    replaces: str | None = None
    profile: str | None = None

    def to_json(self, urls: ResourceUrls) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
            "status": str(self.status),
            "expires": rfc3339(self.expires),
            "identifiers": [i.to_json() for i in self.identifiers],
            "authorizations": [urls.authz(i) for i in self.authz_ids],
            "finalize": urls.finalize(self.id),
        }
        if self.profile is not None:
            body["profile"] = self.profile
        if self.replaces is not None:
            body["replaces"] = self.replaces
        if self.error is not None:
            body["error"] = self.error.to_json()
        if self.certificate_id is not None:
            body["certificate"] = urls.certificate(self.certificate_id)
        return body
