"""dns-account-01 (ACCT-1, ADN-3; BR 3.2.2.4.21 with draft-ietf-acme-dns-account-label-00)
against the real test DNS server: the account label, the record under another account's label,
pruning toward the registrable domain and the refused CNAME (SC-101)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.va.dns01 import dns01_txt_value
from acme_ca.va.dns_account import DnsAccountValidator, account_label, record_name
from tests.support.problems import check_problem
from tests.support.va import srv_dns

ACCOUNT = "https://acme.ca.example/acme/acct/17"
OTHER_ACCOUNT = "https://acme.ca.example/acme/acct/18"
KEY_AUTH = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
EXPECTED = dns01_txt_value(KEY_AUTH)
NAME = "www.shop.example.com"


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(http01=False)) as server:
        yield server


@pytest.fixture
def validator(srv: ChallengeTestServer) -> DnsAccountValidator:
    dns = srv_dns(srv)
    return DnsAccountValidator(dns)


def test_acct_1_label_known_answer() -> None:
    """Boulder's dns-account-01 test account URL, with the label Certify's documentation
    gives for it (an independent implementation of the same draft-00 formula)."""
    assert account_label("https://example.com/acme/acct/ExampleAccount") == "_ujmmovf2vn55tgye"
    assert (
        record_name("https://example.com/acme/acct/ExampleAccount", "*.Example.org.")
        == "_ujmmovf2vn55tgye._acme-challenge.example.org"
    )


def test_acct_1_label_is_16_base32_characters_per_account() -> None:
    labels = {account_label(f"https://ca.example/acct/{i}") for i in range(50)}
    assert len(labels) == 50
    assert all(len(label) == 17 and label[1:].isalnum() and label.islower() for label in labels)


async def test_acct_1_record_under_the_account_label_passes(
    srv: ChallengeTestServer, validator: DnsAccountValidator
) -> None:
    srv.store.set_txt(record_name(ACCOUNT, NAME), EXPECTED)
    result = await validator.check(NAME, False, KEY_AUTH, ACCOUNT)
    assert result.ok, result.problem
    assert result.observed == f"{record_name(ACCOUNT, NAME)}: {EXPECTED}"
    (rec,) = result.records
    assert (rec.method, rec.br_method, rec.adn, rec.value, rec.result) == (
        "dns-account-01",
        "3.2.2.4.21",
        NAME,
        EXPECTED,
        "pass",
    )


async def test_acct_1_record_under_another_accounts_label_refused(
    srv: ChallengeTestServer, validator: DnsAccountValidator
) -> None:
    srv.store.set_txt(record_name(OTHER_ACCOUNT, NAME), EXPECTED)
    srv.store.set_txt(f"_acme-challenge.{NAME}", EXPECTED)  # dns-01's name does not count
    result = await validator.check(NAME, False, KEY_AUTH, ACCOUNT)
    problem = check_problem(result, "unauthorized")
    assert account_label(ACCOUNT) in problem.detail


async def test_acct_1_wrong_value_is_incorrect_response(
    srv: ChallengeTestServer, validator: DnsAccountValidator
) -> None:
    srv.store.set_txt(record_name(ACCOUNT, NAME), "stale")
    result = await validator.check(NAME, False, KEY_AUTH, ACCOUNT)
    check_problem(result, "incorrectResponse")


async def test_adn_3_account_pruned_to_base_domain(
    srv: ChallengeTestServer, validator: DnsAccountValidator
) -> None:
    srv.store.set_txt(record_name(ACCOUNT, "example.com"), EXPECTED)
    result = await validator.check(NAME, True, KEY_AUTH, ACCOUNT)
    assert result.ok, result.problem
    assert [r.adn for r in result.records] == [NAME, "shop.example.com", "example.com"]
    assert result.records[-1].identifier == f"*.{NAME}"


async def test_sc_101_account_cname_of_the_adn_refused(
    srv: ChallengeTestServer, validator: DnsAccountValidator
) -> None:
    srv.store.set_cname(record_name(ACCOUNT, NAME), "delegated.example.net")
    srv.store.set_txt("delegated.example.net", EXPECTED)
    result = await validator.check(NAME, False, KEY_AUTH, ACCOUNT)
    problem = check_problem(result, "unauthorized")
    assert "CNAME" in problem.detail
