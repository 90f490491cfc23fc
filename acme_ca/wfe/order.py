"""newOrder and the order resource (RFC 8555 §7.1.3, §7.4)."""

from __future__ import annotations

import structlog
from aiohttp import web

from acme_ca.acme import problems, resources
from acme_ca.acme.messages import NewOrder
from acme_ca.acme.problems import AcmeError
from acme_ca.acme.status import OrderStatus
from acme_ca.db.order_events import Order
from acme_ca.wfe.responses import acme_json
from acme_ca.wfe.services import FrontEnd, front_end
from acme_ca.wfe.verify import KeyMode, RedeemingRead, verify_post, verify_post_reading


def order_resource(order: Order, status: OrderStatus) -> resources.Order:
    """The order as shown now: ``status`` is its derived status, not necessarily the row's."""
    error = None
    if status == OrderStatus.INVALID:
        error = order.error or problems.unauthorized(
            "the order expired or one of its authorizations failed"
        )
    return resources.Order(
        id=order.id,
        status=status,
        expires=order.expires_at,
        identifiers=order.identifiers,
        authz_ids=order.authz_ids,
        error=error,
        certificate_id=order.certificate_id if status == OrderStatus.VALID else None,
        replaces=order.replaces,
        profile=order.profile,
    )


def retry_after(fe: FrontEnd, status: OrderStatus) -> dict[str, str]:
    """``Retry-After`` while the order is processing (RFC 8555 §7.4: clients poll)."""
    if status is OrderStatus.PROCESSING:
        return {"Retry-After": str(fe.settings.retry_after_seconds)}
    return {}


async def post_new_order(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID, NewOrder)
    order = await fe.orders.new_order(verified.require_account(), verified.message)
    structlog.contextvars.bind_contextvars(order_id=order.id)
    status = fe.orders.current_status(order)
    return acme_json(
        order_resource(order, status).to_json(fe.urls),
        status=201,
        location=fe.urls.order(order.id),
    )


def read_order_redeeming(request: web.Request, fe: FrontEnd) -> RedeemingRead[Order | None]:
    """The request's order, read in the nonce's round trip (:func:`verify_post_reading`)."""
    order_id = int(request.match_info["order_id"])
    return lambda redemption: fe.order_reads.get_order_redeeming(order_id, redemption)


def own_order(order: Order | None, account_id: int) -> Order:
    """``order`` if the account owns it; ``notFound`` otherwise (or when there is none)."""
    if order is None or order.account_id != account_id:
        raise AcmeError(problems.not_found("no such order"))
    structlog.contextvars.bind_contextvars(order_id=order.id)
    return order


async def post_order(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified, found = await verify_post_reading(request, read_order_redeeming(request, fe))
    if not verified.jws.is_post_as_get:
        raise AcmeError(problems.malformed("an order is fetched with POST-as-GET"))
    order = own_order(found, verified.require_account().id)
    status = fe.orders.current_status(order)
    return acme_json(
        order_resource(order, status).to_json(fe.urls), headers=retry_after(fe, status)
    )
