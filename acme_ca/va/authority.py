"""The validation authority: a method check, then CAA (BR §3.2.2.4, §3.2.2.8).

The RA calls :meth:`ValidationAuthority.validate` from a background task and stores the
result.  CAA is only asked once the method passed: a failed method needs no CAA lookup, and
checking CAA at validation time is what lets the CA issue within the CAA window (CAA-9; the
RA rechecks at finalize when it reuses an authorization).  Every check is a function of
(identifier, expected value, resolver/perspective) returning a :class:`CheckResult`, so the
same checks can run at remote perspectives for corroboration (BR §3.2.2.9).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import structlog

from acme_ca.acme import problems
from acme_ca.clock import Clock
from acme_ca.va.caa_lookup import CaaChecker
from acme_ca.va.dns01 import dns01_txt_value
from acme_ca.va.methods import WildcardNotAllowed, applied_for, authorization_domain_name
from acme_ca.va.records import (
    PRIMARY_PERSPECTIVE,
    ChallengeRequest,
    CheckResult,
    ValidationRecord,
)
from acme_ca.va.registry import METHODS, MethodCheck

__all__ = [
    "ALWAYS_VALID_NOTE",
    "ValidationAuthority",
    "dns01_txt_value",
    "key_authorization",
]

ALWAYS_VALID_NOTE: Final = "not validated: always_valid test mode"

_log = structlog.get_logger(component=__name__)


def key_authorization(token: str, jwk_thumbprint_b64: str) -> str:
    """RFC 8555 §8.1 (ACME-CHAL-4): ``token || '.' || base64url(JWK thumbprint)``."""
    return f"{token}.{jwk_thumbprint_b64}"


class ValidationAuthority:
    """Validates one challenge: the method's check, then CAA if it passed.

    ``checks`` holds one built check per enabled method of :mod:`acme_ca.va.registry`, by
    label; a challenge of any other type is refused before any lookup.  ``always_valid`` is
    Pebble's ``PEBBLE_VA_ALWAYS_VALID``: every validation passes with a record saying none
    was done.  Only ``serve --test`` may set it; it defaults to off.
    """

    def __init__(
        self,
        checks: Mapping[str, MethodCheck],
        caa: CaaChecker,
        clock: Clock,
        *,
        always_valid: bool = False,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        unknown = set(checks) - set(METHODS)
        if unknown:
            raise ValueError(f"checks for unregistered methods: {', '.join(sorted(unknown))}")
        self._checks = dict(checks)
        self._caa = caa
        self._clock = clock
        self.always_valid = always_valid
        self._on_close = on_close
        if always_valid:
            _log.warning("va.always_valid", detail="every validation will pass unchecked")

    async def aclose(self) -> None:
        """Release what the checks hold open (the DNS client's idle TCP connections)."""
        if self._on_close is not None:
            await self._on_close()

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        """Run the method's check, then CAA; the records of both, in the order they ran.

        ``request.identifier`` is the authorization's name without ``*.``; ``wildcard`` is
        its flag.  Unexpected exceptions propagate: the caller turns them into
        ``serverInternal``.
        """
        log = _log.bind(
            identifier=request.identifier, type=request.challenge_type, wildcard=request.wildcard
        )
        check = self._checks.get(request.challenge_type)
        if check is None:
            return CheckResult.failure(
                problems.malformed(f"challenge type {request.challenge_type!r} is not enabled"), ()
            )
        if not request.key_authorization.startswith(request.token + "."):
            return CheckResult.failure(
                problems.server_internal("key authorization does not belong to the token"), ()
            )
        if self.always_valid:
            log.warning("va.validated", ok=True, always_valid=True)
            return self._always_valid(
                request.challenge_type,
                request.identifier,
                request.wildcard,
                request.key_authorization,
            )
        try:
            authorization_domain_name(
                METHODS[request.challenge_type].dcv, request.identifier, request.wildcard
            )
        except WildcardNotAllowed as exc:
            return CheckResult.failure(problems.unauthorized(f"{exc} (BR-DCV-5)"), ())
        method = await check.validate(request)
        if not method.ok:
            log.info("va.validated", ok=False, problem=_short(method), stage="method")
            return method
        caa = await self._caa.check(
            request.identifier,
            wildcard=request.wildcard,
            account_uri=request.account_uri,
            validation_method=request.challenge_type,
        )
        # A success is in the challenge.valid line and audit row that follow: debug.
        (log.info if not caa.ok else log.debug)(
            "va.validated",
            ok=caa.ok,
            problem=_short(caa),
            stage="caa",
            records=len(method.records) + len(caa.records),
        )
        return CheckResult(
            ok=caa.ok,
            problem=caa.problem,
            records=method.records + caa.records,
            observed=method.observed,
        )

    async def recheck_caa(
        self, identifier: str, wildcard: bool, account_uri: str, validation_method: str
    ) -> CheckResult:
        """CAA again before issuance when the validation's check is older than BR 3.2.2.8
        allows (8 hours); same rules as at validation time."""
        if self.always_valid:
            return self._always_valid(validation_method, identifier, wildcard, "caa-recheck")
        result = await self._caa.check(
            identifier,
            wildcard=wildcard,
            account_uri=account_uri,
            validation_method=validation_method,
        )
        _log.info("va.caa_rechecked", identifier=identifier, ok=result.ok, problem=_short(result))
        return result

    def _always_valid(
        self, challenge_type: str, identifier: str, wildcard: bool, key_authorization: str
    ) -> CheckResult:
        """A record that says plainly nothing was checked: no value, no result.  A CAA
        recheck names the method the authorization was validated with."""
        method = METHODS[challenge_type if challenge_type in METHODS else "dns-01"].dcv
        record = ValidationRecord(
            method=method.label,
            hostname=identifier,
            query="always_valid",
            at=self._clock.now(),
            perspective=PRIMARY_PERSPECTIVE,
            response=ALWAYS_VALID_NOTE,
            identifier=applied_for(identifier, wildcard),
            br_method=method.section,
        )
        return CheckResult.success((record,), key_authorization)


def _short(result: CheckResult) -> str | None:
    return result.problem.short_type if result.problem is not None else None
