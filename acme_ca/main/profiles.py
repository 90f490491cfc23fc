"""The profile catalog a process starts with (:func:`acme_ca.ra.profiles.build_catalog`), from
the configuration, ``issuers.toml`` and the enabled challenge types, for the date it starts."""

from __future__ import annotations

import asyncio

from acme_ca.ca.issuers_file import IssuerConfigError, read_issuers_file
from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.ra.profiles import ProfileCatalog, build_catalog


def _issuers(config: Config) -> dict[str, str] | None:
    """Name → purpose of the issuers of ``issuers.toml``, or None when it cannot be read here
    (a front end without the hierarchy's files: only the top-level issuers then count as
    present, and the signing worker, which opens them all, checks again)."""
    try:
        parsed = read_issuers_file(config.pki_path)
    except IssuerConfigError:
        return None
    return {name: entry.purpose for name, entry in parsed.issuers.items()}


async def profile_catalog(config: Config, clock: Clock) -> ProfileCatalog:
    """The catalog for a process starting now; raises
    :class:`~acme_ca.ra.profiles.ProfileConfigError` (a ConfigError) when a profile breaks
    the BRs in force today or names what this CA does not have."""
    issuers = await asyncio.to_thread(_issuers, config)
    return build_catalog(
        config, clock.now(), issuers=issuers, challenge_types=config.challenge_types
    )
