"""revokeCert (RFC 8555 §7.6): signed by an account (kid) or by the certificate's key (jwk).

Success is 200 with an empty body, as Boulder (``wfe2/wfe.go`` RevokeCertificate) and Pebble
answer: RFC 8555 §7.6 defines no response body, and some clients (acme.sh) count only an
empty body as success.
"""

from __future__ import annotations

from aiohttp import web

from acme_ca.acme.messages import RevokeCert
from acme_ca.wfe.services import front_end
from acme_ca.wfe.verify import KeyMode, verify_post


async def post_revoke_cert(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.EITHER, RevokeCert)
    await fe.revocation.revoke(
        verified.message.certificate,
        verified.message.reason,
        account=verified.account,
        jwk_key=verified.jwk.key if verified.jwk else None,
    )
    return web.Response(status=200)
