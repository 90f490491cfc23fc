"""dns-persist-01 (PERSIST-1, ADN-3; BR 3.2.2.4.22, draft-ietf-acme-dns-persist) against the
real test DNS server: the record's syntax, the account and issuer binding, ``policy=wildcard``,
``persistUntil``, pruning toward the registrable domain and the refused CNAME (SC-101).

Names are under ``.com`` so the Public Suffix List gives them a registrable domain to prune to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from acme_ca.acme.issuer_names import issuer_domain_names
from acme_ca.clock import FixedClock
from acme_ca.config import Config, ConfigError
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.va.adn import pruned_adns
from acme_ca.va.dns_persist import (
    DnsPersistValidator,
    PersistRecord,
    PersistRecordError,
    parse_persist_record,
)
from acme_ca.va.records import ChallengeRequest
from tests.support.mpic import PERSPECTIVES, FakeTransport, agree
from tests.support.mpic import validator as mpic_validator
from tests.support.problems import check_problem
from tests.support.va import srv_dns

ISSUER = "ca.example"
ACCOUNT = "https://acme.ca.example/acme/acct/17"
OTHER_ACCOUNT = "https://acme.ca.example/acme/acct/18"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
NAME = "www.shop.example.com"
TXT = f"_validation-persist.{NAME}"


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(http01=False)) as server:
        yield server


@pytest.fixture
def validator(srv: ChallengeTestServer) -> DnsPersistValidator:
    dns = srv_dns(srv)
    return DnsPersistValidator(dns, (ISSUER, "Other-Name.Example."), clock=FixedClock(NOW))


def record(*params: str, issuer: str = ISSUER, account: str = ACCOUNT) -> str:
    return "; ".join((issuer, f"accounturi={account}", *params))


# --- the record's syntax (PERSIST-1; RFC 8659 §4 issue-value) ----------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"ca.example;accounturi={ACCOUNT}", PersistRecord(ISSUER, ACCOUNT)),
        (
            f"  CA.Example.  ;\taccountURI = {ACCOUNT} ; Policy=WildCard ; "
            "persistUntil=4102444800 ",
            PersistRecord(ISSUER, ACCOUNT, True, datetime(2100, 1, 1, tzinfo=UTC)),
        ),
        (f"ca.example; accounturi={ACCOUNT}; policy=exact", PersistRecord(ISSUER, ACCOUNT)),
        (f"ca.example; future=thing; accounturi={ACCOUNT}", PersistRecord(ISSUER, ACCOUNT)),
        (
            f"ca.example; accounturi={ACCOUNT}; persistUntil=-1",
            PersistRecord(ISSUER, ACCOUNT, False, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ),
    ],
    ids=["minimal", "case-and-whitespace", "other-policy-is-absent", "unknown-tag", "negative"],
)
def test_persist_1_record_parsed(text: str, expected: PersistRecord) -> None:
    assert parse_persist_record(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ca.example", "accounturi"),
        ("ca.example; accounturi=", "accounturi"),
        (f"ca.example; accounturi={ACCOUNT};", "trailing semicolon"),
        (f"ca.example; accounturi={ACCOUNT}; wildcard", "tag=value"),
        (f"ca.example; accounturi={ACCOUNT}; accounturi={OTHER_ACCOUNT}", "more than once"),
        (f"ca.example; accounturi={ACCOUNT}; persistUntil=soon", "base-10"),
        (f"ca.example; accounturi={ACCOUNT}; persistUntil=1_000", "base-10"),
        ("ca.example; accounturi=https://x/a b", "forbidden characters"),
        (f"; accounturi={ACCOUNT}", "empty issuer"),
    ],
    ids=[
        "no-accounturi",
        "empty-accounturi",
        "trailing-semicolon",
        "no-equals",
        "duplicate-tag",
        "persistuntil-word",
        "persistuntil-underscore",
        "space-in-value",
        "no-issuer",
    ],
)
def test_persist_1_record_malformed(text: str, reason: str) -> None:
    with pytest.raises(PersistRecordError, match=reason):
        parse_persist_record(text)


def test_persist_1_issuer_domain_names_normalised_and_bounded() -> None:
    assert issuer_domain_names(["CA.Example.", "ca.example", "bücher.example"]) == (
        "ca.example",
        "xn--bcher-kva.example",
    )
    with pytest.raises(ValueError, match="at most 10"):
        issuer_domain_names([f"ca{i}.example" for i in range(11)])


def test_adn_3_pruned_to_the_registrable_domain_never_past_it() -> None:
    assert pruned_adns("a.b.example.co.uk") == (
        "a.b.example.co.uk",
        "b.example.co.uk",
        "example.co.uk",
    )
    assert pruned_adns("*.example.com") == ("example.com",)
    assert pruned_adns("example.test") == ("example.test",)  # no ICANN suffix: no pruning
    # the PRIVATE section counts too: github.io's users are each their own registrant
    assert pruned_adns("a.b.github.io") == ("a.b.github.io", "b.github.io")


# --- the check ------------------------------------------------------------------------------


async def test_persist_1_record_for_this_account_passes(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt(TXT, record())
    result = await validator.check(NAME, False, ACCOUNT)
    assert result.ok, result.problem
    assert result.observed == f"{TXT}: ca.example; accounturi={ACCOUNT}"
    (rec,) = result.records
    assert (rec.method, rec.br_method, rec.adn, rec.identifier, rec.result) == (
        "dns-persist-01",
        "3.2.2.4.22",
        NAME,
        NAME,
        "pass",
    )


async def test_persist_1_any_offered_issuer_name_counts(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt(TXT, record(issuer="other-name.example"))
    assert (await validator.check(NAME, False, ACCOUNT)).ok


async def test_persist_1_record_for_another_account_refused(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt(TXT, record(account=OTHER_ACCOUNT))
    result = await validator.check(NAME, False, ACCOUNT)
    problem = check_problem(result, "unauthorized")
    assert "accounturi" in problem.detail and OTHER_ACCOUNT in problem.detail
    assert result.records[-1].result == "fail"


async def test_persist_1_record_for_another_issuer_ignored(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt(TXT, record(issuer="other-ca.example"))
    result = await validator.check(NAME, False, ACCOUNT)
    problem = check_problem(result, "unauthorized")
    assert "other issuers ignored" in problem.detail


async def test_persist_1_malformed_record_of_ours_is_malformed(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt(TXT, "ca.example; policy=wildcard")
    result = await validator.check(NAME, False, ACCOUNT)
    problem = check_problem(result, "malformed")
    assert "accounturi" in problem.detail


async def test_persist_1_one_good_record_among_others(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    for value in (record(issuer="other-ca.example"), record(account=OTHER_ACCOUNT), record()):
        srv.store.set_txt(TXT, value)
    assert (await validator.check(NAME, False, ACCOUNT)).ok


@pytest.mark.parametrize(
    ("until", "ok"),
    [(NOW - timedelta(seconds=1), False), (NOW, True), (NOW + timedelta(days=1), True)],
    ids=["expired", "this-second", "future"],
)
async def test_persist_1_persist_until_bounds_validity(
    srv: ChallengeTestServer, validator: DnsPersistValidator, until: datetime, ok: bool
) -> None:
    srv.store.set_txt(TXT, record(f"persistUntil={int(until.timestamp())}"))
    result = await validator.check(NAME, False, ACCOUNT)
    assert result.ok is ok
    if not ok:
        assert result.problem is not None and "persistUntil" in result.problem.detail


@pytest.mark.parametrize(
    ("policy", "ok"),
    [("policy=wildcard", True), ("policy=WILDCARD", True), (None, False), ("policy=exact", False)],
    ids=["wildcard", "case-insensitive", "absent", "other-value"],
)
async def test_persist_1_wildcard_order_needs_policy_wildcard(
    srv: ChallengeTestServer, validator: DnsPersistValidator, policy: str | None, ok: bool
) -> None:
    srv.store.set_txt(TXT, record(*([policy] if policy else [])))
    result = await validator.check(NAME, True, ACCOUNT)
    assert result.ok is ok
    if ok:
        assert result.records[0].identifier == f"*.{NAME}"
        assert result.observed is not None and result.observed.endswith("policy=wildcard")
    else:
        assert result.problem is not None and "policy=wildcard" in result.problem.detail


async def test_adn_3_persist_pruned_to_base_domain_with_policy_wildcard(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt("_validation-persist.example.com", record("policy=wildcard"))
    result = await validator.check(NAME, False, ACCOUNT)
    assert result.ok, result.problem
    assert [r.adn for r in result.records] == [NAME, "shop.example.com", "example.com"]
    assert result.records[-1].result == "pass"
    assert result.observed == (
        f"_validation-persist.example.com: ca.example; accounturi={ACCOUNT}; policy=wildcard"
    )


async def test_adn_3_persist_parent_record_without_policy_wildcard_refused(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt("_validation-persist.example.com", record())
    result = await validator.check(NAME, False, ACCOUNT)
    problem = check_problem(result, "unauthorized")
    assert "parent domain" in problem.detail


async def test_adn_3_persist_never_pruned_past_the_registrable_domain(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_txt("_validation-persist.com", record("policy=wildcard"))
    result = await validator.check("example.com", False, ACCOUNT)
    assert not result.ok
    assert srv.store.dns_history("_validation-persist.com") == ()


async def test_sc_101_persist_cname_of_the_adn_refused(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    """A CNAME at _validation-persist.<ADN> is not followed to a record, even a good one."""
    srv.store.set_cname(TXT, "_validation-persist.delegate.example.net")
    srv.store.set_txt("_validation-persist.delegate.example.net", record())
    srv.store.set_txt("_validation-persist.example.com", record("policy=wildcard"))
    result = await validator.check(NAME, False, ACCOUNT)
    problem = check_problem(result, "unauthorized")
    assert "CNAME" in problem.detail and "SC-101" in problem.detail
    assert len(result.records) == 1  # the walk stopped at the CNAME


async def test_persist_1_servfail_fails_closed(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    srv.store.set_servfail(TXT)
    srv.store.set_txt("_validation-persist.example.com", record("policy=wildcard"))
    result = await validator.check(NAME, False, ACCOUNT)
    check_problem(result, "dns")


@pytest.mark.parametrize(
    "identities",
    [[f"ca{i}.example" for i in range(11)], ["ca.example", "not a name!"]],
    ids=["eleven", "not-a-domain-name"],
)
def test_persist_1_caa_identities_refused_at_start(identities: list[str]) -> None:
    """They are dns-persist-01's issuer-domain-names: a list the draft forbids stops start-up
    (a ConfigError naming the key), not the first challenge response."""
    with pytest.raises(ConfigError, match="caa_identities"):
        replace(Config(), caa_identities=identities).validate()
    assert replace(Config(), caa_identities=["CA.Example."]).validate()


async def test_persist_2_corroboration_records_name_the_pruned_adn(
    srv: ChallengeTestServer, validator: DnsPersistValidator
) -> None:
    """The primary proved control at the pruned ADN ``example.com``; every perspective's summary
    and the quorum record name that ADN, not the FQDN (REC-1 with ADN-3)."""
    srv.store.set_txt("_validation-persist.example.com", record("policy=wildcard"))
    local = await validator.check(NAME, False, ACCOUNT)
    assert local.ok and local.observed is not None
    mpic = mpic_validator(
        FakeTransport({p.id: agree(local.observed) for p in PERSPECTIVES}), local=local
    )
    result = await mpic.validate(
        ChallengeRequest("dns-persist-01", NAME, False, "tok", "tok.thumb", ACCOUNT)
    )
    assert result.ok, result.problem
    summaries = [r for r in result.records if r.corroborated is not None]
    assert len(summaries) == 6 and summaries[-1].quorum == "5/5"
    assert {(r.adn, r.identifier, r.br_method) for r in summaries} == {
        ("example.com", NAME, "3.2.2.4.22")
    }
