"""Which profiles this CA offers, checked against the BRs for the day it starts (issue 15).

:func:`build_catalog` turns the configured profile table (:mod:`acme_ca.profiles`) into the
:class:`ProfileCatalog` the front end, the RA and the signing worker share.  It refuses to
start (:class:`ProfileConfigError`, naming the rule) when a profile's configured validity
exceeds the BR 6.3.2 maximum or its configured authorization reuse the BR 4.2.1 maximum for
that day, when a short-lived-only omission is made by a longer profile (BR 7.1.2.11.2), or
when a profile names a challenge type, CT policy or issuer this CA does not have.  Values a
profile inherits from the top-level keys keep their meaning there: capped at the BR limit of
the issuance date, never refused.

A shipped profile nobody configured whose issuers are missing from ``issuers.toml`` (``ov``
before ``acme-ca init`` makes the OV issuing CAs) is not refused: it is *unavailable*, left out
of the directory, and an order naming it gets ``invalidProfile`` saying why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import structlog

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError, Problem
from acme_ca.br import max_dcv_reuse
from acme_ca.ca.ct.policy import CT_POLICIES
from acme_ca.ca.profile import max_validity
from acme_ca.clock import Clock
from acme_ca.config.base import ConfigError
from acme_ca.profiles import SHIPPED, SHORT_LIVED, Profile, ProfileSpec
from acme_ca.ra.settings import CatalogSettings
from acme_ca.va.registry import BR_METHODS

log = structlog.get_logger(component="acme_ca.ra.profiles")

RULE_VALIDITY: Final = "BR 6.3.2 validity"
RULE_REUSE: Final = "BR 4.2.1 validation reuse"
RULE_REVOCATION_POINTERS: Final = "BR 7.1.2.11.2 CRL distribution point"


class ProfileConfigError(ConfigError):
    """A profile the CA must not issue under on this date: ``serve``/``worker`` do not start."""


def _days(delta: timedelta) -> str:
    return f"{delta / timedelta(days=1):g} days"


def _date_problems(spec: ProfileSpec, profile: Profile, at: datetime) -> list[str]:
    """What the BRs in force at ``at`` forbid in the profile's own (configured) values."""
    where = f"profiles.{spec.name}"
    found = []
    configured = spec.validity_days is not None or spec.validity_hours is not None
    limit = max_validity(at)
    if configured and profile.validity is not None and profile.validity > limit:
        found.append(
            f"{where}: validity {_days(profile.validity)} exceeds the {RULE_VALIDITY} maximum "
            f"of {limit.days} days for certificates issued on {at.date().isoformat()}"
        )
    reuse_limit = max_dcv_reuse(at)
    if spec.authz_reuse_days is not None and profile.authz_reuse > reuse_limit:
        found.append(
            f"{where}: authz_reuse_days {profile.authz_reuse.days} exceeds the {RULE_REUSE} "
            f"maximum of {reuse_limit.days} days on {at.date().isoformat()}"
        )
    short_lived = profile.validity is not None and profile.validity <= SHORT_LIVED
    if not profile.crl_url and (profile.ocsp_url or not short_lived):
        found.append(
            f"{where}: crl_url = false is allowed only for short-lived certificates (at most "
            f"7 days) without an OCSP URL ({RULE_REVOCATION_POINTERS})"
        )
    return found


def _name_problems(profile: Profile, challenge_types: Collection[str]) -> list[str]:
    where = f"profiles.{profile.name}"
    found = []
    if profile.ct_policy not in CT_POLICIES:
        found.append(
            f"{where}.ct_policy {profile.ct_policy!r} is not one of {', '.join(CT_POLICIES)}"
        )
    for challenge in profile.challenges or ():
        if challenge not in challenge_types:
            found.append(
                f"{where}.challenges: {challenge!r} is not an enabled challenge type "
                f"({', '.join(challenge_types)})"
            )
    return found


@dataclass(frozen=True)
class ProfileCatalog:
    """The profiles on offer (and why the others are not), and the default."""

    offered: Mapping[str, Profile]
    #: Name → why it is not offered (withdrawn, or its issuers are missing).
    unavailable: Mapping[str, str]
    default: str

    @property
    def default_profile(self) -> Profile:
        return self.offered[self.default]

    def directory(self) -> dict[str, str]:
        """``meta.profiles``: name → description (draft-ietf-acme-profiles §3)."""
        return {name: p.description for name, p in self.offered.items()}

    def get(self, name: str | None) -> Profile | None:
        """The offered profile of an order (None: its profile is no longer offered); orders
        stored before profiles existed have the default's."""
        return self.offered.get(self.default if name is None else name)

    def requested(self, name: str | None) -> Profile:
        """newOrder's ``profile``: the default when absent; ``invalidProfile`` for a name not
        on offer (draft-ietf-acme-profiles §4)."""
        if name is None:
            return self.default_profile
        profile = self.offered.get(name)
        if profile is not None:
            return profile
        offered = ", ".join(self.offered)
        reason = self.unavailable.get(name)
        if reason is not None:
            raise AcmeError(
                problems.invalid_profile(
                    f"profile {name!r} is not offered: {reason}; offered: {offered}"
                )
            )
        raise AcmeError(
            problems.invalid_profile(f"unknown profile {name!r}; this CA offers: {offered}")
        )

    def for_finalize(self, name: str | None) -> Profile:
        """The order's profile at finalize: withdrawn since newOrder → ``invalidProfile``
        (PROF-2)."""
        profile = self.get(name)
        if profile is None:
            raise AcmeError(
                problems.invalid_profile(
                    f"the order's profile {name!r} has been withdrawn since the order was "
                    "created; create a new order"
                )
            )
        return profile


