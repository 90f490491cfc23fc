"""CAA end to end through DNS (section 2, CAA-*): records served by the challenge test server.

``tests/test_caa.py`` covers the pure decision with a fake lookup; here the same rules run
through :func:`make_caa_lookup` and the VA's DNS client, so wire parsing, CNAMEs, SERVFAIL
and the DNSSEC verdict are exercised for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.testsrv.store import CaaPolicy
from acme_ca.va.caa import LookupFailure
from acme_ca.va.caa_lookup import OBSERVED_ALLOWED, OBSERVED_DENIED, CaaChecker, make_caa_lookup
from acme_ca.va.records import CheckResult
from tests.support.problems import check_problem
from tests.support.va import srv_dns

ACCOUNT = "https://acme.jprs.test/acme/acct/42"


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(http01=False)) as server:
        yield server


@pytest.fixture
def checker(srv: ChallengeTestServer) -> CaaChecker:
    return CaaChecker.from_dns(srv_dns(srv))


async def check(
    checker: CaaChecker,
    name: str = "www.example.test",
    *,
    wildcard: bool = False,
    account_uri: str = ACCOUNT,
    method: str = "dns-01",
) -> CheckResult:
    return await checker.check(
        name, wildcard=wildcard, account_uri=account_uri, validation_method=method
    )


def denied(result: CheckResult) -> bool:
    assert result.observed == (OBSERVED_ALLOWED if result.ok else OBSERVED_DENIED)
    if result.ok:
        return False
    problem = check_problem(result, "caa")
    assert problem.status == 403
    return True


async def test_caa_2_issue_jprs_allowed(srv: ChallengeTestServer, checker: CaaChecker) -> None:
    srv.store.add_caa("example.test", [CaaPolicy("issue", "jprs.jp")])
    result = await check(checker)
    assert not denied(result)
    # The climb asked www.example.test (empty), then found the RRset at example.test.
    assert [r.query for r in result.records] == ["www.example.test CAA", "example.test CAA"]
    assert all(r.method == "caa" and r.hostname == "www.example.test" for r in result.records)
    assert result.records[0].response == "no CAA records"
    assert result.records[1].response == '0 issue "jprs.jp"'
    assert result.records[1].server == f"127.0.0.1:{srv.dns_port}"


async def test_caa_4_no_records_anywhere_allowed(
    srv: ChallengeTestServer, checker: CaaChecker
) -> None:
    result = await check(checker)
    assert not denied(result)
    assert [r.query for r in result.records] == [
        "www.example.test CAA",
        "example.test CAA",
        "test CAA",
    ]


async def test_caa_6_another_ca_denied(srv: ChallengeTestServer, checker: CaaChecker) -> None:
    srv.store.add_caa("example.test", [CaaPolicy("issue", "other-ca.example")])
    result = await check(checker)
    assert denied(result)
    assert result.problem is not None and "example.test" in result.problem.detail


async def test_caa_6_additive_records(srv: ChallengeTestServer, checker: CaaChecker) -> None:
    srv.store.add_caa(
        "example.test", [CaaPolicy("issue", "other-ca.example"), CaaPolicy("issue", "jprs.jp")]
    )
    assert not denied(await check(checker))


async def test_caa_11_servfail_not_permission(
    srv: ChallengeTestServer, checker: CaaChecker
) -> None:
    srv.store.set_servfail("example.test")
    result = await check(checker)
    assert denied(result)
    assert result.problem is not None and "servfail" in result.problem.detail
    assert result.records[-1].error is not None


async def test_caa_11_unauthenticated_answer_not_permission(srv: ChallengeTestServer) -> None:
    """With DNSSEC required, an answer without AD is a bogus lookup, never permission."""
    srv.store.add_caa("example.test", [CaaPolicy("issue", "jprs.jp")])
    checker = CaaChecker.from_dns(srv_dns(srv, require_dnssec=True))
    result = await check(checker)
    assert denied(result)
    assert result.problem is not None and "bogus" in result.problem.detail
    assert result.records[0].authenticated is False


async def test_caa_5_critical_unknown_tag_refused(
    srv: ChallengeTestServer, checker: CaaChecker
) -> None:
    srv.store.add_caa(
        "example.test", [CaaPolicy("issue", "jprs.jp"), CaaPolicy("tbs", "x", flags=128)]
    )
    result = await check(checker)
    assert denied(result)
    assert result.problem is not None and "critical" in result.problem.detail


async def test_caa_5_noncritical_unknown_tag_ignored(
    srv: ChallengeTestServer, checker: CaaChecker
) -> None:
    srv.store.add_caa("example.test", [CaaPolicy("tbs", "x")])
    assert not denied(await check(checker))


async def test_caa_3_alias_followed_but_climb_from_parent(
    srv: ChallengeTestServer, checker: CaaChecker
) -> None:
    """CAA at the alias target counts; the target's parents never do (RFC 8659 §3)."""
    srv.store.set_cname("www.example.test", "cdn.provider.test")
    srv.store.add_caa("provider.test", [CaaPolicy("issue", "other-ca.example")])
    assert not denied(await check(checker))  # climbs to example.test, not provider.test
    srv.store.add_caa("cdn.provider.test", [CaaPolicy("issue", "other-ca.example")])
    assert denied(await check(checker))


async def test_caa_7_issuewild(srv: ChallengeTestServer, checker: CaaChecker) -> None:
    srv.store.add_caa(
        "example.test",
        [CaaPolicy("issue", "jprs.jp"), CaaPolicy("issuewild", "other-ca.example")],
    )
    assert not denied(await check(checker, "example.test"))
    assert denied(await check(checker, "example.test", wildcard=True))
    assert denied(await check(checker, "*.example.test"))


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (f"jprs.jp; accounturi={ACCOUNT}", True),
        ("jprs.jp; accounturi=https://acme.jprs.test/acme/acct/7", False),
        ("jprs.jp; validationmethods=dns-01", True),
        ("jprs.jp; validationmethods=http-01", False),
        (f"jprs.jp; accounturi={ACCOUNT}; validationmethods=http-01,dns-01", True),
    ],
    ids=["account-match", "account-other", "method-match", "method-other", "both"],
)
async def test_caa_12_13_rfc8657_parameters(
    srv: ChallengeTestServer, checker: CaaChecker, value: str, allowed: bool
) -> None:
    srv.store.add_caa("example.test", [CaaPolicy("issue", value)])
    assert denied(await check(checker)) is not allowed


async def test_make_caa_lookup_reports_wire_values(srv: ChallengeTestServer) -> None:
    srv.store.add_caa("example.test", [CaaPolicy("Issue", "jprs.jp; x=y", flags=129)])
    srv.store.set_servfail("broken.test")
    lookup = make_caa_lookup(srv_dns(srv))
    result = await lookup("example.test")
    assert result.query_name == "example.test"
    assert result.failure is None and result.authenticated is False
    (record,) = result.records
    assert (record.flags, record.tag, record.value) == (129, "Issue", "jprs.jp; x=y")
    assert record.critical
    failed = await lookup("broken.test")
    assert failed.failure is LookupFailure.SERVFAIL
    assert failed.records == ()
