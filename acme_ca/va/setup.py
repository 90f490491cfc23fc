"""Builds the validation authority from configuration: the one place va/ reads Config."""

from __future__ import annotations

import ipaddress

import structlog

from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.caa_lookup import CaaChecker
from acme_ca.va.dns01 import Dns01Validator
from acme_ca.va.http01 import Http01Validator, public_address_policy
from acme_ca.va.resolver import DnsClient, ResolverSettings

log = structlog.get_logger(component="acme_ca.va.setup")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def loopback_allowed_policy(address: IPAddress) -> bool:
    """Test harness policy: public, private and loopback addresses are all reachable."""
    return address.is_loopback or address.is_private or public_address_policy(address)


def build_validation_authority(config: Config, clock: Clock) -> ValidationAuthority:
    dns = DnsClient(
        ResolverSettings(
            nameservers=tuple(ns.strip() for ns in config.dns_resolver.split(",")),
            timeout=float(config.dns_timeout_seconds),
            require_dnssec=config.dnssec == "require",
        )
    )
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
    policy = loopback_allowed_policy if config.allow_loopback_validation else public_address_policy
    return ValidationAuthority(
        Http01Validator(dns, port=config.http01_port, address_policy=policy, clock=clock),
        Dns01Validator(dns, clock=clock),
        CaaChecker.from_dns(dns, config.caa_identities, clock=clock),
        clock,
        always_valid=config.always_valid,
    )
