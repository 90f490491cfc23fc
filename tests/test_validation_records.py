"""Validation records as an auditor reads them (BR 5.4.1 as amended by SC-099; BR 5.4.1 items
7-8 for MPIC) and the Authorization Domain Name each method uses (BR 3.2.2.4 as amended by
SC-101), for each method the CA offers: http-01 and dns-01.

The checks run against the challenge test server; the stored form is read back from real
PostgreSQL after a validation through the ACME API; corroboration uses the real remote VA
application over mutual TLS (``serve --test --perspectives``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from acme_ca.acme.b64 import b64url_encode
from acme_ca.clock import FixedClock
from acme_ca.config import Config
from acme_ca.remote_va.local import local_remote_vas
from acme_ca.remote_va.primary import build_validator
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.va.dns01 import dns01_txt_value
from acme_ca.va.methods import WildcardNotAllowed, applied_for, authorization_domain_name
from acme_ca.va.mpic import MpicValidator
from acme_ca.va.perspectives import Perspective
from acme_ca.va.records import ChallengeRequest, CheckResult, FormatError, ValidationRecord
from acme_ca.va.registry import BR_METHODS, METHODS
from acme_ca.va.settings import VASettings
from tests.fixtures import CaFactory, free_socket
from tests.support.orders import subscriber, validation_config
from tests.support.va import local_authority

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
KEY_AUTH = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
ACCOUNT = "https://ca.example/acme/acct/1"
NOW = datetime(2026, 12, 20, 9, 30, tzinfo=UTC)


def publish(srv: ChallengeTestServer, method: str, adn: str) -> str:
    """Put the challenge response where ``method`` looks; returns the value that proves it."""
    if method == "http-01":
        srv.store.add_http01(TOKEN, KEY_AUTH)
        return KEY_AUTH
    srv.store.set_txt(f"_acme-challenge.{adn}", dns01_txt_value(KEY_AUTH))
    return dns01_txt_value(KEY_AUTH)


# --- the method table (BR 3.2.2.4 with SC-101) -----------------------------------------------


def test_br_3_2_2_4_offered_methods_and_their_adn_columns() -> None:
    """The registry holds exactly these methods with the BR's columns: http-01 (3.2.2.4.19: no
    wildcard, prune or CNAME) and dns-01 (3.2.2.4.7: all three allowed by the BR); the RA
    records the same sections."""
    columns = {
        label: (m.dcv.section, m.dcv.wildcard, m.dcv.prune, m.dcv.cname)
        for label, m in METHODS.items()
    }
    assert columns == {
        "http-01": ("3.2.2.4.19", False, False, False),
        "dns-01": ("3.2.2.4.7", True, True, True),
        "tls-alpn-01": ("3.2.2.4.20", False, False, False),
        "dns-persist-01": ("3.2.2.4.22", True, True, False),
        "dns-account-01": ("3.2.2.4.21", True, True, False),
    }
    assert {label: section for label, (section, *_) in columns.items()} == BR_METHODS


@pytest.mark.parametrize(
    ("method", "identifier", "wildcard", "adn"),
    [
        ("http-01", "www.example.test", False, "www.example.test"),
        ("http-01", "WWW.Example.TEST.", False, "www.example.test"),
        ("http-01", "*.example.test", False, None),
        ("http-01", "example.test", True, None),
        ("dns-01", "a.b.example.test", False, "a.b.example.test"),
        ("dns-01", "b.example.test", True, "b.example.test"),
        ("dns-01", "*.b.example.test", False, "b.example.test"),
    ],
    ids=[
        "http-fqdn",
        "http-normalised",
        "http-star",
        "http-flag",
        "dns-fqdn-not-pruned",
        "dns-wildcard-flag",
        "dns-wildcard-star",
    ],
)
def test_br_3_2_2_4_adn_is_the_fqdn_never_pruned(
    method: str, identifier: str, wildcard: bool, adn: str | None
) -> None:
    """Steps 1-5 of BR 3.2.2.4 as this CA takes them: ``*.`` removed, nothing pruned, no CNAME
    target; a method without the Wildcard column has no ADN for a wildcard."""
    if adn is None:
        with pytest.raises(WildcardNotAllowed, match=METHODS[method].dcv.section):
            authorization_domain_name(METHODS[method].dcv, identifier, wildcard)
    else:
        assert authorization_domain_name(METHODS[method].dcv, identifier, wildcard) == adn


# --- what a record holds (BR 5.4.1 with SC-099) ----------------------------------------------


@pytest.mark.parametrize(
    ("method", "identifier", "wildcard"),
    [
        ("http-01", "www.example.test", False),
        ("dns-01", "www.example.test", False),
        ("dns-01", "www.example.test", True),
    ],
    ids=["http-01", "dns-01", "dns-01-wildcard"],
)
async def test_br_3_2_2_4_record_names_method_section_and_label(
    srv: ChallengeTestServer, method: str, identifier: str, wildcard: bool
) -> None:
    """Every record of the method names the applied-for name, the ADN, the ACME label and the
    BR section and the value that proved control; the deciding one says ``pass``."""
    value = publish(srv, method, identifier)
    result = await local_authority(srv, FixedClock(NOW)).validate(
        ChallengeRequest(method, identifier, wildcard, TOKEN, KEY_AUTH, ACCOUNT)
    )
    assert result.ok, result.problem
    dcv = [r for r in result.records if r.method == method]
    assert dcv, result.records
    expected_name = f"*.{identifier}" if wildcard else identifier
    for record in dcv:
        body = json.loads(json.dumps(record.to_json()))
        assert body["method"] == method
        assert body["brMethod"] == METHODS[method].dcv.section
        assert body["identifier"] == expected_name
        assert body["adn"] == identifier
        assert body["value"] == value
        assert body["perspective"] == "primary"
    assert dcv[-1].result == "pass"
    assert [r.result for r in result.records if r.method == "caa"] == [None] * (
        len(result.records) - len(dcv)
    )


@pytest.mark.parametrize("method", ["http-01", "dns-01"])
async def test_br_5_4_1_failed_validation_is_recorded_with_its_adn(
    srv: ChallengeTestServer, method: str
) -> None:
    """A failed attempt is a verification activity too: the record names the ADN, the value
    looked for and ``fail``.  (dns-01: the parent holds the value, and www must not pass.)"""
    if method == "dns-01":
        publish(srv, method, "example.test")
    result = await local_authority(srv, FixedClock(NOW)).validate(
        ChallengeRequest(method, "www.example.test", False, TOKEN, KEY_AUTH, ACCOUNT)
    )
    assert not result.ok
    last = result.records[-1]
    assert (last.method, last.adn, last.result) == (method, "www.example.test", "fail")
    assert last.value == (KEY_AUTH if method == "http-01" else dns01_txt_value(KEY_AUTH))


def test_br_5_4_1_record_json_round_trip() -> None:
    record = ValidationRecord(
        method="dns-01",
        hostname="example.test",
        query="_acme-challenge.example.test TXT",
        at=NOW,
        identifier="*.example.test",
        adn="example.test",
        br_method="3.2.2.4.7",
        value="abc",
        result="pass",
    )
    assert ValidationRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    with pytest.raises(FormatError, match="result"):
        ValidationRecord.from_json({**record.to_json(), "result": "maybe"})


def test_from_json_reads_records_written_before_sc_099() -> None:
    """Records already stored, and replies from a remote VA of an older version, lack the new
    fields; they still read, and write back unchanged."""
    old = {
        "method": "http-01",
        "perspective": "us-east",
        "hostname": "example.test",
        "query": "http://example.test/.well-known/acme-challenge/x",
        "at": "2026-04-01T12:00:00+00:00",
        "server": "192.0.2.7:80",
        "addresses": ["192.0.2.7"],
        "response": "HTTP 200 body: 'x.y'",
        "rir": "ARIN",
    }
    record = ValidationRecord.from_json(old)
    assert (record.identifier, record.adn, record.br_method, record.value, record.result) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert record.to_json() == old
    result = CheckResult.from_json({"ok": True, "records": [old], "observed": "x.y"})
    assert result.records == (record,)


def test_applied_for_spells_the_certificate_name() -> None:
    assert applied_for("Example.TEST.", False) == "example.test"
    assert applied_for("example.test", True) == "*.example.test"
    assert applied_for("*.example.test", True) == "*.example.test"


# --- stored: challenges.validation_records and audit_events ----------------------------------


@pytest.mark.parametrize(
    ("method", "names"),
    [("http-01", ("www.example.com",)), ("dns-01", ("*.example.org",))],
    ids=["http-01", "dns-01-wildcard"],
)
async def test_br_5_4_1_stored_records_name_value_adn_and_method(
    ca_factory: CaFactory,
    srv: ChallengeTestServer,
    dsn: str,
    method: str,
    names: tuple[str, ...],
) -> None:
    """Through the ACME API into PostgreSQL: the challenge's records and the audit event's
    copy both name what was validated, the ADN, the method by label and section, the value
    and the result."""
    ca = await ca_factory.start(**validation_config(srv))
    async with aiohttp.ClientSession() as session:
        sub = await subscriber(ca, session, srv)
        reply = await sub.new_order(*names)
        authz_url = reply.body["authorizations"][0]
        authz = (await sub.get(authz_url)).body
        challenge = next(c for c in authz["challenges"] if c["type"] == method)
        key_auth = sub.key_authorization(challenge["token"])
        adn = authz["identifier"]["value"]
        if method == "http-01":
            srv.store.add_http01(challenge["token"], key_auth)
            value = key_auth
        else:
            value = b64url_encode(hashlib.sha256(key_auth.encode()).digest())
            srv.store.set_txt(f"_acme-challenge.{adn}", value)
        await sub.post(challenge["url"], {})
        assert (await sub.wait_authz(authz_url))["status"] == "valid"
    challenge_id = int(challenge["url"].rsplit("/", 1)[1])
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval(
            "SELECT validation_records FROM challenges WHERE id = $1", challenge_id
        )
        audit = await conn.fetchval(
            "SELECT details FROM audit_events WHERE event = 'challenge.valid'"
            " AND (details->>'challenge_id')::bigint = $1",
            challenge_id,
        )
    finally:
        await conn.close()
    stored, audit = json.loads(stored), json.loads(audit)
    assert audit["records"] == stored
    dcv = [r for r in stored if r["method"] == method]
    assert dcv
    for record in dcv:
        assert record["identifier"] == names[0]
        assert record["adn"] == adn == names[0].removeprefix("*.")
        assert record["brMethod"] == METHODS[method].dcv.section
        assert record["value"] == value
    assert dcv[-1]["result"] == "pass"


# --- corroboration: each perspective's id and result, and the quorum (BR 5.4.1 items 7-8) ----


async def test_br_5_4_1_mpic_records_each_perspective_result_and_quorum(
    srv: ChallengeTestServer, tmp_path: Path
) -> None:
    """Five real remote VAs corroborate and a sixth cannot be reached: the record set names
    each perspective's id, RIR and result, the quorum "5/6", and the quorum record names what
    was validated -- the example record of docs/mpic.md comes from this run."""
    clock = FixedClock(NOW)
    config = replace(
        Config(), home=tmp_path, test_mode=True, test_perspectives=5, **validation_config(srv)
    )
    value = publish(srv, "dns-01", "www.example.test")
    with free_socket() as closed:
        port = closed.getsockname()[1]
    unreachable = Perspective("offline", "LACNIC", f"https://127.0.0.1:{port}")
    async with local_remote_vas(VASettings.from_config(config), config.home, clock) as local:
        setup = replace(local, perspectives=(*local.perspectives, unreachable))
        validator = build_validator(VASettings.from_config(config), clock, setup)
        assert isinstance(validator, MpicValidator)
        result = await validator.validate(
            ChallengeRequest("dns-01", "www.example.test", True, TOKEN, KEY_AUTH, ACCOUNT)
        )
    assert result.ok, result.problem
    summaries = {
        r.perspective: r for r in result.records if r.corroborated is not None and not r.quorum
    }
    assert sorted(summaries) == ["offline", "test-1", "test-2", "test-3", "test-4", "test-5"]
    for pid, record in summaries.items():
        assert record.rir is not None
        assert (record.identifier, record.adn, record.br_method, record.value) == (
            "*.www.example.test",
            "www.example.test",
            "3.2.2.4.7",
            value,
        ), pid
        if pid == "offline":
            assert (record.result, record.corroborated) == (None, False)
            assert record.error is not None and record.error.startswith("unavailable")
        else:
            assert (record.result, record.corroborated) == ("pass", True)
    quorum = result.records[-1]
    assert (quorum.perspective, quorum.quorum, quorum.result) == ("primary", "5/6", "pass")
    assert (quorum.identifier, quorum.adn, quorum.method, quorum.br_method, quorum.value) == (
        "*.www.example.test",
        "www.example.test",
        "dns-01",
        "3.2.2.4.7",
        value,
    )
    # Each remote's own lookup is kept, under its id, naming the same ADN.
    own = [r for r in result.records if r.query == "_acme-challenge.www.example.test TXT"]
    assert sorted(r.perspective for r in own) == [
        "primary",
        "test-1",
        "test-2",
        "test-3",
        "test-4",
        "test-5",
    ]
    assert all(r.adn == "www.example.test" and r.result == "pass" for r in own)
    # The stored form is JSON: what an auditor reads, and what the signing worker re-checks.
    assert [CheckResult.from_json(json.loads(json.dumps(result.to_json())))] == [result]
