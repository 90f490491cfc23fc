"""Identifier policy: one row per rule, named after the checklist item it enforces."""

from __future__ import annotations

import json

import pytest

from acme_ca.acme.problems import ACME_ERROR_NS, AcmeError, Identifier
from acme_ca.ra import identifiers as ids
from acme_ca.ra.identifiers import IdentifierPolicy, base_domain, is_wildcard

REJECTED = ACME_ERROR_NS + "rejectedIdentifier"
UNSUPPORTED = ACME_ERROR_NS + "unsupportedIdentifier"
MALFORMED = ACME_ERROR_NS + "malformed"
COMPOUND = ACME_ERROR_NS + "compound"


@pytest.fixture(scope="module")
def policy() -> IdentifierPolicy:
    return IdentifierPolicy(blocked_names={"Bank.co.jp.", "blocked.com"})


def dns(value: str) -> Identifier:
    return Identifier("dns", value)


ACCEPTED = [
    ("example.com", "plain"),
    ("www.example.co.jp", "under-second-level-suffix"),
    ("EXAMPLE.com", "upper-case-is-normalised"),
    ("a-b.example.com", "inner-hyphen"),
    ("1-2-3.example.com", "digits-and-hyphens"),
    ("*.example.com", "wildcard"),
    ("*.foo.example.co.jp", "wildcard-deep"),
    ("xn--mnchen-3ya.de", "idn-a-label"),
    ("example.xn--p1ai", "idn-tld"),
    ("a" * 63 + ".example.com", "label-63-octets"),
    (".".join(["a" * 63] * 3) + "." + "b" * 57 + ".com", "name-253-octets"),
    ("bank.example.com", "blocklist-does-not-match-siblings"),
    ("notbank.co.jp", "blocklist-matches-whole-labels-only"),
    ("www.ck", "psl-exception-rule"),
    ("a.city.kawasaki.jp", "psl-exception-subdomain"),
    ("foo.blogspot.com", "psl-private-section-ignored"),
    ("1.2.3.4.example.com", "numeric-labels-below-a-real-tld"),
]


@pytest.mark.parametrize(("value", "_case"), ACCEPTED, ids=[c for _, c in ACCEPTED])
def test_acme_ord_2_accepted_names(policy: IdentifierPolicy, value: str, _case: str) -> None:
    assert policy.rejection_reason(dns(value)) is None
    assert policy.check_order([dns(value)]) == (dns(value.lower()),)


def _assert_rejected(policy: IdentifierPolicy, identifier: Identifier, reason: str) -> None:
    """The named rule fires, and check_order reports it as one subproblem for that identifier."""
    assert policy.rejection_reason(identifier) == reason
    with pytest.raises(AcmeError) as exc:
        policy.check_order([identifier])
    (sub,) = exc.value.problem.subproblems
    assert sub.identifier == identifier
    assert reason in sub.detail
    expected_type = UNSUPPORTED if reason == ids.REASON_UNSUPPORTED_TYPE else REJECTED
    assert sub.type == expected_type
    assert exc.value.problem.type == expected_type


def _ids(rows: list[tuple[Identifier, str]]) -> list[str]:
    return [f"{i.type}:{i.value[:40] or '<empty>'}" for i, _ in rows]


SYNTAX_ROWS = [
    (Identifier("ip", "192.0.2.1"), ids.REASON_UNSUPPORTED_TYPE),
    (Identifier("DNS", "example.com"), ids.REASON_UNSUPPORTED_TYPE),
    (dns(""), ids.REASON_EMPTY_NAME),
    (dns("münchen.de"), ids.REASON_NON_ASCII),
    (dns("\u212aelvin.example.com"), ids.REASON_NON_ASCII),  # KELVIN SIGN lower()s to "k"
    (dns(".".join(["a" * 63] * 3) + "." + "b" * 58 + ".com"), ids.REASON_NAME_TOO_LONG),
    (dns("example.com."), ids.REASON_TRAILING_DOT),
    (dns("a..example.com"), ids.REASON_EMPTY_LABEL),
    (dns(".example.com"), ids.REASON_EMPTY_LABEL),
    (dns("a" * 64 + ".example.com"), ids.REASON_LABEL_TOO_LONG),
    (dns("under_score.example.com"), ids.REASON_INVALID_CHARACTER),
    (dns("sp ace.example.com"), ids.REASON_INVALID_CHARACTER),
    (dns("a/b.example.com"), ids.REASON_INVALID_CHARACTER),
    (dns("-lead.example.com"), ids.REASON_HYPHEN_EDGE),
    (dns("trail-.example.com"), ids.REASON_HYPHEN_EDGE),
    (dns("ab--cd.example.com"), ids.REASON_RESERVED_HYPHENS),
    (dns("localhost"), ids.REASON_TOO_FEW_LABELS),
    (dns("com"), ids.REASON_TOO_FEW_LABELS),
]


