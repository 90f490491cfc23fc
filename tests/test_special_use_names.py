"""Test mode's special-use names (issue 21 item 7): .test, .example, .localhost, .invalid and
single labels such as ``localhost`` are accepted in test mode only; every other name rule
(public suffixes, wildcards on a TLD, the rest of the reserved names, blocked names, syntax)
still applies, and ``special_use_names = false`` restores the production policy.
``integration/test_testmode_names.py`` issues for them through ``serve --test``.
"""

from __future__ import annotations

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme.problems import Identifier
from acme_ca.config import ConfigError, load_config
from acme_ca.ra.identifiers import (
    REASON_BLOCKED,
    REASON_INTERNAL_NAME,
    REASON_IS_PUBLIC_SUFFIX,
    REASON_TOO_FEW_LABELS,
    REASON_WILDCARD_ON_PUBLIC_SUFFIX,
    IdentifierPolicy,
)
from tests.fixtures import CaFactory
from tests.support.jws import JwsClient
from tests.support.problems import assert_problem

TEST_MODE = IdentifierPolicy(special_use_names=True, blocked_names={"blocked.test"})
PRODUCTION = IdentifierPolicy()


def reason(policy: IdentifierPolicy, name: str) -> str | None:
    return policy.rejection_reason(Identifier("dns", name))


@pytest.mark.parametrize(
    "name",
    [
        "ci.test",
        "www.app.example",
        "api.localhost",
        "nothing.invalid",
        "localhost",
        "myhost",
        "*.ci.test",
    ],
)
def test_br_7_1_2_7_12_special_use_names_accepted_in_test_mode_only(name: str) -> None:
    assert reason(TEST_MODE, name) is None
    assert reason(PRODUCTION, name) in (REASON_INTERNAL_NAME, REASON_TOO_FEW_LABELS)
    assert TEST_MODE.is_special_use(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("*.test", REASON_WILDCARD_ON_PUBLIC_SUFFIX),
        ("*.localhost", REASON_WILDCARD_ON_PUBLIC_SUFFIX),
        ("com", REASON_TOO_FEW_LABELS),  # a single label that is an ICANN TLD
        ("co.jp", REASON_IS_PUBLIC_SUFFIX),
        ("printer.local", REASON_INTERNAL_NAME),
        ("db.internal", REASON_INTERNAL_NAME),
        ("www.blocked.test", REASON_BLOCKED),
    ],
)
def test_other_name_rules_still_apply_in_test_mode(name: str, expected: str) -> None:
    assert reason(TEST_MODE, name) == expected


def test_special_use_names_key_on_in_test_mode_and_refused_outside() -> None:
    assert load_config(env={}, overrides={"test_mode": True}).special_use_names is True
    production_names = load_config(
        env={"ACME_CA_SPECIAL_USE_NAMES": "false"}, overrides={"test_mode": True}
    )
    assert production_names.special_use_names is False
    with pytest.raises(ConfigError, match="special_use_names"):
        load_config(env={"ACME_CA_SPECIAL_USE_NAMES": "true"})


async def _order(ca_factory: CaFactory, session: aiohttp.ClientSession, **changes: bool) -> int:
    ca = await ca_factory.start(clock=None, **changes)
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    assert (await client.register()).status == 201
    reply = await client.post(
        client.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": n} for n in ("ci.test", "localhost")]},
    )
    if reply.status != 201:
        assert_problem(reply, 400, "rejectedIdentifier")
    return reply.status


async def test_test_names_ordered_in_test_mode_refused_outside(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    assert await _order(ca_factory, session, test_mode=True, special_use_names=True) == 201
    assert await _order(ca_factory, session) == 400
    assert await _order(ca_factory, session, test_mode=True) == 400  # the knob left off
