"""The validation authority: method check, then CAA, records combined (BR §3.2.2.4, §3.2.2.8).

Runs against the challenge test server's DNS and http-01 responder on 127.0.0.1, with an
address policy that lets the http-01 check connect to loopback.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest

from acme_ca.clock import FixedClock
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.testsrv.store import CaaPolicy
from acme_ca.va.authority import (
    ALWAYS_VALID_NOTE,
    ValidationAuthority,
    dns01_txt_value,
    key_authorization,
)
from acme_ca.va.records import ChallengeRequest
from tests.support.problems import ERR
from tests.support.va import local_authority

TOKEN = "DGyRejmCefe7v4NfDGDKfA"
THUMBPRINT = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
KEY_AUTH = f"{TOKEN}.{THUMBPRINT}"
ACCOUNT = "https://acme.jprs.test/acme/acct/1"
NAME = "example.test"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def va(srv: ChallengeTestServer) -> ValidationAuthority:
    return local_authority(srv, FixedClock(NOW))


def caa_queries(srv: ChallengeTestServer, name: str = NAME) -> int:
    return sum(1 for e in srv.store.dns_history(name) if e.qtype == 257)


def test_acme_chal_4_key_authorization() -> None:
    assert key_authorization(TOKEN, THUMBPRINT) == KEY_AUTH


def test_acme_chal_6_txt_value_is_unpadded_sha256() -> None:
    digest = hashlib.sha256(KEY_AUTH.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert dns01_txt_value(KEY_AUTH) == expected
    assert len(expected) == 43


async def test_http01_then_caa_allowed(srv: ChallengeTestServer, va: ValidationAuthority) -> None:
    srv.store.add_http01(TOKEN, KEY_AUTH)
    srv.store.add_caa(NAME, [CaaPolicy("issue", "jprs.jp; validationmethods=http-01")])
    result = await va.validate(ChallengeRequest("http-01", NAME, False, TOKEN, KEY_AUTH, ACCOUNT))
    assert result.ok, result.problem
    assert [r.method for r in result.records] == ["http-01", "caa"]
    assert result.observed == KEY_AUTH
    assert all(r.at == NOW for r in result.records)
    body = json.loads(json.dumps(result.to_json()))
    assert body["ok"] is True and len(body["records"]) == 2


async def test_dns01_then_caa_allowed(srv: ChallengeTestServer, va: ValidationAuthority) -> None:
    srv.store.set_txt(f"_acme-challenge.{NAME}", dns01_txt_value(KEY_AUTH))
    result = await va.validate(ChallengeRequest("dns-01", NAME, True, TOKEN, KEY_AUTH, ACCOUNT))
    assert result.ok, result.problem
    assert [r.method for r in result.records] == ["dns-01", "caa", "caa"]


async def test_caa_denial_after_method_passed(
    srv: ChallengeTestServer, va: ValidationAuthority
) -> None:
    srv.store.add_http01(TOKEN, KEY_AUTH)
    srv.store.add_caa(NAME, [CaaPolicy("issue", "other-ca.example")])
    result = await va.validate(ChallengeRequest("http-01", NAME, False, TOKEN, KEY_AUTH, ACCOUNT))
    assert not result.ok and result.problem is not None
    assert result.problem.type == ERR + "caa"
    assert [r.method for r in result.records] == ["http-01", "caa"]
    assert result.observed == KEY_AUTH


async def test_caa_13_method_not_listed(srv: ChallengeTestServer, va: ValidationAuthority) -> None:
    srv.store.set_txt(f"_acme-challenge.{NAME}", dns01_txt_value(KEY_AUTH))
    srv.store.add_caa(NAME, [CaaPolicy("issue", "jprs.jp; validationmethods=http-01")])
    result = await va.validate(ChallengeRequest("dns-01", NAME, False, TOKEN, KEY_AUTH, ACCOUNT))
    assert result.problem is not None and result.problem.type == ERR + "caa"


async def test_method_failure_skips_caa(srv: ChallengeTestServer, va: ValidationAuthority) -> None:
    # Nothing published: the responder answers an unknown token 200 with an empty body, as
    # pebble-challtestsrv does (f283596), which is not the key authorization.
    result = await va.validate(ChallengeRequest("http-01", NAME, False, TOKEN, KEY_AUTH, ACCOUNT))
    assert result.problem is not None and result.problem.type == ERR + "incorrectResponse"
    assert [r.method for r in result.records] == ["http-01"]
    assert caa_queries(srv) == 0


async def test_br_dcv_5_http01_wildcard_refused(
    srv: ChallengeTestServer, va: ValidationAuthority
) -> None:
    srv.store.add_http01(TOKEN, KEY_AUTH)
    result = await va.validate(ChallengeRequest("http-01", NAME, True, TOKEN, KEY_AUTH, ACCOUNT))
    assert result.problem is not None and result.problem.type == ERR + "unauthorized"
    assert srv.store.http_history(NAME) == ()


@pytest.mark.parametrize(
    ("challenge_type", "key_auth", "expected"),
    [
        ("unknown-01", KEY_AUTH, "malformed"),
        ("http-01", f"other-token.{THUMBPRINT}", "serverInternal"),
    ],
    ids=["unsupported-type", "foreign-key-authorization"],
)
async def test_refused_before_any_lookup(
    srv: ChallengeTestServer,
    va: ValidationAuthority,
    challenge_type: str,
    key_auth: str,
    expected: str,
) -> None:
    result = await va.validate(
        ChallengeRequest(challenge_type, NAME, False, TOKEN, key_auth, ACCOUNT)
    )
    assert result.problem is not None and result.problem.type == ERR + expected
    assert result.records == ()
    assert srv.store.dns_history(NAME) == ()


async def test_always_valid_switch(srv: ChallengeTestServer) -> None:
    va = local_authority(srv, FixedClock(NOW), always_valid=True)
    srv.store.add_caa(NAME, [CaaPolicy("issue", "other-ca.example")])
    result = await va.validate(ChallengeRequest("dns-01", NAME, False, TOKEN, KEY_AUTH, ACCOUNT))
    assert result.ok
    (record,) = result.records
    assert record.response == ALWAYS_VALID_NOTE
    assert record.method == "dns-01"
    assert srv.store.dns_history(NAME) == ()


async def test_always_valid_defaults_off(srv: ChallengeTestServer) -> None:
    assert local_authority(srv, FixedClock(NOW)).always_valid is False
