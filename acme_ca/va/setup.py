"""Builds the validation authority from its settings (:class:`~acme_ca.va.settings.VASettings`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

import structlog

from acme_ca.clock import Clock
from acme_ca.va.addresses import public_address_policy
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.caa_lookup import CaaChecker
from acme_ca.va.dns_tcp import TcpPool
from acme_ca.va.records import PRIMARY_PERSPECTIVE
from acme_ca.va.registry import (
    ALL_METHODS,
    CheckEnv,
    EnabledMethods,
    build_checks,
    enabled_methods,
)
from acme_ca.va.resolver import (
    TCP_IDLE_TIMEOUT,
    TCP_POOL_SIZE,
    DnsClient,
    Nameserver,
    ResolverSettings,
)
from acme_ca.va.settings import VASettings

log = structlog.get_logger(component="acme_ca.va.setup")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def loopback_allowed_policy(address: IPAddress) -> bool:
    """Test harness policy: public, private and loopback addresses are all reachable."""
    return address.is_loopback or address.is_private or public_address_policy(address)


def build_validation_authority(settings: VASettings, clock: Clock) -> ValidationAuthority:
    """The primary's validation authority for the enabled methods (``challenge_types``;
    :class:`~acme_ca.config.ConfigError` for an unknown one); warns about test-only settings
    once."""
    _warn_test_settings(settings)
    return _authority(
        settings,
        clock,
        PRIMARY_PERSPECTIVE,
        enabled_methods(settings.challenge_types),
        always_valid=settings.always_valid,
    )


def remote_authority_factory(
    settings: VASettings, clock: Clock, perspective: str
) -> Callable[[], ValidationAuthority]:
    """A remote perspective's checks: the same classes as the primary's, naming
    ``perspective`` in their records.  Each call builds a fresh authority with its own DNS
    client, so no request reuses anything an earlier one learnt (BR 3.2.2.9: a retry reuses
    nothing; no cache shared with any other perspective).  A remote can repeat every method of
    the registry: the primary's ``challenge_types`` decides what is offered.

    Only the TCP connections to the resolver are kept between requests (issue 20: opening
    and closing one per request was a large share of a remote's CPU); they carry no answer.
    """
    _warn_test_settings(settings)
    pools = {ns: TcpPool(TCP_POOL_SIZE, TCP_IDLE_TIMEOUT) for ns in _resolver(settings).parsed}

    def build() -> ValidationAuthority:
        return _authority(
            settings, clock, perspective, ALL_METHODS, always_valid=False, tcp_pools=pools
        )

    return build


def _warn_test_settings(settings: VASettings) -> None:
    if not settings.require_dnssec:
        log.warning(
            "va.dnssec_off",
            detail="DNS answers are not required to be DNSSEC-"
            "validated; BR 3.2.2.4 forbids this in production",
        )
    if settings.allow_loopback_validation:
        log.warning(
            "va.loopback_allowed",
            detail="http-01 and tls-alpn-01 may connect to loopback and private addresses; "
            "test harnesses only",
        )


def _resolver(settings: VASettings) -> ResolverSettings:
    return ResolverSettings(
        nameservers=settings.nameservers,
        timeout=float(settings.dns_timeout_seconds),
        require_dnssec=settings.require_dnssec,
    )


def _authority(
    settings: VASettings,
    clock: Clock,
    perspective: str,
    methods: EnabledMethods,
    *,
    always_valid: bool,
    tcp_pools: Mapping[Nameserver, TcpPool] | None = None,
) -> ValidationAuthority:
    dns = DnsClient(_resolver(settings), tcp_pools=tcp_pools)
    policy = (
        loopback_allowed_policy if settings.allow_loopback_validation else public_address_policy
    )
    env = CheckEnv(
        dns=dns,
        clock=clock,
        perspective=perspective,
        address_policy=policy,
        http01_port=settings.http01_port,
        tlsalpn01_port=settings.tlsalpn01_port,
        https01_port=settings.https01_port,
        caa_identities=settings.caa_identities,
    )
    return ValidationAuthority(
        build_checks(env, methods),
        CaaChecker.from_dns(dns, settings.caa_identities, perspective=perspective, clock=clock),
        clock,
        always_valid=always_valid,
        on_close=dns.aclose,
    )
