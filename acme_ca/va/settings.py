"""The validation authority's settings: the keys va/ reads, built once from the Config.

:meth:`VASettings.from_config` is the one place va/ sees the :class:`~acme_ca.config.Config`
(an import-linter contract keeps the other modules of va/ from importing it), so what the VA
depends on is this short list, not the CA's every key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from acme_ca.config.keys import Config


@dataclass(frozen=True)
class MpicSettings:
    """Multi-perspective corroboration (BR 3.2.2.9): where the remote perspectives are listed
    and how the primary reaches them, or the test perspectives ``serve --test`` starts."""

    test_mode: bool
    #: Production rules (the date's minimum of remotes, distinct networks): not test mode and
    #: DNSSEC required.
    strict: bool
    perspectives_file: Path | None
    client_cert: Path | None
    client_key: Path | None
    server_ca: Path | None
    timeout_seconds: int
    grace_milliseconds: int
    test_perspectives: int

    @classmethod
    def from_config(cls, config: Config) -> MpicSettings:
        return cls(
            test_mode=config.test_mode,
            strict=not config.test_mode and config.dnssec == "require",
            perspectives_file=config.mpic_perspectives_file,
            client_cert=config.mpic_client_cert,
            client_key=config.mpic_client_key,
            server_ca=config.mpic_server_ca,
            timeout_seconds=config.mpic_timeout_seconds,
            grace_milliseconds=config.mpic_grace_milliseconds,
            test_perspectives=config.test_perspectives,
        )


@dataclass(frozen=True)
class VASettings:
    """What the validation checks read: the resolver, the ports, the address policy, the
    enabled methods and the CAA issuer names (and the corroboration of :class:`MpicSettings`)."""

    nameservers: tuple[str, ...]
    dns_timeout_seconds: int
    require_dnssec: bool
    allow_loopback_validation: bool
    http01_port: int
    tlsalpn01_port: int
    https01_port: int
    caa_identities: tuple[str, ...]
    challenge_types: tuple[str, ...]
    always_valid: bool
    mpic: MpicSettings

    @classmethod
    def from_config(cls, config: Config) -> VASettings:
        return cls(
            nameservers=tuple(ns.strip() for ns in config.dns_resolver.split(",")),
            dns_timeout_seconds=config.dns_timeout_seconds,
            require_dnssec=config.dnssec == "require",
            allow_loopback_validation=config.allow_loopback_validation,
            http01_port=config.http01_port,
            tlsalpn01_port=config.tlsalpn01_port,
            https01_port=config.https01_port,
            caa_identities=tuple(config.caa_identities),
            challenge_types=tuple(config.challenge_types),
            always_valid=config.always_valid,
            mpic=MpicSettings.from_config(config),
        )
