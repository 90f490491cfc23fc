"""The registry of validation methods (va/registry.py): every method carries its BR columns,
its check and its corroboration; ``challenge_types`` switches methods on and off, and the
authorizations' challenge lists follow it (BR 3.2.2.4, SC-101, BR 3.2.2.9)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from acme_ca.clock import FixedClock
from acme_ca.config import ConfigError, load_config
from acme_ca.config.base import DEFAULT_CHALLENGE_TYPES
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.va.records import PRIMARY_PERSPECTIVE, ChallengeRequest
from acme_ca.va.registry import (
    ALL_METHODS,
    DEFAULT_METHODS,
    METHODS,
    CheckEnv,
    UnknownMethod,
    build_checks,
    enabled_methods,
)
from acme_ca.va.resolver import DnsClient, ResolverSettings
from tests.fixtures import CaFactory
from tests.support.orders import subscriber, validation_config
from tests.support.problems import ERR
from tests.support.va import local_authority, loopback_ok

KEY_AUTH = "tok.thumb"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_br_3_2_2_9_every_method_has_a_check_and_a_corroboration() -> None:
    """Structural MPIC: a registry entry cannot exist without a check the remote repeats and
    a rule for what the remote must agree on; the usual rule refuses a missing value."""
    dns = DnsClient(ResolverSettings(("127.0.0.1:9",), require_dnssec=False))
    env = CheckEnv(
        dns=dns,
        clock=FixedClock(NOW),
        perspective=PRIMARY_PERSPECTIVE,
        address_policy=loopback_ok,
        http01_port=5002,
        caa_identities=("jprs.jp",),
    )
    checks = build_checks(env, ALL_METHODS)
    assert set(checks) == set(METHODS)
    for label, entry in METHODS.items():
        assert entry.label == label == entry.dcv.label
        assert callable(checks[label].validate)
        assert entry.corroboration.repeats and entry.corroboration.agrees_on
        assert not entry.corroboration.agree(None, None)


def test_sc_101_wildcards_only_for_dns_based_methods() -> None:
    """SC-101: a wildcard is offered only the methods whose Wildcard column allows it."""
    for label in ALL_METHODS.offered(wildcard=True):
        assert METHODS[label].dcv.wildcard
    assert "http-01" not in ALL_METHODS.offered(wildcard=True)
    assert "dns-01" in ALL_METHODS.offered(wildcard=True)
    assert ALL_METHODS.offered(wildcard=False) == tuple(METHODS)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (["http-01", "nope-01"], UnknownMethod),
        (["dns-01", "dns-01"], ConfigError),
        ([], ConfigError),
    ],
    ids=["unknown", "twice", "empty"],
)
def test_challenge_types_refused(value: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        enabled_methods(value)


def test_challenge_types_default_and_order() -> None:
    """The config default is registered; the enabled order is the registry's, not the list's."""
    assert DEFAULT_METHODS.labels == DEFAULT_CHALLENGE_TYPES
    assert enabled_methods(["dns-01", "http-01"]).labels == ("http-01", "dns-01")
    config = load_config(env={"ACME_CA_CHALLENGE_TYPES": "dns-01"})
    assert config.challenge_types == ["dns-01"]
    with pytest.raises(ConfigError):
        load_config(env={"ACME_CA_CHALLENGE_TYPES": ""})


async def test_disabled_method_refused_by_the_va(srv: ChallengeTestServer) -> None:
    """The VA holds checks for the enabled methods only: a switched-off one is refused before
    any lookup."""
    va = local_authority(srv, FixedClock(NOW), methods=enabled_methods(["dns-01"]))
    srv.store.add_http01("tok", KEY_AUTH)
    result = await va.validate(
        ChallengeRequest("http-01", "example.test", False, "tok", KEY_AUTH, "acct")
    )
    assert result.problem is not None and result.problem.type == ERR + "malformed"
    assert result.records == ()
    assert srv.store.http_history("example.test") == ()


async def test_challenge_lists_follow_challenge_types(
    ca_factory: CaFactory, challsrv: ChallengeTestServer, session: aiohttp.ClientSession
) -> None:
    """With only dns-01 enabled, an authorization offers dns-01 alone; with only http-01, a
    wildcard order is refused (no enabled method may validate it) and a plain name gets
    http-01 alone."""
    ca = await ca_factory.start(**validation_config(challsrv), challenge_types=["dns-01"])
    sub = await subscriber(ca, session, challsrv)
    order = (await sub.new_order("only-dns.example.com")).body
    authz: dict[str, Any] = (await sub.get(order["authorizations"][0])).body
    assert [c["type"] for c in authz["challenges"]] == ["dns-01"]

    ca = await ca_factory.start(**validation_config(challsrv), challenge_types=["http-01"])
    sub = await subscriber(ca, session, challsrv)
    order = (await sub.new_order("only-http.example.com")).body
    authz = (await sub.get(order["authorizations"][0])).body
    assert [c["type"] for c in authz["challenges"]] == ["http-01"]
    refused = await sub.new_order("*.only-http.example.com")
    assert refused.status == 400
    assert refused.body["type"] == ERR + "rejectedIdentifier"
