"""Every route of the ACME front end, and the middlewares in the order they wrap requests."""

from __future__ import annotations

from aiohttp import web

from acme_ca.wfe import (
    account,
    authz,
    certificate,
    directory,
    nonce,
    order,
    renewal_info,
    revoke,
    urls,
)
from acme_ca.wfe.middleware.problems import setup_problems
from acme_ca.wfe.middleware.protocol_headers import setup_protocol_headers
from acme_ca.wfe.middleware.request_log import setup_request_log
from acme_ca.wfe.middleware.request_store import setup_request_store


def setup_front_end(app: web.Application) -> None:
    """Outermost first: request log, request store, protocol headers, problem mapping; then
    the routes."""
    setup_request_log(app)
    setup_request_store(app)
    setup_protocol_headers(app)
    setup_problems(app)
    r = app.router
    r.add_get(urls.DIRECTORY, directory.get_directory)
    r.add_route("HEAD", urls.NEW_NONCE, nonce.head_new_nonce)
    r.add_get(urls.NEW_NONCE, nonce.get_new_nonce, allow_head=False)
    r.add_post(urls.NEW_ACCOUNT, account.post_new_account)
    r.add_post(urls.ACCOUNT, account.post_account)
    r.add_post(urls.ACCOUNT_ORDERS, account.post_account_orders)
    r.add_post(urls.KEY_CHANGE, account.post_key_change)
    r.add_post(urls.NEW_ORDER, order.post_new_order)
    r.add_post(urls.ORDER, order.post_order)
    r.add_post(urls.AUTHZ, authz.post_authz)
    r.add_post(urls.CHALLENGE, authz.post_challenge)
    r.add_post(urls.FINALIZE, certificate.post_finalize)
    r.add_post(urls.CERTIFICATE, certificate.post_certificate)
    r.add_post(urls.CERTIFICATE_ALTERNATE, certificate.post_certificate)
    r.add_post(urls.CERTIFICATE_ISSUER, certificate.post_certificate_issuer)
    r.add_post(urls.REVOKE_CERT, revoke.post_revoke_cert)
    r.add_get(urls.RENEWAL_INFO, renewal_info.get_renewal_info)
    r.add_route("*", urls.RENEWAL_INFO_BASE, renewal_info.any_renewal_info_base)
