"""The profile catalog a process starts with (:func:`acme_ca.ra.profiles.build_catalog`), from
the configuration, ``issuers.toml`` and the enabled challenge types, for the date it starts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.ca.issuers_file import IssuerConfigError, read_issuers_file
from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.ra.profiles import ProfileCatalog, ProfileConfigError, build_catalog
from acme_ca.ra.settings import CatalogSettings


def _issuers(config: Config) -> dict[str, str] | None:
    """Name → purpose of the issuers of ``issuers.toml``, or None when it cannot be read here
    (a front end without the hierarchy's files: only the top-level issuers then count as
    present, and the signing worker, which opens them all, checks again)."""
    try:
        parsed = read_issuers_file(config.pki_path)
    except IssuerConfigError:
        return None
    return {name: entry.purpose for name, entry in parsed.issuers.items()}


def profiles_report(config: Config, at: datetime) -> dict[str, JsonValue]:
    """For ``acme-ca check [--at DATE]``: whether serve and worker would start with these
    profiles at ``at`` (the same checks), what they would offer and why not the others."""
    try:
        catalog = build_catalog(
            CatalogSettings.from_config(config),
            at,
            issuers=_issuers(config),
            challenge_types=config.challenge_types,
        )
    except ProfileConfigError as exc:
        return {"ok": False, "problem": str(exc)}
    return {
        "ok": True,
        "default": catalog.default,
        "offered": list(catalog.offered),
        "unavailable": dict(catalog.unavailable),
    }


def render_profiles(report: Mapping[str, JsonValue]) -> str:
    if not report["ok"]:
        return f"profiles: {report['problem']}\n"
    unavailable = report["unavailable"]
    assert isinstance(unavailable, dict) and isinstance(report["offered"], list)
    lines = [
        f"profiles: ok, offered {', '.join(map(str, report['offered']))} (default "
        f"{report['default']})"
    ]
    lines += [f"  {name}: not offered, {why}" for name, why in unavailable.items()]
    return "\n".join(lines) + "\n"


async def profile_catalog(config: Config, clock: Clock) -> ProfileCatalog:
    """The catalog for a process starting now; raises
    :class:`~acme_ca.ra.profiles.ProfileConfigError` (a ConfigError) when a profile breaks
    the BRs in force today or names what this CA does not have."""
    issuers = await asyncio.to_thread(_issuers, config)
    return build_catalog(
        CatalogSettings.from_config(config),
        clock.now(),
        issuers=issuers,
        challenge_types=config.challenge_types,
    )
