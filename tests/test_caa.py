"""CAA (RFC 8659, RFC 8657, BR §3.2.2.8): one table row per rule, named after the checklist.

DNS data comes from :class:`FakeDns`, a dict-backed stand-in for the resolver that also records
every name asked, so the climb itself can be checked.  Real-resolver tests live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from acme_ca.va import caa
from acme_ca.va.caa import (
    CaaDecision,
    CaaLookupResult,
    CaaRecord,
    IssueValue,
    LookupFailure,
    check_caa,
    parse_issue_value,
)

ACCOUNT = "https://acme.jprs.jp/acme/acct/42"
OTHER_ACCOUNT = "https://acme.jprs.jp/acme/acct/43"
DNS01 = "dns-01"
HTTP01 = "http-01"

Zone = dict[str, tuple[CaaRecord, ...] | LookupFailure]


def rr(tag: str, value: str, flags: int = 0) -> CaaRecord:
    return CaaRecord(flags=flags, tag=tag, value=value)


@dataclass
class FakeDns:
    """Answers CAA queries from ``zone``; ``aliases`` plays the resolver's CNAME chasing."""

    zone: Zone = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def __call__(self, name: str) -> CaaLookupResult:
        self.asked.append(name)
        target = name
        while target in self.aliases:
            target = self.aliases[target]
        data = self.zone.get(target, ())
        if isinstance(data, LookupFailure):
            return CaaLookupResult(query_name=name, failure=data)
        return CaaLookupResult(query_name=name, records=data, authenticated=True)


async def decide(
    zone: Zone,
    name: str = "www.example.com",
    *,
    wildcard: bool = False,
    account_uri: str = ACCOUNT,
    method: str = DNS01,
    dns: FakeDns | None = None,
) -> CaaDecision:
    dns = dns or FakeDns(zone)
    return await check_caa(
        name,
        wildcard=wildcard,
        account_uri=account_uri,
        validation_method=method,
        lookup=dns,
    )


# ---------------------------------------------------------------- CAA-2 / CAA-3: the climb


async def test_caa_2_climbs_to_tld_and_stops_before_root() -> None:
    dns = FakeDns()
    decision = await decide({}, "a.b.example.com", dns=dns)
    assert dns.asked == ["a.b.example.com", "b.example.com", "example.com", "com"]
    assert decision.allowed
    assert decision.reason == caa.REASON_NO_CAA
    assert decision.relevant_name is None
    assert [lk.query_name for lk in decision.lookups] == dns.asked


CLIMB_ROWS = [
    # (case, zone, name, wildcard, expected allowed, expected relevant name, expected asked)
    (
        "record-at-name",
        {"www.example.com": (rr("issue", "other.ca"),), "example.com": (rr("issue", "jprs.jp"),)},
        "www.example.com",
        False,
        False,
        "www.example.com",
        ["www.example.com"],
    ),
    (
        "first-non-empty-parent-is-relevant",
        {"example.com": (rr("issue", "jprs.jp"),), "com": (rr("issue", "other.ca"),)},
        "a.b.example.com",
        False,
        True,
        "example.com",
        ["a.b.example.com", "b.example.com", "example.com"],
    ),
    (
        "closer-set-overrides-parent",
        {"b.example.com": (rr("issue", "other.ca"),), "example.com": (rr("issue", "jprs.jp"),)},
        "a.b.example.com",
        False,
        False,
        "b.example.com",
        ["a.b.example.com", "b.example.com"],
    ),
    (
        "wildcard-starts-at-base-name",
        {"example.com": (rr("issue", "jprs.jp"),)},
        "*.example.com",
        True,
        True,
        "example.com",
        ["example.com"],
    ),
    (
        "star-prefix-forces-wildcard",
        {"example.com": (rr("issuewild", ";"), rr("issue", "jprs.jp"))},
        "*.example.com",
        False,
        False,
        "example.com",
        ["example.com"],
    ),
]


@pytest.mark.parametrize(
    ("zone", "name", "wildcard", "allowed", "relevant", "asked"),
    [r[1:] for r in CLIMB_ROWS],
    ids=[r[0] for r in CLIMB_ROWS],
)
async def test_caa_2_first_non_empty_rrset_is_relevant(
    zone: Zone,
    name: str,
    wildcard: bool,
    allowed: bool,
    relevant: str,
    asked: list[str],
) -> None:
    dns = FakeDns(zone)
    decision = await decide(zone, name, wildcard=wildcard, dns=dns)
    assert decision.allowed is allowed
    assert decision.relevant_name == relevant
    assert dns.asked == asked


