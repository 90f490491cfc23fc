"""RFC 8555 §6.7 problem documents: one factory per error type, the HTTP status fixed here.

Every room raises :class:`AcmeError` carrying a :class:`Problem`; the web front end turns it
into an ``application/problem+json`` response in one place.  Nothing else chooses a status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACME_ERROR_NS = "urn:ietf:params:acme:error:"

#: Media type of every error response (RFC 7807).
PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Identifier:
    """An ACME identifier (RFC 8555 §9.7.7); only ``dns`` is issued by this CA."""

    type: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclass(frozen=True)
class Problem:
    """One problem document; ``subproblems`` carry per-identifier detail (§6.7.1)."""

    type: str
    detail: str
    status: int
    subproblems: tuple[Problem, ...] = ()
    identifier: Identifier | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_type(self) -> str:
        """The type without the ACME namespace, as used in logs."""
        return self.type.removeprefix(ACME_ERROR_NS)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "detail": self.detail, "status": self.status}
        if self.identifier is not None:
            body["identifier"] = self.identifier.to_json()
        if self.subproblems:
            body["subproblems"] = [p.to_json() for p in self.subproblems]
        body.update(self.extra)
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Problem:
        """The inverse of :meth:`to_json`, for problem documents stored as JSON."""
        kind, detail, status = body.get("type"), body.get("detail"), body.get("status")
        if not isinstance(kind, str) or not isinstance(detail, str) or not isinstance(status, int):
            raise TypeError("a problem document needs string type and detail, integer status")
        ident = body.get("identifier")
        return cls(
            type=kind,
            detail=detail,
            status=status,
            subproblems=tuple(cls.from_json(p) for p in body.get("subproblems", ())),
            identifier=None if ident is None else Identifier(ident["type"], ident["value"]),
            extra={k: v for k, v in body.items() if k not in _PROBLEM_MEMBERS},
        )


_PROBLEM_MEMBERS = frozenset({"type", "detail", "status", "identifier", "subproblems"})


class AcmeError(Exception):
    """Raised anywhere below the web layer to answer the client with ``problem``.

    ``headers`` lets a rule add protocol headers that belong to the error (``Location`` on a
    409 keyChange conflict, ``Retry-After`` on rateLimited, ``Link`` on userActionRequired).
    """

    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{problem.short_type}: {problem.detail}")
        self.problem = problem
        self.headers = headers or {}


def _acme(name: str, status: int) -> Any:
    def factory(detail: str, **kwargs: Any) -> Problem:
        return Problem(type=ACME_ERROR_NS + name, detail=detail, status=status, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"``{ACME_ERROR_NS}{name}`` with HTTP {status}."
    return factory


account_does_not_exist = _acme("accountDoesNotExist", 400)
already_replaced = _acme("alreadyReplaced", 409)
already_revoked = _acme("alreadyRevoked", 400)
bad_csr = _acme("badCSR", 400)
bad_nonce = _acme("badNonce", 400)
bad_public_key = _acme("badPublicKey", 400)
bad_revocation_reason = _acme("badRevocationReason", 400)
caa = _acme("caa", 403)
compound = _acme("compound", 403)
connection = _acme("connection", 400)
dns = _acme("dns", 400)
external_account_required = _acme("externalAccountRequired", 403)
incorrect_response = _acme("incorrectResponse", 403)
invalid_contact = _acme("invalidContact", 400)
invalid_profile = _acme("invalidProfile", 400)
malformed = _acme("malformed", 400)
order_not_ready = _acme("orderNotReady", 403)
rate_limited = _acme("rateLimited", 429)
rejected_identifier = _acme("rejectedIdentifier", 400)
server_internal = _acme("serverInternal", 500)
tls = _acme("tls", 400)
unauthorized = _acme("unauthorized", 403)
unsupported_contact = _acme("unsupportedContact", 400)
unsupported_identifier = _acme("unsupportedIdentifier", 400)
user_action_required = _acme("userActionRequired", 403)


def bad_signature_algorithm(detail: str, algorithms: list[str]) -> Problem:
    """``badSignatureAlgorithm`` listing the algorithms we accept (RFC 8555 §6.2)."""
    return Problem(
        type=ACME_ERROR_NS + "badSignatureAlgorithm",
        detail=detail,
        status=400,
        extra={"algorithms": list(algorithms)},
    )


def deactivated_account(detail: str = "account is deactivated") -> Problem:
    """A request from a deactivated account: ``unauthorized`` with 401 (RFC 8555 §7.3.6)."""
    return Problem(type=ACME_ERROR_NS + "unauthorized", detail=detail, status=401)


def not_found(detail: str = "no such resource") -> Problem:
    """An unknown URL or resource id: ``malformed`` with 404."""
    return Problem(type=ACME_ERROR_NS + "malformed", detail=detail, status=404)


def method_not_allowed(detail: str) -> Problem:
    """A method the resource does not answer (RFC 8555 §6.3): ``malformed`` with 405."""
    return Problem(type=ACME_ERROR_NS + "malformed", detail=detail, status=405)


def unsupported_media_type(detail: str) -> Problem:
    """A POST whose Content-Type is not ``application/jose+json`` (RFC 8555 §6.2): 415."""
    return Problem(type=ACME_ERROR_NS + "malformed", detail=detail, status=415)


def payload_too_large(detail: str) -> Problem:
    """A request body over the configured limit: ``malformed`` with 413."""
    return Problem(type=ACME_ERROR_NS + "malformed", detail=detail, status=413)


def conflict(detail: str) -> Problem:
    """A conflicting request, e.g. keyChange to a key another account holds (§7.3.5): 409."""
    return Problem(type=ACME_ERROR_NS + "malformed", detail=detail, status=409)
