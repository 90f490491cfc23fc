"""Authorization and challenge resources (RFC 8555 §7.1.4, §7.1.5, §7.5)."""

from __future__ import annotations

from aiohttp import web

from acme_ca.acme import problems, resources
from acme_ca.acme.issuer_names import issuer_domain_names
from acme_ca.acme.messages import AuthzUpdate, ChallengeResponse
from acme_ca.acme.problems import AcmeError, Identifier
from acme_ca.acme.states import authz_status
from acme_ca.acme.status import AuthorizationStatus, ChallengeStatus
from acme_ca.db.authorizations import Authorization, Challenge
from acme_ca.wfe.responses import acme_json
from acme_ca.wfe.services import FrontEnd, front_end
from acme_ca.wfe.verify import verify_post_reading


def challenge_resource(fe: FrontEnd, challenge: Challenge, account_id: int) -> resources.Challenge:
    """The wire challenge; dns-persist-01's also names our Issuer Domain Names (the
    ``caa_identities``, in the draft's normal form) and the account URI its record binds to."""
    persist = challenge.type == resources.DNS_PERSIST_01
    return resources.Challenge(
        id=challenge.id,
        type=challenge.type,
        token=challenge.token,
        status=challenge.status,
        validated=challenge.validated_at,
        error=challenge.error,
        validation_record=challenge.validation_records,
        issuer_domain_names=issuer_domain_names(fe.settings.caa_identities) if persist else (),
        account_uri=fe.urls.account(account_id) if persist else None,
    )


#: The challenges an authorization in this status shows: only those in the paired status.
_SHOWN_CHALLENGE = {
    AuthorizationStatus.VALID: ChallengeStatus.VALID,
    AuthorizationStatus.INVALID: ChallengeStatus.INVALID,
}


def authz_resource(fe: FrontEnd, authz: Authorization) -> resources.Authorization:
    status = authz_status(authz.status, authz.expires_at, fe.clock.now())
    challenges = authz.challenges
    # §7.1.4: a valid authorization shows the challenge that validated it, an invalid one the
    # challenge that was attempted and failed (Boulder shows only the attempted one too).
    shown = _SHOWN_CHALLENGE.get(status)
    if shown is not None:
        challenges = tuple(c for c in challenges if c.status is shown) or challenges
    return resources.Authorization(
        identifier=Identifier("dns", authz.identifier),
        status=status,
        expires=authz.expires_at,
        challenges=tuple(challenge_resource(fe, c, authz.account_id) for c in challenges),
        wildcard=authz.wildcard,
    )


async def post_authz(request: web.Request) -> web.Response:
    fe = front_end(request)
    authz_id = int(request.match_info["authz_id"])
    # Read in the nonce's round trip; a deactivation (rare) reads again through the RA.
    verified, found = await verify_post_reading(
        request,
        lambda redemption: fe.order_reads.get_authorization_redeeming(authz_id, redemption),
        AuthzUpdate,
        or_post_as_get=True,
    )
    account = verified.require_account()
    if verified.message is None:
        authz = found
        if authz is None or authz.account_id != account.id:
            raise AcmeError(problems.not_found("no such authorization"))
    else:  # AuthzUpdate decodes only {"status": "deactivated"} (§7.5.2)
        authz = await fe.challenges.deactivate_authorization(account, authz_id)
    return acme_json(authz_resource(fe, authz).to_json(fe.urls))


async def post_challenge(request: web.Request) -> web.Response:
    fe = front_end(request)
    challenge_id = int(request.match_info["challenge_id"])
    # Read in the nonce's round trip; the RA starts the validation on what was read.
    verified, read = await verify_post_reading(
        request,
        lambda redemption: fe.order_reads.get_challenge_redeeming(challenge_id, redemption),
        ChallengeResponse,
        or_post_as_get=True,
    )
    account = verified.require_account()
    if read is None or read[1].account_id != account.id:
        raise AcmeError(problems.not_found("no such challenge"))
    if verified.message is None:
        found = read
    else:
        found = await fe.challenges.respond(account, challenge_id, found=read)
    challenge, authz = found
    headers = {}
    if challenge.status is ChallengeStatus.PROCESSING:
        headers["Retry-After"] = str(fe.settings.retry_after_seconds)
    return acme_json(
        challenge_resource(fe, challenge, authz.account_id).to_json(fe.urls),
        headers=headers,
        links=[f'<{fe.urls.authz(authz.id)}>;rel="up"'],
    )
