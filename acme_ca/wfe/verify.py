"""Authenticating an ACME POST (RFC 8555 §6.2-6.5), in Boulder's order, before any handler runs.

Cheap checks first (media type, envelope, algorithm, url, nonce MAC), then the key lookup,
then the signature, and only then the database write that consumes the nonce, so junk costs
no writes and a replay can never succeed. The ``kid`` account usually comes from the
process's cache (account_cache.py): the nonce's redemption also returns the account's
current row version, and a changed account is read again and checked again from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Literal, TypeVar, overload

import structlog
from aiohttp import web

from acme_ca.acme import problems
from acme_ca.acme.jwk import Jwk
from acme_ca.acme.jws import ParsedJws, VerifiedJws, parse_jws, verify_jws
from acme_ca.acme.messages import Message
from acme_ca.acme.nonce import OpenedNonce
from acme_ca.acme.problems import AcmeError
from acme_ca.acme.status import AccountStatus
from acme_ca.db.accounts import Account
from acme_ca.wfe.account_cache import CachedAccount
from acme_ca.wfe.services import FrontEnd, front_end

JOSE_CONTENT_TYPE = "application/jose+json"


class KeyMode(Enum):
    """Which key header an endpoint accepts (§6.2)."""

    KID = "kid"
    JWK = "jwk"
    EITHER = "either"


M = TypeVar("M", bound=Message)
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class VerifiedRequest(Generic[T_co]):
    """A POST whose JWS verified, with the account that signed it (None for ``jwk``) and its
    payload decoded as the endpoint's message (None for POST-as-GET or an undecoded payload)."""

    jws: VerifiedJws
    account: Account | None
    jwk: Jwk | None
    message: T_co

    @property
    def url(self) -> str:
        return self.jws.parsed.url

    def require_account(self) -> Account:
        assert self.account is not None
        return self.account


async def _account_by_kid(fe: FrontEnd, kid: str, *, read: bool) -> tuple[CachedAccount, bool]:
    """The valid account ``kid`` names, and whether it came from the process's cache (never
    when ``read``) rather than from the database (then it is cached)."""
    account_id = fe.urls.account_id_from_kid(kid)
    cached = fe.account_cache.get(account_id) if account_id and not read else None
    hit = cached is not None
    if cached is None and account_id:
        row = await fe.account_reads.get_versioned(account_id)
        cached = fe.account_cache.put(*row) if row is not None else None
    if cached is None:
        raise AcmeError(problems.account_does_not_exist(f"no account at {kid!r}"))
    if cached.account.status != AccountStatus.VALID:
        fe.account_cache.drop(cached.account.id)
        raise AcmeError(problems.deactivated_account(f"account is {cached.account.status}"))
    return cached, hit


async def _verify_kid(
    fe: FrontEnd, parsed: ParsedJws, kid: str, nonce: OpenedNonce
) -> tuple[VerifiedJws, Account]:
    """Verify under the ``kid`` account's key and consume the ``nonce`` (already checked);
    the account must still be the one verified against when the nonce is consumed
    (account_cache.py)."""
    cached, hit = await _account_by_kid(fe, kid, read=False)
    try:
        verified = verify_jws(parsed, cached.account.jwk.key)
    except AcmeError:
        if not hit:
            raise
        # The cached key may be an old one (a key change in another process): read again.
        cached, _ = await _account_by_kid(fe, kid, read=True)
        verified = verify_jws(parsed, cached.account.jwk.key)
    structlog.contextvars.bind_contextvars(account_id=cached.account.id)
    version = await fe.nonces.redeem_for_account(nonce, cached.account.id)
    if version != cached.version:
        # Changed since it was read: every check again on the account as it stands now; the
        # nonce stays consumed whatever the outcome.
        cached, _ = await _account_by_kid(fe, kid, read=True)
        verified = verify_jws(parsed, cached.account.jwk.key)
    return verified, cached.account


@overload
async def verify_post(request: web.Request, mode: KeyMode) -> VerifiedRequest[None]: ...


@overload
async def verify_post(
    request: web.Request, mode: KeyMode, message: type[M]
) -> VerifiedRequest[M]: ...


@overload
async def verify_post(
    request: web.Request, mode: KeyMode, message: type[M], *, or_post_as_get: Literal[True]
) -> VerifiedRequest[M | None]: ...


async def verify_post(
    request: web.Request,
    mode: KeyMode,
    message: type[Message] | None = None,
    *,
    or_post_as_get: bool = False,
) -> VerifiedRequest[Any]:
    """Authenticate the POST, then decode its payload as ``message`` (``malformed`` naming the
    member if it does not fit); with ``or_post_as_get`` an empty payload gives None instead."""
    fe = front_end(request)
    if request.content_type != JOSE_CONTENT_TYPE:
        raise AcmeError(
            problems.unsupported_media_type(f"Content-Type must be {JOSE_CONTENT_TYPE}")
        )
    body = await request.read()
    parsed = parse_jws(body)

    expected_url = fe.urls.absolute(request.raw_path)
    if parsed.url != expected_url:
        raise AcmeError(
            problems.unauthorized(
                f"JWS url {parsed.url!r} does not match the request URL {expected_url!r}"
            )
        )
    assert parsed.nonce is not None
    nonce = fe.nonces.check(parsed.nonce)

    account: Account | None = None
    if parsed.jwk is not None:
        if mode is KeyMode.KID:
            raise AcmeError(
                problems.malformed(
                    "this resource requires a 'kid' header naming your account, not 'jwk'"
                )
            )
        verified = verify_jws(parsed, parsed.jwk.key)
        await fe.nonces.redeem(nonce)
    else:
        if mode is KeyMode.JWK:
            raise AcmeError(problems.malformed("this resource requires a 'jwk' header"))
        assert parsed.kid is not None
        verified, account = await _verify_kid(fe, parsed, parsed.kid, nonce)
    decoded = None
    if message is not None and not (or_post_as_get and verified.is_post_as_get):
        decoded = message.from_json(verified.payload_json())
    return VerifiedRequest(jws=verified, account=account, jwk=parsed.jwk, message=decoded)
