"""The RA's settings read from the Config: the one place ra/ sees it.

The RA's authorities get their numbers (lifetimes, reuse, waits, name policy) as constructor
arguments from ``main/app.py``; what is left is the profile catalog's input,
:class:`CatalogSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from acme_ca.config.keys import Config
from acme_ca.profiles import Profile, ProfileSpec


@dataclass(frozen=True)
class CatalogSettings:
    """What :func:`acme_ca.ra.profiles.build_catalog` checks and offers: every profile
    (resolved over the top-level keys it inherits), the tables the operator wrote, the default
    and the top-level issuers."""

    table: Mapping[str, Profile]
    #: The ``[profiles.<name>]`` tables of the configuration (each changes or adds one).
    configured: tuple[ProfileSpec, ...]
    default_profile: str
    rsa_issuer: str
    ecdsa_issuer: str

    @classmethod
    def from_config(cls, config: Config) -> CatalogSettings:
        return cls(
            table=config.profile_table,
            configured=config.profiles,
            default_profile=config.default_profile,
            rsa_issuer=config.rsa_issuer,
            ecdsa_issuer=config.ecdsa_issuer,
        )