@pytest.mark.parametrize(("identifier", "reason"), SYNTAX_ROWS, ids=_ids(SYNTAX_ROWS))
def test_acme_ord_2_unissuable_identifier_rejected(
    policy: IdentifierPolicy, identifier: Identifier, reason: str
) -> None:
    _assert_rejected(policy, identifier, reason)


IDN_AND_WILDCARD_ROWS = [
    (dns("xn--n3h.com"), ids.REASON_INVALID_IDN),  # snowman: IDNA2003 yes, IDNA2008 no
    (dns("xn--ls8h.com"), ids.REASON_INVALID_IDN),  # emoji
    (dns("xn---bbk.com"), ids.REASON_INVALID_IDN),  # non-canonical punycode
    (dns("xn--zz.com"), ids.REASON_INVALID_IDN),  # undecodable
    (dns("xn--a.com"), ids.REASON_INVALID_IDN),  # decodes to a C1 control
    (dns("*"), ids.REASON_BAD_WILDCARD),
    (dns("*example.com"), ids.REASON_BAD_WILDCARD),
    (dns("www.*.example.com"), ids.REASON_BAD_WILDCARD),
    (dns("*.*.example.com"), ids.REASON_BAD_WILDCARD),
    (dns("f*o.example.com"), ids.REASON_BAD_WILDCARD),
]


@pytest.mark.parametrize(
    ("identifier", "reason"), IDN_AND_WILDCARD_ROWS, ids=_ids(IDN_AND_WILDCARD_ROWS)
)
def test_acme_authz_2_bad_a_label_or_wildcard_rejected(
    policy: IdentifierPolicy, identifier: Identifier, reason: str
) -> None:
    _assert_rejected(policy, identifier, reason)


PUBLIC_SUFFIX_ROWS = [
    (dns("*.com"), ids.REASON_WILDCARD_ON_PUBLIC_SUFFIX),
    (dns("*.xn--p1ai"), ids.REASON_WILDCARD_ON_PUBLIC_SUFFIX),
    (dns("*.co.jp"), ids.REASON_WILDCARD_ON_PUBLIC_SUFFIX),
    (dns("*.foo.ck"), ids.REASON_WILDCARD_ON_PUBLIC_SUFFIX),  # PSL wildcard rule *.ck
    (dns("*.xn--55qx5d.cn"), ids.REASON_WILDCARD_ON_PUBLIC_SUFFIX),  # IDN suffix
    (dns("co.jp"), ids.REASON_IS_PUBLIC_SUFFIX),
    (dns("foo.ck"), ids.REASON_IS_PUBLIC_SUFFIX),
    (dns("xn--55qx5d.cn"), ids.REASON_IS_PUBLIC_SUFFIX),
]


@pytest.mark.parametrize(("identifier", "reason"), PUBLIC_SUFFIX_ROWS, ids=_ids(PUBLIC_SUFFIX_ROWS))
def test_br_dcv_5_wildcard_on_public_suffix_rejected(
    policy: IdentifierPolicy, identifier: Identifier, reason: str
) -> None:
    _assert_rejected(policy, identifier, reason)


INTERNAL_ROWS = [
    (dns("example.notatld"), ids.REASON_NOT_ICANN_SUFFIX),
    (dns("printer.corp"), ids.REASON_NOT_ICANN_SUFFIX),
    (dns("nas.local"), ids.REASON_INTERNAL_NAME),
    (dns("db.internal"), ids.REASON_INTERNAL_NAME),
    (dns("app.localhost"), ids.REASON_INTERNAL_NAME),
    (dns("www.test"), ids.REASON_INTERNAL_NAME),
    (dns("www.example"), ids.REASON_INTERNAL_NAME),
    (dns("www.invalid"), ids.REASON_INTERNAL_NAME),
    (dns("router.home.arpa"), ids.REASON_INTERNAL_NAME),
    (dns("x.alt"), ids.REASON_INTERNAL_NAME),
    (dns("*.svc.internal"), ids.REASON_INTERNAL_NAME),
    (dns("*.localhost"), ids.REASON_INTERNAL_NAME),
    (dns("*.notatld"), ids.REASON_NOT_ICANN_SUFFIX),
    (dns("expyuzz4wqqyqhjn.onion"), ids.REASON_ONION),  # onion IS in the PSL ICANN section
    (dns("1.2.0.192.in-addr.arpa"), ids.REASON_REVERSE_DNS),
    (dns("b.a.9.8.ip6.arpa"), ids.REASON_REVERSE_DNS),
    (dns("192.0.2.1"), ids.REASON_IP_ADDRESS),
    (dns("::1"), ids.REASON_IP_ADDRESS),
    (dns("[2001:db8::1]"), ids.REASON_IP_ADDRESS),
    (dns("127.1"), ids.REASON_IP_ADDRESS),  # inet_aton short form
    (dns("*.10.0.0.1"), ids.REASON_IP_ADDRESS),
]


