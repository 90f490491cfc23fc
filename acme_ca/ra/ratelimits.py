"""Rate limits, in PostgreSQL (docs/operations.md, "Rate limits").

Five limits, as Let's Encrypt has them, each a GCRA bucket per key (db/ratelimits.py):

========================  ============================  ===========================  ==========
limit                     key                           charged                      default
========================  ============================  ===========================  ==========
new_accounts_per_ip_range IPv4 /32, IPv6 /48 of source  account created              10 / 3 h
new_orders_per_account    account id                    newOrder                     300 / 3 h
certificates_per_domain   registered domain (PSL)       finalize, per domain         50 / 7 d
duplicate_certificates    SHA-256 of the sorted names   finalize                     5 / 7 d
failed_validations        account id : hostname         failed validation            5 / 1 h
========================  ============================  ===========================  ==========

A refusal is ``rateLimited`` (429) with ``Retry-After`` (when one more request fits) and a
detail naming the limit, the key and when the bucket is full again.  An order that replaces
a certificate (ARI ``replaces``, RFC 9773) is exempt from ``certificates_per_domain``, as at
Let's Encrypt.  ``failed_validations`` is checked when a client starts a challenge and charged
when a validation fails.  Overrides per key: ``acme-ca admin limits set|list|clear``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Final

import structlog

from acme_ca import metrics
from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError
from acme_ca.clock import Clock
from acme_ca.db.ratelimits import Decision, RateLimitRepository, Spend
from acme_ca.psl import registrable_domain

log = structlog.get_logger(component="acme_ca.ra.ratelimits")


class Limit(StrEnum):
    NEW_ACCOUNTS_PER_IP_RANGE = "new_accounts_per_ip_range"
    NEW_ORDERS_PER_ACCOUNT = "new_orders_per_account"
    CERTIFICATES_PER_DOMAIN = "certificates_per_domain"
    DUPLICATE_CERTIFICATES = "duplicate_certificates"
    FAILED_VALIDATIONS = "failed_validations"


@dataclass(frozen=True)
class LimitSpec:
    """``count`` requests per ``period``; ``what`` names the thing counted, for the detail."""

    count: int
    period: timedelta
    what: str


DEFAULT_LIMITS: Final[dict[Limit, LimitSpec]] = {
    Limit.NEW_ACCOUNTS_PER_IP_RANGE: LimitSpec(10, timedelta(hours=3), "new accounts"),
    Limit.NEW_ORDERS_PER_ACCOUNT: LimitSpec(300, timedelta(hours=3), "new orders"),
    Limit.CERTIFICATES_PER_DOMAIN: LimitSpec(50, timedelta(days=7), "certificates"),
    Limit.DUPLICATE_CERTIFICATES: LimitSpec(
        5, timedelta(days=7), "certificates for this exact set of names"
    ),
    Limit.FAILED_VALIDATIONS: LimitSpec(5, timedelta(hours=1), "failed validations"),
}


class BadLimitKey(ValueError):
    """An operator's key that does not name a bucket of the limit."""


