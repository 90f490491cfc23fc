"""Builds the validation authority from configuration: the one place va/ reads Config."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import structlog

from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.caa_lookup import CaaChecker
from acme_ca.va.dns01 import Dns01Validator
from acme_ca.va.http01 import Http01Validator, public_address_policy
from acme_ca.va.records import PRIMARY_PERSPECTIVE
from acme_ca.va.resolver import DnsClient, ResolverSettings

log = structlog.get_logger(component="acme_ca.va.setup")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def loopback_allowed_policy(address: IPAddress) -> bool:
    """Test harness policy: public, private and loopback addresses are all reachable."""
    return address.is_loopback or address.is_private or public_address_policy(address)


def build_validation_authority(config: Config, clock: Clock) -> ValidationAuthority:
    """The primary's validation authority (warns about test-only settings once)."""
    _warn_test_settings(config)
    return _authority(config, clock, PRIMARY_PERSPECTIVE, always_valid=config.always_valid)


def remote_authority_factory(
    config: Config, clock: Clock, perspective: str
) -> Callable[[], ValidationAuthority]:
    """A remote perspective's checks: the same classes as the primary's, naming
    ``perspective`` in their records.  Each call builds a fresh authority with its own DNS
    client, so no request reuses anything an earlier one learnt (BR 3.2.2.9: a retry reuses
    nothing; no cache shared with any other perspective)."""
    _warn_test_settings(config)

    def build() -> ValidationAuthority:
        return _authority(config, clock, perspective, always_valid=False)

    return build


def _warn_test_settings(config: Config) -> None:
    if config.dnssec != "require":
        log.warning(
            "va.dnssec_off",
            detail="DNS answers are not required to be DNSSEC-"
            "validated; BR 3.2.2.4 forbids this in production",
        )
    if config.allow_loopback_validation:
        log.warning(
            "va.loopback_allowed",
            detail="http-01 may connect to loopback and private addresses; test harnesses only",
        )


def _authority(
    config: Config, clock: Clock, perspective: str, *, always_valid: bool
) -> ValidationAuthority:
    dns = DnsClient(
        ResolverSettings(
            nameservers=tuple(ns.strip() for ns in config.dns_resolver.split(",")),
            timeout=float(config.dns_timeout_seconds),
            require_dnssec=config.dnssec == "require",
        )
    )
    policy = loopback_allowed_policy if config.allow_loopback_validation else public_address_policy
    return ValidationAuthority(
        Http01Validator(
            dns,
            port=config.http01_port,
            address_policy=policy,
            perspective=perspective,
            clock=clock,
        ),
        Dns01Validator(dns, perspective=perspective, clock=clock),
        CaaChecker.from_dns(dns, config.caa_identities, perspective=perspective, clock=clock),
        clock,
        always_valid=always_valid,
        on_close=dns.aclose,
    )
