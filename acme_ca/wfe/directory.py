"""GET /directory (RFC 8555 §7.1.1; renewalInfo from RFC 9773 §3)."""

from __future__ import annotations

from aiohttp import web

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.wfe import urls
from acme_ca.wfe.responses import acme_json
from acme_ca.wfe.services import front_end


def directory_body(request: web.Request) -> dict[str, JsonValue]:
    fe = front_end(request)
    cfg = fe.settings
    meta: dict[str, JsonValue] = {
        "caaIdentities": list(cfg.caa_identities),
        "externalAccountRequired": cfg.external_account_required,
    }
    if cfg.terms_of_service:
        meta["termsOfService"] = cfg.terms_of_service
    if cfg.website:
        meta["website"] = cfg.website
    # draft-ietf-acme-profiles §3: each profile on offer, name -> description.
    meta["profiles"] = dict(fe.orders.profiles.directory())
    if cfg.test_mode:  # loud, so nobody mistakes a test CA for a real one
        meta["testMode"] = (
            "acme_ca TEST MODE: not a publicly-trusted CA; validation uses the built-in "
            "challenge test server"
        )
    if not cfg.corroboration:
        meta["corroboration"] = "off: no remote network perspectives (BR 3.2.2.9)"
    return {
        "newNonce": fe.urls.absolute(urls.NEW_NONCE),
        "newAccount": fe.urls.absolute(urls.NEW_ACCOUNT),
        "newOrder": fe.urls.absolute(urls.NEW_ORDER),
        "revokeCert": fe.urls.absolute(urls.REVOKE_CERT),
        "keyChange": fe.urls.absolute(urls.KEY_CHANGE),
        "renewalInfo": fe.urls.absolute(urls.RENEWAL_INFO_BASE),
        "meta": meta,
    }


async def get_directory(request: web.Request) -> web.Response:
    return acme_json(directory_body(request))
