"""Challenge responses and authorization deactivation (RFC 8555 §7.5.1, §7.5.2, §8).

A challenge POST commits ``processing`` and starts the validation in the background; the
response waits up to ``challenge_wait_seconds`` for it, so a quick validation is answered
``valid`` (or ``invalid``) and the client needs no polls.  The result is written by a
conditional update.  A process that dies mid-validation leaves a lease that expires, and any
process then runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import NamedTuple, Protocol

import structlog

from acme_ca import metrics
from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.problems import AcmeError
from acme_ca.acme.status import AuthorizationStatus, ChallengeStatus
from acme_ca.br import BR_VERSION, max_dcv_reuse
from acme_ca.clock import Clock
from acme_ca.db.accounts import Account, AccountRepository
from acme_ca.db.authorizations import Authorization, Challenge, ValidationOutcome
from acme_ca.db.errors import database_unavailable
from acme_ca.db.orders import OrderRepository
from acme_ca.db.pool import request_age
from acme_ca.liveness import dead_on_this_host, holder_name, host_prefix
from acme_ca.ra.ratelimits import RateLimiter
from acme_ca.tasks import BackgroundTasks
from acme_ca.va.records import CaaRechecker, ChallengeRequest, CheckResult
from acme_ca.va.registry import BR_METHODS

log = structlog.get_logger(component="acme_ca.ra.challenges")

#: How soon a validation that met a database outage is run again.
OUTAGE_RETRY_SECONDS = 0.5


class Validator(CaaRechecker, Protocol):
    """What the RA needs of the VA: validate a challenge, recheck CAA before issuance."""

    async def validate(self, request: ChallengeRequest) -> CheckResult: ...


def key_authorization(token: str, thumbprint: bytes) -> str:
    """``token || '.' || base64url(JWK thumbprint)`` (RFC 8555 §8.1)."""
    return f"{token}.{b64url_encode(thumbprint)}"


class Started(NamedTuple):
    """A challenge just moved to processing, with what its validation reads."""

    challenge: Challenge
    authz: Authorization
    account: Account


class ChallengeAuthority:
    def __init__(
        self,
        orders: OrderRepository,
        accounts: AccountRepository,
        validator: Validator,
        tasks: BackgroundTasks,
        clock: Clock,
        *,
        account_uri: Callable[[int], str],
        reuse_period: Callable[[], timedelta],
        lease: timedelta = timedelta(minutes=2),
        max_delay_seconds: int = 0,
        wait_seconds: float = 0.0,
        retry_after_seconds: int = 3,
        limits: RateLimiter | None = None,
    ) -> None:
        """``max_delay_seconds`` is the test-mode knob (Pebble sleeps before validating
        unless PEBBLE_VA_NOSLEEP): clients must poll rather than expect an instant result.
        ``wait_seconds`` is how long a response waits for the validation it started;
        ``retry_after_seconds`` the ``Retry-After`` of a 409 for a validation in flight."""
        self._orders = orders
        self._accounts = accounts
        self._validator = validator
        self._tasks = tasks
        self._clock = clock
        self._account_uri = account_uri
        self._reuse_period = reuse_period
        self._lease = lease
        #: This process as a lease holder (``<hostname>:<pid>``, :mod:`acme_ca.liveness`).
        self._holder = holder_name()
        #: The challenges this process is validating now (recover_stale: the others it
        #: holds are orphans).
        self._running: set[int] = set()
        self._max_delay = max_delay_seconds
        self._wait = wait_seconds
        self._retry_after = retry_after_seconds
        self._limits = limits

    async def respond(
        self,
        account: Account,
        challenge_id: int,
        *,
        found: tuple[Challenge, Authorization] | None = None,
    ) -> tuple[Challenge, Authorization]:
        """The client says it is ready: start validation, once.

        A challenge already valid or invalid is answered as it is.  One whose validation is in
        flight -- started by an earlier POST, or by a POST racing this one (the conditional
        update lets exactly one start it) -- gets 409 with ``Retry-After``, as Boulder answers
        (CONC-1): exactly one validation runs per challenge.  ``found``: the challenge and its
        authorization as this request already read them (in its nonce's round trip, issue
        20); read here otherwise.  Either way only a read: the start itself is decided by the
        conditional update below, and a start lost to a racing request is decided again on a
        fresh read (409 while the winner runs; once it is over, what a later POST gets)."""
        for _ in range(_START_ATTEMPTS):
            if found is None:
                found = await self._orders.get_challenge(challenge_id)
            if found is None or found[1].account_id != account.id:
                raise AcmeError(problems.not_found("no such challenge"))
            challenge, authz = found
            if challenge.status == ChallengeStatus.PROCESSING:
                raise self._in_flight(challenge)
            if challenge.status != ChallengeStatus.PENDING:
                return found  # valid or invalid: answered as it is
            if busy := _processing(authz):
                raise self._in_flight(busy)  # another challenge of this authorization runs
            if authz.status != AuthorizationStatus.PENDING or authz.expires_at <= self._clock.now():
                raise AcmeError(
                    problems.malformed(
                        f"the authorization is {authz.status}; this challenge cannot be started"
                    )
                )
            if self._limits is not None:
                await self._limits.check_failed_validations(account.id, authz.identifier)
            if await self._orders.start_challenge(
                challenge.id, now=self._clock.now(), lease=self._lease, holder=self._holder
            ):
                await self._started(challenge, authz, account)
                break
            # Lost a race since the read: a POST to this challenge or a sibling started (and
            # may have finished, leaving the authorization valid or invalid). Decide again
            # on what is stored now, as a POST arriving after it would be answered.
            found = None
        found = await self._orders.get_challenge(challenge_id)
        assert found is not None
        return found

    async def _started(self, challenge: Challenge, authz: Authorization, account: Account) -> None:
        """Run the validation this request just moved to processing; wait for it up to
        ``wait_seconds`` from the request's arrival, so a quick one is answered final."""
        log.info(
            "challenge.processing",
            challenge_id=challenge.id,
            authz_id=authz.id,
            type=challenge.type,
            identifier=authz.identifier,
        )
        # What this request read is what the validation needs: the move to processing just
        # succeeded, and type, token, name and account are fixed.
        known = Started(replace(challenge, status=ChallengeStatus.PROCESSING), authz, account)
        validation = self._tasks.spawn(
            self.run_validation(challenge.id, known), name=f"validate-{challenge.id}"
        )
        wait = self._wait - request_age()  # from the request's arrival
        if wait > 0:
            # asyncio.wait never cancels: a client that hangs up does not stop it.
            await asyncio.wait({validation}, timeout=wait)

    def _in_flight(self, challenge: Challenge) -> AcmeError:
        """409 for a POST while a challenge of the authorization is being validated
        (Boulder's SetAuthzProcessing conflict), in RFC 8555's own type: ``malformed``, as our
        other 409s.  ``challenge`` is the one in flight."""
        log.info("challenge.in_flight", challenge_id=challenge.id, type=challenge.type)
        return AcmeError(
            problems.conflict(
                f"the authorization's {challenge.type} challenge ({challenge.id}) is already "
                "being validated; poll it (POST-as-GET) for the result instead of answering "
                "again"
            ),
            headers={"Retry-After": str(self._retry_after)},
        )

    async def run_validation(self, challenge_id: int, known: Started | None = None) -> None:
        """Validate, renewing the challenge's lease every third of it meanwhile, so another
        process takes it over only when this one is gone (``recover_stale``).  ``known``:
        the challenge, authorization and account as the request that started it read them
        (the first attempt needs no read of its own); None reads them."""
        self._running.add(challenge_id)
        renewing = asyncio.create_task(self._renew_lease(challenge_id))
        try:
            await self._validate_through_outage(challenge_id, known)
        finally:
            self._running.discard(challenge_id)
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _validate_through_outage(
        self, challenge_id: int, known: Started | None = None
    ) -> None:
        """:meth:`_validate`, run again while the database is away (a restart, a failover
        to a new primary): the challenge is still this process's (its lease is renewed
        meanwhile) and ``_validate`` starts from what is recorded, so the order goes on as
        soon as the database answers instead of waiting for the lease to lapse."""
        deadline = time.monotonic() + self._lease.total_seconds()
        while True:
            try:
                await self._validate(challenge_id, known)
            except Exception as exc:
                if not database_unavailable(exc) or time.monotonic() > deadline:
                    raise
                log.warning(
                    "challenge.database_unavailable", challenge_id=challenge_id, error=repr(exc)
                )
                known = None  # read again what is recorded
            else:
                return
            await asyncio.sleep(OUTAGE_RETRY_SECONDS)

    async def _renew_lease(self, challenge_id: int) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            try:
                if not await self._orders.renew_challenge_lease(
                    challenge_id, now=self._clock.now(), lease=self._lease
                ):
                    return  # finished (here or by a process that took it over)
            except Exception as exc:  # the database away for a moment: try again
                log.warning("challenge.lease_renewal_failed", error=repr(exc))

    async def _validate(self, challenge_id: int, known: Started | None = None) -> None:
        if known is None:
            found = await self._orders.get_challenge(challenge_id)
            if found is None or found[0].status != ChallengeStatus.PROCESSING:
                return
            challenge, authz = found
            read = await self._accounts.get(authz.account_id)
            assert read is not None
            known = Started(challenge, authz, read)
        challenge, authz, account = known
        if self._max_delay:
            await asyncio.sleep(secrets.randbelow(self._max_delay * 1000 + 1) / 1000)
        started = time.perf_counter()
        result: CheckResult | None = None
        try:
            result = await self._validator.validate(
                ChallengeRequest(
                    challenge_type=challenge.type,
                    identifier=authz.identifier,
                    wildcard=authz.wildcard,
                    token=challenge.token,
                    key_authorization=key_authorization(challenge.token, account.key_thumbprint),
                    account_uri=self._account_uri(account.id),
                )
            )
            method = {"brMethod": BR_METHODS[challenge.type], "brVersion": BR_VERSION}
            valid = result.ok
            records = [{**r.to_json(), **method} for r in result.records]
            error = None if result.ok else result.problem
        except Exception:
            log.exception("challenge.validator_crashed", challenge_id=challenge_id)
            valid, records = False, []
            error = problems.server_internal("validation failed inside the CA")
        metrics.observe_validation(
            "dcv", "all", challenge.type, result, time.perf_counter() - started
        )
        now = self._clock.now()
        outcome = ValidationOutcome(
            valid=valid,
            records=records,
            error=error,
            # The reuse period ends the authorization; a method with a shorter cap of its own
            # (BR 3.2.2.4.22: dns-persist-01, 10 days) ends it sooner.
            authz_expires_at=(
                now + min(self._reuse_period(), max_dcv_reuse(now, challenge.type))
                if valid
                else None
            ),
        )
        changed = await self._orders.finish_validation(challenge_id, outcome, now)
        if not valid and self._limits is not None:
            await self._limits.failed_validation(account.id, authz.identifier)
        log.info(
            "challenge.valid" if valid else "challenge.invalid",
            challenge_id=challenge_id,
            authz_id=authz.id,
            account_id=account.id,
            identifier=authz.identifier,
            type=challenge.type,
            orders=changed,
            problem=error.type if error else None,
        )

    async def recover_stale(self) -> int:
        """Re-run validations whose lease lapsed, or whose holder is a process on this host
        that no longer exists (a killed ``serve``, restarted), or that this process holds
        but is not running (its start committed while the request met a database outage,
        so no validation was spawned): returns how many."""
        now = self._clock.now()
        holders = await self._orders.challenge_lease_holders(host_prefix(self._holder), now=now)
        dead = dead_on_this_host(holders, self._holder)
        if dead:
            log.warning("challenge.holder_dead", holders=dead)
        ids = await self._orders.claim_stale_challenges(
            now=now,
            lease=self._lease,
            holder=self._holder,
            dead=dead,
            running=sorted(self._running),
        )
        for challenge_id in ids:
            log.warning("challenge.recovered", challenge_id=challenge_id)
            self._tasks.spawn(self.run_validation(challenge_id), name=f"validate-{challenge_id}")
        return len(ids)

    async def deactivate_authorization(self, account: Account, authz_id: int) -> Authorization:
        authz = await self._orders.get_authorization(authz_id)
        if authz is None or authz.account_id != account.id:
            raise AcmeError(problems.not_found("no such authorization"))
        if not await self._orders.deactivate_authorization(authz_id, self._clock.now()):
            # Refused by the conditional update: name the status as stored now, which a
            # request racing this one may have changed since the read above.
            now = await self._orders.get_authorization(authz_id)
            status = (now or authz).status
            raise AcmeError(
                problems.malformed(f"an authorization that is {status} cannot be deactivated")
            )
        log.info("authz.deactivated", authz_id=authz_id, account_id=account.id)
        updated = await self._orders.get_authorization(authz_id)
        assert updated is not None
        return updated


#: Reads and start attempts a challenge POST makes before it answers what is stored: each
#: failed start means another request changed the authorization meanwhile.
_START_ATTEMPTS = 3


def _processing(authz: Authorization) -> Challenge | None:
    """The authorization's challenge being validated, if any."""
    return next((c for c in authz.challenges if c.status == ChallengeStatus.PROCESSING), None)