ALIAS_ROWS = [
    (
        "alias-target-records-are-used",
        {"cdn.provider.net": (rr("issue", "jprs.jp"),), "example.com": (rr("issue", ";"),)},
        True,
        "www.example.com",
        ["www.example.com"],
    ),
    (
        "alias-target-parents-never-climbed",
        {"provider.net": (rr("issue", "jprs.jp"),), "example.com": (rr("issue", ";"),)},
        False,
        "example.com",
        ["www.example.com", "example.com"],
    ),
]


@pytest.mark.parametrize(
    ("zone", "allowed", "relevant", "asked"),
    [r[1:] for r in ALIAS_ROWS],
    ids=[r[0] for r in ALIAS_ROWS],
)
async def test_caa_3_climb_continues_from_parent_not_alias_target(
    zone: Zone, allowed: bool, relevant: str, asked: list[str]
) -> None:
    dns = FakeDns(zone, aliases={"www.example.com": "cdn.provider.net"})
    decision = await decide(zone, "www.example.com", dns=dns)
    assert decision.allowed is allowed
    assert decision.relevant_name == relevant
    assert dns.asked == asked


# ------------------------------------------------- CAA-4 .. CAA-8: reading the relevant set

# (case, records at example.com, wildcard, expected allowed, expected reason)
RRSET_ROWS = [
    ("caa-4-empty-everywhere", (), False, True, caa.REASON_NO_CAA),
    (
        "caa-4-only-iodef",
        (rr("iodef", "mailto:sec@example.com"),),
        False,
        True,
        caa.REASON_NO_ISSUE_PROPERTY,
    ),
    (
        "caa-4-only-unknown-non-critical",
        (rr("future", "x"),),
        False,
        True,
        caa.REASON_NO_ISSUE_PROPERTY,
    ),
    (
        "caa-5-unknown-critical-tag-blocks",
        (rr("issue", "jprs.jp"), rr("future", "x", 128)),
        False,
        False,
        caa.REASON_UNKNOWN_CRITICAL,
    ),
    (
        "caa-5-unknown-critical-blocks-wildcard-too",
        (rr("issuewild", "jprs.jp"), rr("tbs", "x", 128)),
        True,
        False,
        caa.REASON_UNKNOWN_CRITICAL,
    ),
    (
        "caa-5-critical-iodef-is-known",
        (rr("iodef", "mailto:x@example.com", 128), rr("issue", "jprs.jp")),
        False,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-5-critical-issue-is-known",
        (rr("issue", "jprs.jp", 128),),
        False,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-5-reserved-flag-bits-ignored",
        (rr("issue", "jprs.jp"), rr("future", "x", 127)),
        False,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-5-tag-case-insensitive-issue",
        (rr("ISSUE", "other.ca"),),
        False,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    (
        "caa-5-tag-case-insensitive-iodef-critical",
        (rr("IoDeF", "mailto:x@example.com", 128),),
        False,
        True,
        caa.REASON_NO_ISSUE_PROPERTY,
    ),
    (
        "caa-5-issuer-domain-case-insensitive",
        (rr("issue", "JPRS.JP"),),
        False,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-6-semicolon-authorizes-no-ca",
        (rr("issue", ";"),),
        False,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    (
        "caa-6-empty-value-authorizes-no-ca",
        (rr("issue", ""),),
        False,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    (
        "caa-6-malformed-value-authorizes-no-ca",
        (rr("issue", "jprs.jp; accounturi"),),
        False,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    ("caa-6-other-ca-only", (rr("issue", "other.ca"),), False, False, caa.REASON_NOT_AUTHORIZED),
    (
        "caa-6-records-are-additive",
        (rr("issue", "other.ca"), rr("issue", "jprs.jp")),
        False,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-6-additive-despite-a-semicolon",
        (rr("issue", ";"), rr("issue", "jprs.jp")),
        False,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-6-subdomain-of-issuer-is-not-us",
        (rr("issue", "ca.jprs.jp"),),
        False,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    (
        "caa-7-issuewild-ignored-for-non-wildcard",
        (rr("issuewild", "other.ca"),),
        False,
        True,
        caa.REASON_NO_ISSUE_PROPERTY,
    ),
    (
        "caa-7-issuewild-ignored-non-wildcard-issue-decides",
        (rr("issuewild", "jprs.jp"), rr("issue", ";")),
        False,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    (
        "caa-7-wildcard-falls-back-to-issue",
        (rr("issue", "jprs.jp"),),
        True,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-7-wildcard-issuewild-overrides-issue-deny",
        (rr("issue", "jprs.jp"), rr("issuewild", ";")),
        True,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    (
        "caa-7-wildcard-issuewild-overrides-issue-allow",
        (rr("issue", ";"), rr("issuewild", "jprs.jp")),
        True,
        True,
        caa.REASON_AUTHORIZED,
    ),
    (
        "caa-7-wildcard-tag-case-insensitive",
        (rr("issue", "jprs.jp"), rr("IssueWild", ";")),
        True,
        False,
        caa.REASON_NOT_AUTHORIZED,
    ),
    (
        "caa-7-wildcard-only-iodef",
        (rr("iodef", "mailto:x@example.com"),),
        True,
        True,
        caa.REASON_NO_ISSUE_PROPERTY,
    ),
    (
        "caa-8-iodef-alongside-issue-ignored",
        (rr("iodef", "https://iodef.example.com/"), rr("issue", "jprs.jp")),
        False,
        True,
        caa.REASON_AUTHORIZED,
    ),
]


@pytest.mark.parametrize(
    ("records", "wildcard", "allowed", "reason"),
    [r[1:] for r in RRSET_ROWS],
    ids=[r[0] for r in RRSET_ROWS],
)
async def test_caa_4_to_8_relevant_rrset_rules(
    records: tuple[CaaRecord, ...], wildcard: bool, allowed: bool, reason: str
) -> None:
    zone: Zone = {"example.com": records} if records else {}
    name = "*.example.com" if wildcard else "example.com"
    decision = await decide(zone, name, wildcard=wildcard)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert decision.records == records  # what was considered goes to the audit log (CAA-8)


async def test_caa_8_refusal_detail_names_where_the_rrset_was_found() -> None:
    decision = await decide({"example.com": (rr("issue", "other.ca"),)}, "www.example.com")
    assert not decision.allowed
    assert "example.com" in decision.detail
    assert decision.lookups[-1].authenticated is True


# -------------------------------------------------- CAA-10 / CAA-11: failures never permit

FAILURE_ROWS = [
    ("servfail-at-name", "www.example.com", LookupFailure.SERVFAIL),
    ("timeout-at-parent", "example.com", LookupFailure.TIMEOUT),
    ("bogus-at-tld", "com", LookupFailure.BOGUS),
]


@pytest.mark.parametrize(
    ("where", "failure"), [r[1:] for r in FAILURE_ROWS], ids=[r[0] for r in FAILURE_ROWS]
)
async def test_caa_11_lookup_failure_is_never_permission(
    where: str, failure: LookupFailure
) -> None:
    dns = FakeDns({where: failure})
    decision = await decide({}, "www.example.com", dns=dns)
    assert not decision.allowed
    assert decision.reason == caa.REASON_LOOKUP_FAILED
    assert dns.asked[-1] == where  # the climb stops at the failure
    assert decision.lookups[-1].failure is failure
    assert where in decision.detail and str(failure) in decision.detail


async def test_caa_10_failure_above_the_relevant_set_is_never_asked() -> None:
    dns = FakeDns({"example.com": (rr("issue", "jprs.jp"),), "com": LookupFailure.SERVFAIL})
    decision = await decide({}, "www.example.com", dns=dns)
    assert decision.allowed
    assert dns.asked == ["www.example.com", "example.com"]


def test_caa_11_failed_lookup_cannot_carry_records() -> None:
    with pytest.raises(ValueError):
        CaaLookupResult("example.com", (rr("issue", "jprs.jp"),), LookupFailure.BOGUS)


# ----------------------------------------------- CAA-12 / CAA-13: RFC 8657 parameters

# (case, issue value, account uri, method, expected allowed)
PARAM_ROWS = [
    ("caa-12-accounturi-matches", f"jprs.jp; accounturi={ACCOUNT}", ACCOUNT, DNS01, True),
    (
        "caa-12-accounturi-other-account",
        f"jprs.jp; accounturi={ACCOUNT}",
        OTHER_ACCOUNT,
        DNS01,
        False,
    ),
    (
        "caa-12-accounturi-exact-not-prefix",
        f"jprs.jp; accounturi={ACCOUNT}",
        ACCOUNT + "2",
        DNS01,
        False,
    ),
    (
        "caa-12-accounturi-case-sensitive",
        f"jprs.jp; accounturi={ACCOUNT.upper()}",
        ACCOUNT,
        DNS01,
        False,
    ),
    (
        "caa-12-accounturi-twice-unsatisfiable",
        f"jprs.jp; accounturi={ACCOUNT}; accounturi={ACCOUNT}",
        ACCOUNT,
        DNS01,
        False,
    ),
    (
        "caa-12-accounturi-tag-case-insensitive",
        f"jprs.jp; AccountURI={OTHER_ACCOUNT}",
        ACCOUNT,
        DNS01,
        False,
    ),
    ("caa-12-accounturi-empty-value", "jprs.jp; accounturi=", ACCOUNT, DNS01, False),
    (
        "caa-12-accounturi-for-another-ca-ignored",
        f"other.ca; accounturi={ACCOUNT}",
        ACCOUNT,
        DNS01,
        False,
    ),
    ("caa-13-method-listed", "jprs.jp; validationmethods=dns-01", ACCOUNT, DNS01, True),
    ("caa-13-method-in-list", "jprs.jp; validationmethods=http-01,dns-01", ACCOUNT, DNS01, True),
    ("caa-13-method-not-listed", "jprs.jp; validationmethods=http-01", ACCOUNT, DNS01, False),
    ("caa-13-method-match-is-exact", "jprs.jp; validationmethods=DNS-01", ACCOUNT, DNS01, False),
    ("caa-13-method-no-partial-match", "jprs.jp; validationmethods=dns-01x", ACCOUNT, DNS01, False),
    ("caa-13-methods-empty-value", "jprs.jp; validationmethods=", ACCOUNT, DNS01, False),
    (
        "caa-13-methods-malformed-list",
        "jprs.jp; validationmethods=http-01,,dns-01",
        ACCOUNT,
        DNS01,
        False,
    ),
    (
        "caa-13-methods-twice-unsatisfiable",
        "jprs.jp; validationmethods=dns-01; validationmethods=dns-01",
        ACCOUNT,
        DNS01,
        False,
    ),
    ("caa-13-ca-specific-method", "jprs.jp; validationmethods=ca-email", ACCOUNT, "ca-email", True),
    (
        "caa-12-13-both-satisfied",
        f"jprs.jp; accounturi={ACCOUNT}; validationmethods=http-01",
        ACCOUNT,
        HTTP01,
        True,
    ),
    (
        "caa-12-13-one-unsatisfied",
        f"jprs.jp; accounturi={ACCOUNT}; validationmethods=http-01",
        ACCOUNT,
        DNS01,
        False,
    ),
    ("caa-12-unknown-parameter-ignored", "jprs.jp; policy=ev; x-y=1", ACCOUNT, DNS01, True),
    # RFC 8657 §4 with the labels of BR 3.2.2.4.21 and .22 (issue 14): each new method is
    # permitted by its own label only.
    (
        "caa-13-dns-persist-01-listed",
        "jprs.jp; validationmethods=dns-persist-01",
        ACCOUNT,
        "dns-persist-01",
        True,
    ),
    (
        "caa-13-dns-persist-01-not-dns-01",
        "jprs.jp; validationmethods=dns-01",
        ACCOUNT,
        "dns-persist-01",
        False,
    ),
    (
        "caa-13-dns-account-01-in-list",
        "jprs.jp; validationmethods=http-01,dns-account-01",
        ACCOUNT,
        "dns-account-01",
        True,
    ),
    (
        "caa-13-dns-account-01-not-dns-persist-01",
        "jprs.jp; validationmethods=dns-persist-01",
        ACCOUNT,
        "dns-account-01",
        False,
    ),
]


@pytest.mark.parametrize(
    ("value", "account_uri", "method", "allowed"),
    [r[1:] for r in PARAM_ROWS],
    ids=[r[0] for r in PARAM_ROWS],
)
async def test_caa_12_13_rfc8657_parameters(
    value: str, account_uri: str, method: str, allowed: bool
) -> None:
    zone: Zone = {"example.com": (rr("issue", value),)}
    decision = await decide(zone, "example.com", account_uri=account_uri, method=method)
    assert decision.allowed is allowed


async def test_caa_12_another_record_can_still_authorize() -> None:
    zone: Zone = {
        "example.com": (
            rr("issue", f"jprs.jp; accounturi={OTHER_ACCOUNT}"),
            rr("issue", f"jprs.jp; accounturi={ACCOUNT}"),
        )
    }
    assert (await decide(zone, "example.com")).allowed


async def test_caa_12_issuer_domains_are_configurable() -> None:
    zone: Zone = {"example.com": (rr("issue", "ca.example.net"),)}
    decision = await check_caa(
        "example.com",
        wildcard=False,
        issuer_domains=("jprs.jp", "CA.example.net."),
        account_uri=ACCOUNT,
        validation_method=DNS01,
        lookup=FakeDns(zone),
    )
    assert decision.allowed


INVALID_NAMES = ["", ".", "a..example.com", "*."]


@pytest.mark.parametrize("name", INVALID_NAMES, ids=[repr(n) for n in INVALID_NAMES])
async def test_caa_2_invalid_name_is_refused_without_lookups(name: str) -> None:
    dns = FakeDns()
    decision = await decide({}, name, dns=dns)
    assert not decision.allowed
    assert decision.reason == caa.REASON_INVALID_NAME
    assert dns.asked == []


# ------------------------------------------------------- CAA-6: issue-value parsing

#: RFC 8659: a malformed value is treated as naming no CA.
MALFORMED = IssueValue(issuer_domain=None, parameters=None)

# (case, value, expected IssueValue)
PARSE_ROWS = [
    ("domain-only", "jprs.jp", IssueValue("jprs.jp", ())),
    ("keeps-case", "JPRS.jp", IssueValue("JPRS.jp", ())),
    ("surrounding-wsp", " \tjprs.jp \t", IssueValue("jprs.jp", ())),
    ("semicolon-alone", ";", IssueValue(None, ())),
    ("empty", "", IssueValue(None, ())),
    ("wsp-only", "  ", IssueValue(None, ())),
    ("semicolon-wsp", " ; ", IssueValue(None, ())),
    ("trailing-semicolon", "jprs.jp;", IssueValue("jprs.jp", ())),
    ("one-parameter", "jprs.jp; a=b", IssueValue("jprs.jp", (("a", "b"),))),
    ("parameters-no-domain", "; a=b", IssueValue(None, (("a", "b"),))),
    (
        "wsp-around-everything",
        "jprs.jp \t;\t a \t= \tb \t; c=d ",
        IssueValue("jprs.jp", (("a", "b"), ("c", "d"))),
    ),
    ("empty-parameter-value", "jprs.jp; a=", IssueValue("jprs.jp", (("a", ""),))),
    ("equals-inside-value", "jprs.jp; a=b=c", IssueValue("jprs.jp", (("a", "b=c"),))),
    ("tag-lower-cased", "jprs.jp; AccountURI=X", IssueValue("jprs.jp", (("accounturi", "X"),))),
    ("hyphen-in-tag", "jprs.jp; a--b=1", IssueValue("jprs.jp", (("a--b", "1"),))),
    (
        "repeated-tag-kept",
        "jprs.jp; a=1; a=2",
        IssueValue("jprs.jp", (("a", "1"), ("a", "2"))),
    ),
    ("digit-label-domain", "1ca.example", IssueValue("1ca.example", ())),
    ("malformed-trailing-semicolon-after-params", "jprs.jp; a=b;", MALFORMED),
    ("malformed-double-semicolon", "jprs.jp;; a=b", MALFORMED),
    ("malformed-no-equals", "jprs.jp; accounturi", MALFORMED),
    ("malformed-space-in-value", "jprs.jp; a=b c", MALFORMED),
    ("malformed-non-ascii-value", "jprs.jp; a=\u00e9", MALFORMED),
    ("malformed-tag-hyphen-edge", "jprs.jp; -a=b", MALFORMED),
    ("malformed-empty-tag", "jprs.jp; =b", MALFORMED),
    ("malformed-domain-trailing-dot", "jprs.jp.", MALFORMED),
    ("malformed-domain-space", "jprs .jp", MALFORMED),
    ("malformed-domain-underscore", "jp_rs.jp", MALFORMED),
    ("malformed-domain-leading-hyphen", "-jprs.jp", MALFORMED),
    ("malformed-domain-empty-label", "jprs..jp", MALFORMED),
    ("malformed-domain-non-ascii", "jprs.日本", MALFORMED),
    ("malformed-newline-is-not-wsp", "jprs.jp\n", MALFORMED),
]


@pytest.mark.parametrize(
    ("value", "expected"), [r[1:] for r in PARSE_ROWS], ids=[r[0] for r in PARSE_ROWS]
)
def test_caa_6_issue_value_parsing(value: str, expected: IssueValue) -> None:
    parsed = parse_issue_value(value)
    assert parsed == expected
    assert parsed.malformed is (expected.parameters is None)


def test_caa_6_values_of_a_malformed_value_are_empty() -> None:
    assert parse_issue_value("jprs.jp; a").values("a") == ()
    assert parse_issue_value("jprs.jp; A=1; a=2").values("A") == ("1", "2")