def address_range(source: str) -> str:
    """The /32 of an IPv4 source, the /48 of an IPv6 one (its network, as text)."""
    address = ipaddress.ip_address(source.strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 32 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def domain_of(name: str) -> str:
    """The registered domain a name counts against (the name itself for an IP address or a
    name under no known public suffix)."""
    bare = name.lower().removeprefix("*.").rstrip(".")
    return registrable_domain(bare) or bare


def name_set_key(names: Iterable[str]) -> str:
    """The duplicate-certificate key: SHA-256 of the sorted, lower-cased, unique names."""
    unique = sorted({n.lower().rstrip(".") for n in names})
    return hashlib.sha256(",".join(unique).encode()).hexdigest()


def bucket_key(limit: Limit, value: str) -> str:
    """An operator's spelling of a key (``admin limits``) as the bucket's key: an account id,
    a domain, comma-separated names, ``ACCOUNT:HOSTNAME`` or an address."""
    try:
        if limit is Limit.NEW_ORDERS_PER_ACCOUNT:
            return str(int(value))
        if limit is Limit.CERTIFICATES_PER_DOMAIN:
            return domain_of(value)
        if limit is Limit.DUPLICATE_CERTIFICATES:
            return name_set_key(n.strip() for n in value.split(",") if n.strip())
        if limit is Limit.FAILED_VALIDATIONS:
            account, _, hostname = value.partition(":")
            return f"{int(account)}:{hostname.lower().rstrip('.')}"
        return address_range(value)
    except ValueError as exc:
        raise BadLimitKey(f"{limit}: {value!r} is not a key of this limit ({exc})") from None


class RateLimiter:
    """Checks and charges the limits of :data:`DEFAULT_LIMITS` (or ``limits``)."""

    def __init__(
        self,
        repository: RateLimitRepository,
        clock: Clock,
        limits: dict[Limit, LimitSpec] | None = None,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._limits = dict(DEFAULT_LIMITS if limits is None else limits)

    def _spend(self, limit: Limit, key: str) -> Spend:
        spec = self._limits[limit]
        return Spend(limit, key, spec.count, int(spec.period.total_seconds()))

    async def new_account(self, source: str | None) -> None:
        """Charge the source's address range for an account about to be created."""
        if not source:
            return  # a Unix socket or an unknown peer: nothing to count against
        try:
            key = address_range(source)
        except ValueError:
            return
        await self._charge([self._spend(Limit.NEW_ACCOUNTS_PER_IP_RANGE, key)])

    async def new_order(self, account_id: int) -> None:
        await self._charge([self._spend(Limit.NEW_ORDERS_PER_ACCOUNT, str(account_id))])

    async def issuance(self, names: Sequence[str], *, replaces: bool) -> None:
        """Charge a certificate about to be queued: its registered domains (not for an ARI
        renewal) and its exact name set."""
        spends = [self._spend(Limit.DUPLICATE_CERTIFICATES, name_set_key(names))]
        if not replaces:
            domains = dict.fromkeys(domain_of(n) for n in names)
            spends += [self._spend(Limit.CERTIFICATES_PER_DOMAIN, d) for d in domains]
        await self._charge(spends)

    async def check_failed_validations(self, account_id: int, hostname: str) -> None:
        """Refuse to start a validation for a name this account failed too often lately."""
        key = f"{account_id}:{hostname.lower()}"
        spend = self._spend(Limit.FAILED_VALIDATIONS, key)
        started = time.perf_counter()
        decisions = await self._repository.check([spend], self._clock.now())
        self._refuse_if_denied(decisions, started)

    async def failed_validation(self, account_id: int, hostname: str) -> None:
        """Count a failed validation (never raises: the failure is already recorded)."""
        key = f"{account_id}:{hostname.lower()}"
        try:
            await self._repository.spend(
                [self._spend(Limit.FAILED_VALIDATIONS, key)], self._clock.now()
            )
        except Exception as exc:
            log.warning("ratelimits.charge_failed", limit=Limit.FAILED_VALIDATIONS, error=repr(exc))

    async def purge(self) -> int:
        return await self._repository.purge(self._clock.now())

    async def _charge(self, spends: list[Spend]) -> None:
        started = time.perf_counter()
        decisions = await self._repository.spend(spends, self._clock.now())
        if not all(d.allowed for d in decisions):
            await self._repository.refund(decisions)  # the refused request costs nothing
        self._refuse_if_denied(decisions, started)

    def _refuse_if_denied(self, decisions: Sequence[Decision], started: float) -> None:
        seconds = time.perf_counter() - started
        for d in decisions:
            metrics.observe_rate_limit(d.limit, d.allowed, seconds)
        denied = [d for d in decisions if not d.allowed]
        if denied:
            raise self._refusal(denied[0])

    def _refusal(self, d: Decision) -> AcmeError:
        now = self._clock.now()
        what = self._limits[Limit(d.limit)].what
        period = _span(d.period_seconds)
        if d.count == 0:
            retry = d.period_seconds
            detail = (
                f"{what} are not allowed for {d.key} (limit {d.limit} overridden to 0 per "
                f"{period}); ask the CA's operators"
            )
        else:
            emission = d.period_seconds / d.count
            next_at = max(d.tat, now) + timedelta(seconds=emission - d.period_seconds)
            retry = max(1, int((next_at - now).total_seconds() + 0.999))
            reset = max(d.tat, now).replace(microsecond=0).isoformat()
            detail = (
                f"too many {what} for {d.key}: at most {d.count} per {period} (limit "
                f"{d.limit}); retry after {retry} s, fully reset at {reset}"
            )
        log.info("ratelimits.refused", limit=d.limit, key=d.key, retry_after=retry)
        return AcmeError(problems.rate_limited(detail), headers={"Retry-After": str(retry)})


def _span(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day(s)"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hour(s)"
    return f"{seconds} s"
