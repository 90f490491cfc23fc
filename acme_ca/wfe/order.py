"""newOrder and the order resource (RFC 8555 §7.1.3, §7.4)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError
from acme_ca.db.orders import Order
from acme_ca.wfe.responses import acme_json, rfc3339
from acme_ca.wfe.services import FrontEnd, front_end
from acme_ca.wfe.verify import KeyMode, verify_post


def order_body(fe: FrontEnd, order: Order, status: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": status,
        "expires": rfc3339(order.expires_at),
        "identifiers": order.identifiers,
        "authorizations": [fe.urls.authz(i) for i in order.authz_ids],
        "finalize": fe.urls.finalize(order.id),
    }
    if order.replaces is not None:  # RFC 9773 §5: reflected in every response
        body["replaces"] = order.replaces
    if status == "invalid":
        body["error"] = (
            order.error
            or problems.unauthorized(
                "the order expired or one of its authorizations failed"
            ).to_json()
        )
    if status == "valid" and order.certificate_id is not None:
        body["certificate"] = fe.urls.certificate(order.certificate_id)
    return body


def _retry_after(fe: FrontEnd, status: str) -> dict[str, str]:
    return {"Retry-After": str(fe.config.retry_after_seconds)} if status == "processing" else {}


async def post_new_order(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID)
    order = await fe.orders.new_order(verified.require_account(), verified.payload())
    structlog.contextvars.bind_contextvars(order_id=order.id)
    status = fe.orders.current_status(order)
    return acme_json(order_body(fe, order, status), status=201, location=fe.urls.order(order.id))


async def load_own_order(request: web.Request, fe: FrontEnd, account_id: int) -> Order:
    order = await fe.order_reads.get_order(int(request.match_info["order_id"]))
    if order is None or order.account_id != account_id:
        raise AcmeError(problems.not_found("no such order"))
    structlog.contextvars.bind_contextvars(order_id=order.id)
    return order


async def post_order(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID)
    if not verified.jws.is_post_as_get:
        raise AcmeError(problems.malformed("an order is fetched with POST-as-GET"))
    order = await load_own_order(request, fe, verified.require_account().id)
    status = await fe.orders.refresh_status(order)
    return acme_json(order_body(fe, order, status), headers=_retry_after(fe, status))
