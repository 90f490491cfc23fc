"""The profile catalog a process starts with (:func:`acme_ca.ra.profiles.build_catalog`), from
the configuration, ``issuers.toml`` and the enabled challenge types, for the date it starts."""

from __future__ import annotations

import asyncio

from acme_ca.ca.issuers_file import IssuerConfigError, read_issuers_file
from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.ra.profiles import ProfileCatalog, build_catalog


def _issuer_names(config: Config) -> list[str] | None:
    """The issuers of ``issuers.toml``, or None when it cannot be read here (a front end
    without the hierarchy's files: only the top-level issuers then count as present, and the
    signing worker, which opens them all, checks again)."""
    try:
        return list(read_issuers_file(config.pki_path).issuers)
    except IssuerConfigError:
        return None


async def profile_catalog(config: Config, clock: Clock) -> ProfileCatalog:
    """The catalog for a process starting now; raises
    :class:`~acme_ca.ra.profiles.ProfileConfigError` (a ConfigError) when a profile breaks
    the BRs in force today or names what this CA does not have."""
    names = await asyncio.to_thread(_issuer_names, config)
    return build_catalog(
        config, clock.now(), issuer_names=names, challenge_types=config.challenge_types
    )
