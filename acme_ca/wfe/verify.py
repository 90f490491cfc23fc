"""Authenticating an ACME POST (RFC 8555 §6.2-6.5), in Boulder's order, before any handler runs.

Cheap checks first (media type, envelope, algorithm, url, nonce MAC), then the key lookup,
then the signature, and only then the database write that consumes the nonce, so junk costs
no writes and a replay can never succeed. The ``kid`` account usually comes from the
process's cache (account_cache.py): the nonce's redemption also returns the account's
current row version, and a changed account is read again and checked again from the start.

A handler whose first database statement is a read (POST-as-GET of an order, authorization
or certificate; finalize's order) uses :func:`verify_post_reading`: the nonce is redeemed in
that read's statement (``db/nonces.fetch_redeeming``), one round trip instead of two, and the
read's answer is used only once the nonce proved fresh and the account still checks out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Literal, TypeVar, cast, overload

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
from acme_ca.db.nonces import Redeemed, Redemption
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
R = TypeVar("R")

#: A read that also redeems the request's nonce (``db/nonces.fetch_redeeming``).
RedeemingRead = Callable[[Redemption], Awaitable[tuple[R, Redeemed]]]


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
    fe: FrontEnd,
    parsed: ParsedJws,
    kid: str,
    nonce: OpenedNonce,
    read: RedeemingRead[R] | None = None,
) -> tuple[VerifiedJws, Account, R | None]:
    """Verify under the ``kid`` account's key and consume the ``nonce`` (already checked);
    the account must still be the one verified against when the nonce is consumed
    (account_cache.py).  With ``read``, the nonce is consumed by that read's statement and
    its answer returned."""
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
    answer: R | None = None
    if read is None:
        version = await fe.nonces.redeem_for_account(nonce, cached.account.id)
    else:
        # badNonce here for a replay: the read's answer is dropped unseen.
        answer, redeemed = await read(fe.nonces.redemption(nonce, cached.account.id))
        version = fe.nonces.redeemed(redeemed)
    if version != cached.version:
        # Changed since it was read: every check again on the account as it stands now; the
        # nonce stays consumed whatever the outcome.
        cached, _ = await _account_by_kid(fe, kid, read=True)
        verified = verify_jws(parsed, cached.account.jwk.key)
    return verified, cached.account, answer


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
    verified, _ = await _verify_post(request, mode, message, or_post_as_get, None)
    return verified


@overload
async def verify_post_reading(
    request: web.Request, read: RedeemingRead[R]
) -> tuple[VerifiedRequest[None], R]: ...


@overload
async def verify_post_reading(
    request: web.Request, read: RedeemingRead[R], message: type[M]
) -> tuple[VerifiedRequest[M], R]: ...


@overload
async def verify_post_reading(
    request: web.Request,
    read: RedeemingRead[R],
    message: type[M],
    *,
    or_post_as_get: Literal[True],
) -> tuple[VerifiedRequest[M | None], R]: ...


async def verify_post_reading(
    request: web.Request,
    read: RedeemingRead[R],
    message: type[Message] | None = None,
    *,
    or_post_as_get: bool = False,
) -> tuple[VerifiedRequest[Any], R]:
    """:func:`verify_post` for a ``kid`` request whose handler starts with ``read``: the nonce
    is redeemed in the read's round trip (issue 20), after every check :func:`verify_post`
    makes before its redemption, and the read's answer is returned with the request once the
    nonce proved unused and the account still valid; whatever the read found, the nonce is
    spent, as by :func:`verify_post`."""
    verified, answer = await _verify_post(request, KeyMode.KID, message, or_post_as_get, read)
    return verified, cast(R, answer)  # a KID request (the only kind let through) ran the read


async def _verify_post(
    request: web.Request,
    mode: KeyMode,
    message: type[Message] | None,
    or_post_as_get: bool,
    read: RedeemingRead[R] | None,
) -> tuple[VerifiedRequest[Any], R | None]:
    """:func:`verify_post`, and :func:`verify_post_reading` with ``read``."""
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
    answer: R | None = None
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
        verified, account, answer = await _verify_kid(fe, parsed, parsed.kid, nonce, read)
    decoded = None
    if message is not None and not (or_post_as_get and verified.is_post_as_get):
        decoded = message.from_json(verified.payload_json())
    result = VerifiedRequest(jws=verified, account=account, jwk=parsed.jwk, message=decoded)
    return result, answer