def profile_challenges(profile: Profile, offered: Sequence[str]) -> tuple[str, ...]:
    """The challenge types an authorization of an order under ``profile`` gets: those the CA
    offers for the name (``offered``, in its order) that the profile allows."""
    if profile.challenges is None:
        return tuple(offered)
    return tuple(kind for kind in offered if kind in profile.challenges)


#: The OV gate for an account at a time: None when the account may use an organization
#: profile now; otherwise the problem (``unauthorized`` naming the reason: organization
#: revoked, vetting older than BR 4.2.1 allows).
OrganizationCheck = Callable[[int, datetime], Awaitable[Problem | None]]


class AccountGate:
    """Which accounts may use a profile (``accounts``): every account, or only those bound by
    their EAB key to a vetted organization (CP 3.2.2.1(2))."""

    def __init__(
        self,
        bound: Callable[[int], Awaitable[bool]] | None,
        organization_check: OrganizationCheck | None,
        clock: Clock,
    ) -> None:
        self._bound = bound
        self._check = organization_check
        self._clock = clock

    async def check(self, profile: Profile, account_id: int) -> None:
        """Raise ``invalidProfile`` when the account may not use the profile at all (bound to
        no organization: draft-ietf-acme-profiles §4), ``unauthorized`` when its organization
        may not be used now (revoked, vetting too old for BR 4.2.1)."""
        if profile.accounts == "all":
            return
        if self._bound is None or self._check is None or not await self._bound(account_id):
            log.info("profile.refused", profile=profile.name, account_id=account_id)
            raise AcmeError(
                problems.invalid_profile(
                    f"profile {profile.name!r} is only for accounts bound by External Account "
                    "Binding to an organization the CA has vetted (CP 3.2.2.1); register an "
                    "account with the EAB key the CA issued for the organization"
                )
            )
        problem = await self._check(account_id, self._clock.now())
        if problem is not None:
            raise AcmeError(problem)


def build_catalog(
    settings: CatalogSettings,
    at: datetime,
    *,
    issuers: Mapping[str, str] | None,
    challenge_types: Collection[str] | None = None,
) -> ProfileCatalog:
    """The catalog for a CA starting at ``at``; raises :class:`ProfileConfigError` naming every
    refusal.  ``issuers``: name → ``purpose`` (``dv``/``ov``) of each issuer of
    ``issuers.toml`` (None when this process cannot read it: then only the top-level
    ``rsa_issuer``/``ecdsa_issuer`` count as present, as DV issuers).  A profile's issuers must
    exist and serve its validation level (an OV profile signs only with OV issuers, CP 1.1).
    ``challenge_types``: the enabled challenge types (default: every one the VA knows)."""
    table = settings.table
    specs: dict[str, ProfileSpec] = dict(SHIPPED)
    specs.update((s.name, s) for s in settings.configured)
    configured = {s.name for s in settings.configured} | {settings.default_profile}
    known_issuers = (
        dict(issuers)
        if issuers is not None
        else {settings.rsa_issuer: "dv", settings.ecdsa_issuer: "dv"}
    )
    enabled_challenges = tuple(challenge_types if challenge_types is not None else BR_METHODS)
    refusals: list[str] = []
    offered: dict[str, Profile] = {}
    unavailable: dict[str, str] = {}
    for name, profile in table.items():
        if not profile.enabled:
            unavailable[name] = "the CA has withdrawn it"
            continue
        refusals += _date_problems(specs[name], profile, at)
        refusals += _name_problems(profile, enabled_challenges)
        wrong = [
            f"{i} is a {known_issuers[i]} issuer"
            for i in profile.issuer_names()
            if i in known_issuers and known_issuers[i] != profile.validation.lower()
        ]
        if wrong:
            refusals.append(
                f"profiles.{name}: a {profile.validation} profile needs "
                f"{profile.validation.lower()} issuers: {', '.join(wrong)} (CP 1.1)"
            )
        missing = [i for i in profile.issuer_names() if i not in known_issuers]
        if missing:
            reason = f"its issuers {', '.join(missing)} are not in issuers.toml"
            if name in configured:
                refusals.append(f"profiles.{name}: {reason}")
            else:
                unavailable[name] = reason
                log.warning("profile.unavailable", profile=name, reason=reason)
            continue
        offered[name] = profile
    if refusals:
        raise ProfileConfigError(
            f"refusing to start: {len(refusals)} profile problem(s) on {at.date().isoformat()}:\n"
            + "\n".join(f"  {r}" for r in refusals)
        )
    log.info(
        "profiles.loaded",
        offered=list(offered),
        unavailable=unavailable,
        default=settings.default_profile,
    )
    return ProfileCatalog(
        offered=offered, unavailable=unavailable, default=settings.default_profile
    )
