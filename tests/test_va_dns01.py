"""dns-01 (ACME-CHAL-6, BR §3.2.2.4.7) and the VA's DNS client, against the real test DNS server.

The challenge test server plays our recursive resolver on 127.0.0.1; it never sets AD, so
these tests run with ``require_dnssec=False`` except where they check that a missing AD bit
is refused.  DNSSEC with a real validating resolver is in ``integration/test_dnssec.py``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator

import josepy.jwk
import pytest
from acme import challenges as certbot_challenges
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme.jwk import jwk_from_key
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from acme_ca.va.authority import key_authorization
from acme_ca.va.dns01 import Dns01Validator, challenge_name, dns01_txt_value
from acme_ca.va.resolver import DnsClient, DnsFailure, Nameserver, ResolverSettings
from tests.support.problems import ERR, check_problem
from tests.support.va import srv_dns

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTH = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
EXPECTED = dns01_txt_value(KEY_AUTH)


@pytest.fixture
async def srv() -> AsyncIterator[ChallengeTestServer]:
    async with ChallengeTestServer(ChallengeServerConfig.ephemeral(http01=False)) as server:
        yield server


@pytest.fixture
def validator(srv: ChallengeTestServer) -> Dns01Validator:
    return Dns01Validator(srv_dns(srv, tcp=False))


# --- the TXT value and key authorization (ACME-CHAL-4) -------------------------------------


def test_acme_chal_4_values_match_certbot() -> None:
    """Our key authorization and TXT digest equal what the certbot client computes."""
    key = ec.generate_private_key(ec.SECP256R1())
    ours = jwk_from_key(key.public_key())
    token = b"\x01" * 32
    challenge = certbot_challenges.DNS01(token=token)
    theirs = josepy.jwk.JWKEC(key=key)
    ka = key_authorization(challenge.encode("token"), ours.thumbprint_b64())
    assert ka == challenge.key_authorization(theirs)
    assert dns01_txt_value(ka) == challenge.validation(theirs)
    assert "=" not in dns01_txt_value(ka)


def test_acme_chal_6_challenge_name() -> None:
    assert challenge_name("Example.TEST.") == "_acme-challenge.example.test"
    assert challenge_name("*.example.test") == "_acme-challenge.example.test"


# --- dns-01 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_acme_chal_6_good(srv: ChallengeTestServer, tcp: bool) -> None:
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    result = await Dns01Validator(srv_dns(srv, tcp=tcp)).check("example.test", KEY_AUTH)
    assert result.ok, result.problem
    assert result.observed == EXPECTED
    (record,) = result.records
    assert record.method == "dns-01"
    assert record.hostname == "example.test"
    assert record.query == "_acme-challenge.example.test TXT"
    assert record.server == f"127.0.0.1:{srv.dns_port}"
    assert record.perspective == "primary"
    assert EXPECTED in (record.response or "")
    json.dumps(result.to_json())
    (event,) = srv.store.dns_history("_acme-challenge.example.test")
    assert event.transport == ("tcp" if tcp else "udp")


async def test_acme_chal_6_wrong_value(srv: ChallengeTestServer, validator: Dns01Validator) -> None:
    srv.store.set_txt("_acme-challenge.example.test", "not-the-digest")
    result = await validator.check("example.test", KEY_AUTH)
    assert not result.ok and result.problem is not None
    assert result.problem.type == ERR + "incorrectResponse"
    assert result.problem.status == 403
    assert "1 found" in result.problem.detail
    assert result.observed == "not-the-digest"


async def test_acme_chal_6_no_record(srv: ChallengeTestServer, validator: Dns01Validator) -> None:
    result = await validator.check("example.test", KEY_AUTH)
    problem = check_problem(result, "incorrectResponse")
    assert "No TXT record" in problem.detail


async def test_acme_chal_6_nxdomain_is_empty_not_failure(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    srv.store.set_nxdomain("_acme-challenge.example.test")
    result = await validator.check("example.test", KEY_AUTH)
    check_problem(result, "incorrectResponse")
    assert "NXDOMAIN" in (result.records[0].response or "")


async def test_acme_chal_6_txt_among_several(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    for value in ("stale-value", EXPECTED, "value-for-the-wildcard"):
        srv.store.set_txt("_acme-challenge.example.test", value)
    result = await validator.check("example.test", KEY_AUTH)
    assert result.ok
    assert result.observed == EXPECTED


async def test_acme_chal_6_several_none_match_counts_them(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    for value in ("one", "two", "three"):
        srv.store.set_txt("_acme-challenge.example.test", value)
    result = await validator.check("example.test", KEY_AUTH)
    assert result.problem is not None
    assert "3 found" in result.problem.detail
    assert result.observed == "one\nthree\ntwo"


async def test_acme_chal_6_wildcard_checked_at_base_name(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    result = await validator.check("*.example.test", KEY_AUTH)
    assert result.ok


async def test_acme_chal_6_cname_chained(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    """Delegated validation: the challenge name is an alias, twice over."""
    srv.store.set_cname("_acme-challenge.example.test", "hop1.delegate.test")
    srv.store.set_cname("hop1.delegate.test", "hop2.delegate.test")
    srv.store.set_txt("hop2.delegate.test", EXPECTED)
    result = await validator.check("example.test", KEY_AUTH)
    assert result.ok, result.problem
    response = result.records[0].response or ""
    assert "CNAME hop1.delegate.test" in response
    assert "CNAME hop2.delegate.test" in response


async def test_acme_chal_6_cname_loop_is_dns_problem(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    srv.store.set_cname("_acme-challenge.example.test", "a.loop.test")
    srv.store.set_cname("a.loop.test", "_acme-challenge.example.test")
    result = await validator.check("example.test", KEY_AUTH)
    check_problem(result, "dns")


async def test_acme_chal_6_servfail(srv: ChallengeTestServer, validator: Dns01Validator) -> None:
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    srv.store.set_servfail("_acme-challenge.example.test")
    result = await validator.check("example.test", KEY_AUTH)
    assert not result.ok and result.problem is not None
    assert result.problem.type == ERR + "dns"
    assert result.problem.status == 400
    assert "servfail" in result.problem.detail
    assert result.records[0].error is not None


async def test_acme_chal_6_truncated_udp_answer_retried_over_tcp(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    for i in range(12):
        srv.store.set_txt("_acme-challenge.example.test", f"{i:02d}" + "x" * 200)
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    result = await validator.check("example.test", KEY_AUTH)
    assert result.ok, result.problem
    transports = [e.transport for e in srv.store.dns_history("_acme-challenge.example.test")]
    assert transports == ["udp", "tcp"]


async def test_br_dcv_1_unauthenticated_answer_refused_when_dnssec_required(
    srv: ChallengeTestServer,
) -> None:
    """The test server sets no AD bit: with DNSSEC required, its answer is not good enough."""
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    result = await Dns01Validator(srv_dns(srv, require_dnssec=True, tcp=False)).check(
        "example.test", KEY_AUTH
    )
    problem = check_problem(result, "dns")
    assert "unauthenticated" in problem.detail
    assert result.records[0].authenticated is False


# --- the DNS client -------------------------------------------------------------------------


@pytest.fixture
def silent_nameserver() -> Iterator[int]:
    """A UDP port that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_resolver_timeout_is_a_failure(silent_nameserver: int) -> None:
    dns = DnsClient(
        ResolverSettings(
            (f"127.0.0.1:{silent_nameserver}",),
            timeout=0.2,
            attempts=2,
            require_dnssec=False,
            tcp=False,
        )
    )
    answer = await dns.query("example.test", "TXT")
    assert answer.failure is DnsFailure.TIMEOUT
    result = await Dns01Validator(dns).check("example.test", KEY_AUTH)
    assert result.problem is not None and result.problem.type == ERR + "dns"


