"""``acme-ca serve --test``: the CA plus a Pebble-compatible challenge test server.

The challenge test server (DNS on 8053, management API on 8055, its own http-01 responder on
5002 and tls-alpn-01 listener on 5001 unless turned off) is what the CA resolves through in
test mode, so a harness written for Pebble and pebble-challtestsrv works unchanged. Its
management API also serves the roots and intermediates chains must verify to (``/roots/0``,
``/intermediates/0``), as Pebble's management interface does. Production code never imports
this module or ``testsrv``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog

from acme_ca.config import Config
from acme_ca.config.base import split_host_port
from acme_ca.testsrv.pebble_ca import pebble_ca, pebble_management_listener
from acme_ca.testsrv.server import BindAddress, ChallengeServerConfig, ChallengeTestServer

log = structlog.get_logger(component="acme_ca.testsrv.testmode")

TEST_MODE_BANNER = (
    "TEST MODE: not a publicly-trusted CA; validation runs against the built-in challenge "
    "test server and test-only knobs may be on"
)


def _bind(value: str) -> BindAddress:
    host, port = split_host_port(value)
    return BindAddress(host, port)


@contextlib.asynccontextmanager
async def challenge_test_server(
    config: Config, dsn: str | None = None
) -> AsyncIterator[ChallengeTestServer]:
    """Run the challenge test server and Pebble's management listener for the lifetime of
    ``serve --test``; ``dsn`` is where /cert-status-by-serial/ finds certificates."""
    ca = await pebble_ca(config.pki_path, dsn)
    http01 = None if config.challsrv_http01 == "off" else _bind(config.challsrv_http01)
    alpn = config.challsrv_tlsalpn01
    tlsalpn01 = None if alpn == "off" else _bind(alpn)
    https01 = None if config.challsrv_https01 == "off" else _bind(config.challsrv_https01)
    server = ChallengeTestServer(
        ChallengeServerConfig(
            dns=_bind(config.challsrv_dns),
            management=_bind(config.challsrv_management),
            http01=http01,
            tlsalpn01=tlsalpn01,
            https01=https01,
        ),
        ca=ca.endpoints,
    )
    async with server, pebble_management_listener(config, ca) as pebble_management:
        log.warning(
            "testmode.ready",
            banner=TEST_MODE_BANNER,
            dns=config.challsrv_dns,
            management=server.management_url,
            pebble_management=pebble_management,
            http01=config.challsrv_http01,
            https01=config.challsrv_https01,
            validates_http01_on=config.http01_port,
            tlsalpn01=config.challsrv_tlsalpn01,
            validates_tlsalpn01_on=config.tlsalpn01_port,
            nonce_reject_percent=config.nonce_reject_percent,
            validation_delay_seconds=config.validation_delay_seconds,
            always_valid=config.always_valid,
            authz_reuse_percent=config.authz_reuse_percent,
            orders_page_size=config.orders_page_size,
            deterministic=config.deterministic,
            alternate_roots=config.alternate_roots,
            chain_length=config.chain_length,
        )
        yield server
