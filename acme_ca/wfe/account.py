"""Account resources (RFC 8555 §7.3): newAccount, the account URL, its orders list, keyChange."""

from __future__ import annotations

import structlog
from aiohttp import web

from acme_ca.acme import problems, resources
from acme_ca.acme.jws import verify_inner_jws
from acme_ca.acme.messages import AccountUpdate, FlattenedJws, KeyChange, NewAccount
from acme_ca.acme.problems import AcmeError
from acme_ca.acme.status import AccountStatus
from acme_ca.db.accounts import Account
from acme_ca.ra.accounts import AccountKeyConflict
from acme_ca.wfe.responses import acme_json
from acme_ca.wfe.services import front_end
from acme_ca.wfe.verify import KeyMode, VerifiedRequest, verify_post


def account_resource(account: Account, binding: FlattenedJws | None = None) -> resources.Account:
    return resources.Account(
        id=account.id,
        status=AccountStatus(account.status),
        key=account.jwk,
        contact=account.contact,
        created_at=account.created_at,
        terms_of_service_agreed=account.tos_agreed_at is not None,
        external_account_binding=binding,
    )


async def post_new_account(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.JWK, NewAccount)
    assert verified.jwk is not None
    result = await fe.accounts.new_account(
        verified.jwk, verified.message, verified.url, source=request.remote
    )
    account = result.account
    structlog.contextvars.bind_contextvars(account_id=account.id)
    body = account_resource(account, result.external_account_binding).to_json(fe.urls)
    return acme_json(
        body, status=201 if result.created else 200, location=fe.urls.account(account.id)
    )


def _own_account(request: web.Request, verified: VerifiedRequest[object]) -> Account:
    account = verified.require_account()
    if str(account.id) != request.match_info["account_id"]:
        raise AcmeError(problems.unauthorized("the signing account does not own this resource"))
    return account


async def post_account(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID, AccountUpdate, or_post_as_get=True)
    account = _own_account(request, verified)
    if verified.message is not None:
        account = await fe.accounts.update(account, verified.message)
    return acme_json(
        account_resource(account).to_json(fe.urls), location=fe.urls.account(account.id)
    )


async def post_account_orders(request: web.Request) -> web.Response:
    """The orders list, paged by order id with ``Link: rel="next"`` (§7.1.2.1)."""
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID)
    account = _own_account(request, verified)
    if not verified.jws.is_post_as_get:
        raise AcmeError(problems.malformed("the orders list is fetched with POST-as-GET"))
    cursor_text = request.query.get("cursor", "0")
    if not cursor_text.isdigit() or len(cursor_text) > 18:
        raise AcmeError(problems.malformed("cursor must be a non-negative integer"))
    limit = fe.settings.orders_page_size
    # One row more than a page tells whether a next page exists (no empty last page).
    ids = await fe.account_reads.order_ids(
        account.id, after_id=int(cursor_text), limit=limit + 1, now=fe.clock.now()
    )
    links = []
    if len(ids) > limit:
        ids = ids[:limit]
        links.append(f'<{fe.urls.account_orders(account.id, ids[-1])}>;rel="next"')
    return acme_json({"orders": [fe.urls.order(i) for i in ids]}, links=links)


async def post_key_change(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID)
    account = verified.require_account()
    inner = verify_inner_jws(verified.jws)
    assert inner.parsed.jwk is not None
    message = KeyChange.from_json(inner.payload_json())
    try:
        updated = await fe.accounts.key_change(
            account, fe.urls.account(account.id), inner.parsed.jwk, message
        )
    except AccountKeyConflict as exc:
        raise AcmeError(
            exc.problem, headers={"Location": fe.urls.account(exc.account_id)}
        ) from None
    return acme_json(
        account_resource(updated).to_json(fe.urls), location=fe.urls.account(updated.id)
    )