async def test_resolver_falls_back_to_next_nameserver(
    srv: ChallengeTestServer, silent_nameserver: int
) -> None:
    srv.store.set_txt("example.test", "hello")
    dns = DnsClient(
        ResolverSettings(
            (f"127.0.0.1:{silent_nameserver}", f"127.0.0.1:{srv.dns_port}"),
            timeout=2.0,  # as srv_dns: the in-process server's answer, on a loaded machine
            attempts=1,
            require_dnssec=False,
            tcp=False,
        )
    )
    answer = await dns.query("example.test", "TXT")
    assert answer.ok
    assert answer.server == f"127.0.0.1:{srv.dns_port}"


async def test_resolve_addresses(srv: ChallengeTestServer) -> None:
    srv.store.add_a("host.example.test", ["192.0.2.7"])
    srv.store.add_aaaa("host.example.test", ["2001:db8::7"])
    addresses = await srv_dns(srv, tcp=False).resolve_addresses("host.example.test")
    assert [str(a) for a in addresses] == ["2001:db8::7", "192.0.2.7"]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 53),
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("::1", "::1", 53),
        ("[::1]:5353", "::1", 5353),
    ],
    ids=["v4", "v4-port", "v6", "v6-port"],
)
def test_nameserver_parse(text: str, host: str, port: int) -> None:
    assert Nameserver.parse(text) == Nameserver(host, port)


