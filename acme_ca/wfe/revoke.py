"""revokeCert (RFC 8555 §7.6): signed by an account (kid) or by the certificate's key (jwk)."""

from __future__ import annotations

from aiohttp import web

from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_decode
from acme_ca.acme.problems import AcmeError
from acme_ca.wfe.responses import acme_json
from acme_ca.wfe.services import front_end
from acme_ca.wfe.verify import KeyMode, verify_post


async def post_revoke_cert(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.EITHER)
    payload = verified.payload()
    encoded = payload.get("certificate")
    if not isinstance(encoded, str):
        raise AcmeError(problems.malformed("certificate is required (base64url DER)"))
    try:
        der = b64url_decode(encoded)
    except ValueError:
        raise AcmeError(problems.malformed("certificate is not base64url")) from None
    reason = payload.get("reason")
    if reason is not None and (not isinstance(reason, int) or isinstance(reason, bool)):
        raise AcmeError(problems.bad_revocation_reason("reason must be an integer"))
    await fe.revocation.revoke(
        der,
        reason,
        account=verified.account,
        jwk_key=verified.jwk.key if verified.jwk else None,
    )
    return acme_json(None)