@pytest.mark.parametrize(("identifier", "reason"), INTERNAL_ROWS, ids=_ids(INTERNAL_ROWS))
def test_br_dcv_6_internal_name_rejected(
    policy: IdentifierPolicy, identifier: Identifier, reason: str
) -> None:
    _assert_rejected(policy, identifier, reason)


BLOCKED_ROWS = [
    (dns("bank.co.jp"), ids.REASON_BLOCKED),
    (dns("a.b.BANK.co.jp"), ids.REASON_BLOCKED),
    (dns("*.bank.co.jp"), ids.REASON_BLOCKED),
    (dns("blocked.com"), ids.REASON_BLOCKED),
]


@pytest.mark.parametrize(("identifier", "reason"), BLOCKED_ROWS, ids=_ids(BLOCKED_ROWS))
def test_acme_ord_2_blocked_name_or_parent_rejected(
    policy: IdentifierPolicy, identifier: Identifier, reason: str
) -> None:
    _assert_rejected(policy, identifier, reason)


def test_acme_err_2_every_bad_identifier_gets_its_own_subproblem(
    policy: IdentifierPolicy,
) -> None:
    order = [dns("good.example.com"), dns("nas.local"), dns("*.co.jp"), dns("ok.example.org")]
    with pytest.raises(AcmeError) as exc:
        policy.check_order(order)
    problem = exc.value.problem
    assert problem.type == REJECTED
    assert problem.status == 400
    assert [s.identifier for s in problem.subproblems] == [dns("nas.local"), dns("*.co.jp")]
    wire = json.loads(json.dumps(problem.to_json()))
    assert "identifier" not in wire  # only inside subproblems (§6.7.1)
    assert all("identifier" in s for s in wire["subproblems"])


def test_acme_err_2_mixed_problem_types_use_compound(policy: IdentifierPolicy) -> None:
    with pytest.raises(AcmeError) as exc:
        policy.check_order([Identifier("ip", "192.0.2.1"), dns("nas.local")])
    problem = exc.value.problem
    assert problem.type == COMPOUND
    assert [s.type for s in problem.subproblems] == [UNSUPPORTED, REJECTED]


def test_acme_err_2_subproblem_keeps_the_identifier_as_sent(policy: IdentifierPolicy) -> None:
    with pytest.raises(AcmeError) as exc:
        policy.check_order([dns("NAS.Local")])
    (sub,) = exc.value.problem.subproblems
    assert sub.identifier == dns("NAS.Local")


MALFORMED_ORDERS = [
    ([], "empty"),
    ([dns(f"n{i}.example.com") for i in range(4)], "over-max"),
]


@pytest.mark.parametrize(("order", "_case"), MALFORMED_ORDERS, ids=[c for _, c in MALFORMED_ORDERS])
def test_acme_ord_2_identifier_count_is_malformed(order: list[Identifier], _case: str) -> None:
    with pytest.raises(AcmeError) as exc:
        IdentifierPolicy(max_names=3).check_order(order)
    assert exc.value.problem.type == MALFORMED
    assert exc.value.problem.subproblems == ()


def test_acme_ord_2_duplicates_removed_case_insensitively_in_order() -> None:
    order = [
        dns("B.example.com"),
        dns("a.example.com"),
        dns("b.EXAMPLE.com"),
        dns("*.b.example.com"),
    ]
    got = IdentifierPolicy(max_names=3).check_order(order)
    assert got == (dns("b.example.com"), dns("a.example.com"), dns("*.b.example.com"))


def test_acme_ord_2_max_names_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IdentifierPolicy(max_names=0)


HELPERS = [
    ("*.example.com", True, "example.com"),
    ("example.com", False, "example.com"),
    ("www.example.com", False, "www.example.com"),
]


@pytest.mark.parametrize(("name", "wild", "base"), HELPERS, ids=[h[0] for h in HELPERS])
def test_acme_authz_2_wildcard_helpers(name: str, wild: bool, base: str) -> None:
    assert is_wildcard(name) is wild
    assert base_domain(name) == base
