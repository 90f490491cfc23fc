"""Authorization and challenge resources (RFC 8555 §7.1.4, §7.1.5, §7.5)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError
from acme_ca.db.orders import Authorization, Challenge
from acme_ca.ra.states import authz_status
from acme_ca.wfe.responses import acme_json, rfc3339
from acme_ca.wfe.services import FrontEnd, front_end
from acme_ca.wfe.verify import KeyMode, verify_post


def challenge_body(fe: FrontEnd, challenge: Challenge) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": challenge.type,
        "url": fe.urls.challenge(challenge.id),
        "token": challenge.token,
        "status": challenge.status,
    }
    if challenge.validated_at is not None:
        body["validated"] = rfc3339(challenge.validated_at)
    if challenge.error is not None:
        body["error"] = challenge.error
    if challenge.validation_records:
        body["validationRecord"] = challenge.validation_records
    return body


def authz_body(fe: FrontEnd, authz: Authorization) -> dict[str, Any]:
    status = authz_status(authz.status, authz.expires_at, fe.clock.now())
    challenges = authz.challenges
    if status == "valid":  # only the challenge that validated it is of interest (§7.1.4)
        challenges = tuple(c for c in challenges if c.status == "valid") or challenges
    body: dict[str, Any] = {
        "identifier": {"type": "dns", "value": authz.identifier},
        "status": status,
        "expires": rfc3339(authz.expires_at),
        "challenges": [challenge_body(fe, c) for c in challenges],
    }
    if authz.wildcard:
        body["wildcard"] = True
    return body


async def post_authz(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID)
    account = verified.require_account()
    authz_id = int(request.match_info["authz_id"])
    if verified.jws.is_post_as_get:
        authz = await fe.order_reads.get_authorization(authz_id)
        if authz is None or authz.account_id != account.id:
            raise AcmeError(problems.not_found("no such authorization"))
    else:
        payload = verified.payload()
        if payload.get("status") != "deactivated":
            raise AcmeError(
                problems.malformed("the only update to an authorization is status: deactivated")
            )
        authz = await fe.challenges.deactivate_authorization(account, authz_id)
    return acme_json(authz_body(fe, authz))


async def post_challenge(request: web.Request) -> web.Response:
    fe = front_end(request)
    verified = await verify_post(request, KeyMode.KID)
    account = verified.require_account()
    challenge_id = int(request.match_info["challenge_id"])
    if verified.jws.is_post_as_get:
        found = await fe.order_reads.get_challenge(challenge_id)
        if found is None or found[1].account_id != account.id:
            raise AcmeError(problems.not_found("no such challenge"))
    else:
        verified.payload()  # must be a JSON object; {} per RFC 8555 §7.5.1 (erratum 5729)
        found = await fe.challenges.respond(account, challenge_id)
    challenge, authz = found
    headers = {}
    if challenge.status == "processing":
        headers["Retry-After"] = str(fe.config.retry_after_seconds)
    return acme_json(
        challenge_body(fe, challenge),
        headers=headers,
        links=[f'<{fe.urls.authz(authz.id)}>;rel="up"'],
    )
