"""RFC 8555 §6.7 problem documents: one factory per error type, the HTTP status fixed here.

Every room raises :class:`AcmeError` carrying a :class:`Problem`; the web front end turns it
into an ``application/problem+json`` response in one place.  Nothing else chooses a status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from acme_ca.acme.jsontypes import JsonValue

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

    @classmethod
    def from_json(cls, body: object) -> Identifier:
        """The inverse of :meth:`to_json`, for identifiers stored as JSON."""
        if not isinstance(body, Mapping):
            raise TypeError("an identifier is a JSON object")
        kind, value = body.get("type"), body.get("value")
        if not isinstance(kind, str) or not isinstance(value, str):
            raise TypeError("an identifier needs string type and value")
        return cls(kind, value)


@dataclass(frozen=True)
class Problem:
    """One problem document; ``subproblems`` carry per-identifier detail (§6.7.1)."""

    type: str
    detail: str
    status: int
    subproblems: tuple[Problem, ...] = ()
    identifier: Identifier | None = None
    #: Extension members (§6.7: e.g. ``algorithms``, ``instance``), written as given.
    extra: Mapping[str, JsonValue] = field(default_factory=dict)

    @property
    def short_type(self) -> str:
        """The type without the ACME namespace, as used in logs."""
        return self.type.removeprefix(ACME_ERROR_NS)

    def to_json(self) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
            "type": self.type,
            "detail": self.detail,
            "status": self.status,
        }
        if self.identifier is not None:
            body["identifier"] = self.identifier.to_json()
        if self.subproblems:
            body["subproblems"] = [p.to_json() for p in self.subproblems]
        body.update(self.extra)
        return body

    @classmethod
    def from_json(cls, body: JsonValue) -> Problem:
        """The inverse of :meth:`to_json`, for problem documents stored as JSON."""
        if not isinstance(body, Mapping):
            raise TypeError("a problem document is a JSON object")
        kind, detail, status = body.get("type"), body.get("detail"), body.get("status")
        if not isinstance(kind, str) or not isinstance(detail, str) or not isinstance(status, int):
            raise TypeError("a problem document needs string type and detail, integer status")
        ident, subproblems = body.get("identifier"), body.get("subproblems", ())
        if not isinstance(subproblems, Sequence) or isinstance(subproblems, str):
            raise TypeError("a problem document's subproblems are an array")
        return cls(
            type=kind,
            detail=detail,
            status=status,
            subproblems=tuple(cls.from_json(p) for p in subproblems),
            identifier=None if ident is None else Identifier.from_json(ident),
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


@dataclass(frozen=True)
class ProblemType:
    """One ``urn:ietf:params:acme:error:`` type with the HTTP status fixed for it; calling it
    makes a :class:`Problem` of that type."""

    name: str
    status: int

    @property
    def type(self) -> str:
        return ACME_ERROR_NS + self.name

    def __call__(
        self,
        detail: str,
        *,
        subproblems: tuple[Problem, ...] = (),
        identifier: Identifier | None = None,
        extra: Mapping[str, JsonValue] | None = None,
    ) -> Problem:
        return Problem(
            type=self.type,
            detail=detail,
            status=self.status,
            subproblems=subproblems,
            identifier=identifier,
            extra={} if extra is None else extra,
        )


account_does_not_exist = ProblemType("accountDoesNotExist", 400)
already_replaced = ProblemType("alreadyReplaced", 409)
already_revoked = ProblemType("alreadyRevoked", 400)
bad_csr = ProblemType("badCSR", 400)
bad_nonce = ProblemType("badNonce", 400)
bad_public_key = ProblemType("badPublicKey", 400)
bad_revocation_reason = ProblemType("badRevocationReason", 400)
caa = ProblemType("caa", 403)
compound = ProblemType("compound", 403)
connection = ProblemType("connection", 400)
dns = ProblemType("dns", 400)
external_account_required = ProblemType("externalAccountRequired", 403)
incorrect_response = ProblemType("incorrectResponse", 403)
invalid_contact = ProblemType("invalidContact", 400)
invalid_profile = ProblemType("invalidProfile", 400)
malformed = ProblemType("malformed", 400)
order_not_ready = ProblemType("orderNotReady", 403)
rate_limited = ProblemType("rateLimited", 429)
rejected_identifier = ProblemType("rejectedIdentifier", 400)
server_internal = ProblemType("serverInternal", 500)
tls = ProblemType("tls", 400)
unauthorized = ProblemType("unauthorized", 403)
unsupported_contact = ProblemType("unsupportedContact", 400)
unsupported_identifier = ProblemType("unsupportedIdentifier", 400)
user_action_required = ProblemType("userActionRequired", 403)


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


def service_unavailable(detail: str) -> Problem:
    """The server cannot take the request now (overload, database outage): ``serverInternal``
    with 503, sent with ``Retry-After`` (RFC 9110 §15.6.4).  Not ``rateLimited`` (429): that
    names a limit the client's own requests hit (RFC 8555 §6.6), which this is not."""
    return Problem(type=ACME_ERROR_NS + "serverInternal", detail=detail, status=503)


def conflict(detail: str) -> Problem:
    """A conflicting request, e.g. keyChange to a key another account holds (§7.3.5): 409."""
    return Problem(type=ACME_ERROR_NS + "malformed", detail=detail, status=409)
