"""The VA as the VA tests build it: production's address policy plus loopback, against the
challenge test server's DNS and http-01 port."""

from __future__ import annotations

from acme_ca.clock import Clock
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.va.addresses import public_address_policy
from acme_ca.va.authority import ValidationAuthority
from acme_ca.va.caa_lookup import CaaChecker
from acme_ca.va.records import PRIMARY_PERSPECTIVE
from acme_ca.va.registry import ALL_METHODS, CheckEnv, EnabledMethods, build_checks
from acme_ca.va.resolver import DnsClient, IPAddress, ResolverSettings


def loopback_ok(address: IPAddress) -> bool:
    """Production policy plus loopback, so tests can serve on 127.0.0.1."""
    return address.is_loopback or public_address_policy(address)


def srv_dns(
    srv: ChallengeTestServer, *, require_dnssec: bool = False, tcp: bool = True
) -> DnsClient:
    """A DNS client asking only ``srv``'s DNS server: one attempt of 2 s, no DNSSEC unless
    asked, over TCP (production's default) unless asked for UDP."""
    return DnsClient(
        ResolverSettings(
            (f"127.0.0.1:{srv.dns_port}",),
            timeout=2.0,
            attempts=1,
            require_dnssec=require_dnssec,
            tcp=tcp,
        )
    )


def local_authority(
    srv: ChallengeTestServer,
    clock: Clock,
    *,
    always_valid: bool = False,
    methods: EnabledMethods = ALL_METHODS,
    tlsalpn01_port: int | None = None,
) -> ValidationAuthority:
    """A ValidationAuthority with every registered method (or ``methods``), resolving
    through ``srv`` (no DNSSEC) and connecting to its http-01 port and to its tls-alpn-01
    listener (or ``tlsalpn01_port``)."""
    dns = srv_dns(srv)
    assert srv.http01_port is not None
    env = CheckEnv(
        dns=dns,
        clock=clock,
        perspective=PRIMARY_PERSPECTIVE,
        address_policy=loopback_ok,
        http01_port=srv.http01_port,
        tlsalpn01_port=tlsalpn01_port or srv.tlsalpn01_port or 443,
        caa_identities=("jprs.jp",),
    )
    return ValidationAuthority(
        build_checks(env, methods),
        CaaChecker.from_dns(dns, clock=clock),
        clock,
        always_valid=always_valid,
    )