@pytest.mark.parametrize(
    "text", ["resolver.example:53", "127.0.0.1:0", "[::1", ""], ids=["name", "port0", "v6", "empty"]
)
def test_nameserver_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        Nameserver.parse(text)


# --- the Authorization Domain Name (BR 3.2.2.4 with SC-101; 5.4.1 with SC-099) ---------------


async def test_br_3_2_2_4_7_dns01_adn_is_not_pruned(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    """The BR would let dns-01 prune to a parent; this CA does not (RFC 8555 §8.4 names the
    identifier): a value at _acme-challenge.example.test does not validate www.example.test."""
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    result = await validator.check("www.example.test", KEY_AUTH)
    assert result.problem is not None and result.problem.type == ERR + "incorrectResponse"
    (record,) = result.records
    assert record.query == "_acme-challenge.www.example.test TXT"
    assert (record.identifier, record.adn, record.result) == (
        "www.example.test",
        "www.example.test",
        "fail",
    )
    assert srv.store.dns_history("_acme-challenge.example.test") == ()
    # The parent's own challenge does pass: the value was there to be found.
    assert (await validator.check("example.test", KEY_AUTH)).ok


async def test_br_3_2_2_4_7_dns01_cname_of_fqdn_does_not_become_the_adn(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    """www.example.test CNAME target.test: the BR would allow target.test as the ADN; this CA
    asks _acme-challenge.www.example.test only, so a value under the target does not count."""
    srv.store.set_cname("www.example.test", "target.test")
    srv.store.set_txt("_acme-challenge.target.test", EXPECTED)
    result = await validator.check("www.example.test", KEY_AUTH)
    assert not result.ok
    assert [r.query for r in result.records] == ["_acme-challenge.www.example.test TXT"]
    assert result.records[0].adn == "www.example.test"
    assert srv.store.dns_history("_acme-challenge.target.test") == ()


async def test_br_3_2_2_4_7_dns01_challenge_label_cname_followed_and_recorded(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    """A CNAME *at* _acme-challenge.<ADN> is followed (the value is in a record "returned in
    a query for" the prefixed ADN): delegated validation.  The ADN stays the FQDN; the chain
    is in the record for the auditor."""
    srv.store.set_cname("_acme-challenge.www.example.test", "www.acme-delegate.test")
    srv.store.set_txt("www.acme-delegate.test", EXPECTED)
    result = await validator.check("www.example.test", KEY_AUTH)
    assert result.ok, result.problem
    (record,) = result.records
    assert record.adn == "www.example.test"
    assert record.response is not None and "CNAME www.acme-delegate.test" in record.response


@pytest.mark.parametrize("spelling", ["flag", "prefix"])
async def test_br_3_2_2_4_7_dns01_wildcard_adn_is_base_name(
    srv: ChallengeTestServer, validator: Dns01Validator, spelling: str
) -> None:
    """*.www.example.test: ``*.`` removed, nothing pruned -- the ADN is www.example.test."""
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    if spelling == "flag":
        result = await validator.check("www.example.test", KEY_AUTH, wildcard=True)
    else:
        result = await validator.check("*.www.example.test", KEY_AUTH)
    assert not result.ok
    srv.store.set_txt("_acme-challenge.www.example.test", EXPECTED)
    if spelling == "flag":
        result = await validator.check("www.example.test", KEY_AUTH, wildcard=True)
    else:
        result = await validator.check("*.www.example.test", KEY_AUTH)
    assert result.ok, result.problem
    (record,) = result.records
    assert (record.identifier, record.adn) == ("*.www.example.test", "www.example.test")


async def test_br_5_4_1_dns01_record_names_value_adn_and_method(
    srv: ChallengeTestServer, validator: Dns01Validator
) -> None:
    """SC-099: the record names what was validated, the ADN, the method by ACME label and BR
    section, and the TXT value that proved control."""
    srv.store.set_txt("_acme-challenge.example.test", EXPECTED)
    result = await validator.check("example.test", KEY_AUTH)
    assert result.ok
    (record,) = result.records
    body = record.to_json()
    assert {k: body[k] for k in ("method", "brMethod", "identifier", "adn", "value", "result")} == {
        "method": "dns-01",
        "brMethod": "3.2.2.4.7",
        "identifier": "example.test",
        "adn": "example.test",
        "value": EXPECTED,
        "result": "pass",
    }
