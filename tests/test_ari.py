"""ACME Renewal Information (RFC 9773; ARI-1..5): certIDs, the renewalInfo resource and
newOrder's ``replaces``, with the RFC's test vector and with real certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from acme_ca.acme import ari
from acme_ca.acme.b64 import b64url_encode
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import RunningCa
from tests.support.jws import Reply
from tests.support.orders import Subscriber, subscriber
from tests.support.problems import ERR, assert_problem
from tests.support.revocation import (
    Leaf,
    ThrowawayIssuer,
    account_id_of,
    make_issuer,
    make_leaf,
    store_certificate,
)

#: RFC 9773 §4.1 and Appendix A.
VECTOR = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
VECTOR_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
VECTOR_SERIAL = 0x87654321


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------------
# ARI-2: certID (pure)


def test_ari_2_certid_test_vector() -> None:
    parsed = ari.parse_cert_id(VECTOR)
    assert parsed.key_identifier == VECTOR_AKI
    assert parsed.serial == VECTOR_SERIAL
    assert parsed.serial_hex == "87654321"
    assert str(parsed) == VECTOR
    assert ari.cert_id(VECTOR_AKI, VECTOR_SERIAL) == VECTOR
    assert ari.serial_content_octets(VECTOR_SERIAL) == bytes.fromhex("0087654321")


def test_ari_2_certid_of_a_real_certificate_matches_the_vector() -> None:
    issuer = make_issuer("Vector Issuer", ski=VECTOR_AKI)
    leaf = make_leaf(issuer, ["acme.example.com"], serial=VECTOR_SERIAL)
    assert ari.cert_id_of(leaf.cert) == VECTOR
    assert ari.matches(leaf.der, ari.parse_cert_id(VECTOR))
    other = make_leaf(make_issuer("Other"), ["acme.example.com"], serial=VECTOR_SERIAL)
    assert not ari.matches(other.der, ari.parse_cert_id(VECTOR)), "AKI must match too"


@pytest.mark.parametrize(
    "serial",
    [1, 0x7F, 0x80, 0xFF, 0x0100, 0x87654321, 2**159 - 1, 2**127 + 12345],
)
def test_ari_2_certid_round_trips_serials(serial: int) -> None:
    text = ari.cert_id(b"\x01\x02\x03", serial)
    assert "=" not in text
    assert ari.parse_cert_id(text) == ari.CertId(b"\x01\x02\x03", serial)
    octets = ari.serial_content_octets(serial)
    assert not octets[0] & 0x80, "positive INTEGER"
    assert len(octets) == 1 or octets[0] != 0 or octets[1] & 0x80, "minimal"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ",  # no serial part
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE.AA",  # three parts
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ=.AIdlQyE=",  # padding
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE=",
        ".AIdlQyE",  # empty keyIdentifier
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.",  # empty serial
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.h2VDIQ",  # 0x87654321 without its 0x00: negative
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AAEC",  # 00 01 02: superfluous leading zero
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AA",  # serial zero
        "aYhba4dGQEHhs3uEe6CuLN4ByNR.AIdlQyE",  # non-canonical trailing bits
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdl+yE",  # not the URL-safe alphabet
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ." + b64url_encode(b"\x01" * 21),  # > 20 octets
        "A" * 300,
    ],
)
def test_ari_2_malformed_certids_rejected(bad: str) -> None:
    with pytest.raises(ari.CertIdError):
        ari.parse_cert_id(bad)


# ------------------------------------------------------------------------------------------
# ARI-3: the window (pure)


def test_ari_3_window_is_the_last_third_ending_before_not_after() -> None:
    not_before = datetime(2026, 6, 1, tzinfo=UTC)
    not_after = not_before + timedelta(days=199) - timedelta(seconds=1)
    window = ari.suggested_window(not_before, not_after, None)
    lifetime = not_after - not_before
    assert abs(window.start - (not_before + lifetime * 2 / 3)) < timedelta(seconds=2)
    assert abs(window.end - (not_after - lifetime / 10)) < timedelta(seconds=2)
    assert not_before < window.start < window.end < not_after
    assert window.start.microsecond == window.end.microsecond == 0
    assert window.retry_after == timedelta(hours=6)
    # Degenerate lifetimes still give end > start.
    tiny = ari.suggested_window(not_before, not_before + timedelta(seconds=2), None)
    assert tiny.end > tiny.start


def test_ari_3_revoked_window_is_in_the_past() -> None:
    not_before = datetime(2026, 6, 1, tzinfo=UTC)
    revoked_at = not_before + timedelta(days=3, microseconds=5)
    window = ari.suggested_window(not_before, not_before + timedelta(days=90), revoked_at)
    assert window.end == revoked_at.replace(microsecond=0)
    assert window.start == window.end - timedelta(hours=1)
    assert window.retry_after == timedelta(hours=1)


# ------------------------------------------------------------------------------------------
# HTTP: directory, GET renewalInfo, newOrder replaces


@pytest.fixture(scope="module")
def issuer() -> ThrowawayIssuer:
    return make_issuer("ARI Test Issuer")


async def stored(pool: asyncpg.Pool, sub: Subscriber, issuer: ThrowawayIssuer, *names: str) -> Leaf:
    leaf = make_leaf(issuer, list(names))
    await store_certificate(pool, account_id_of(sub), leaf)
    return leaf


async def renewal_info(
    session: aiohttp.ClientSession, directory: dict[str, Any], cert_id: str
) -> tuple[int, dict[str, str], Any]:
    async with session.get(f"{directory['renewalInfo']}/{cert_id}") as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def test_ari_1_directory_has_renewal_info(sub: Subscriber, va_ca: RunningCa) -> None:
    assert sub.directory["renewalInfo"] == va_ca.base_url + "/acme/renewal-info"


async def test_ari_3_renewal_info_for_an_issued_certificate(
    sub: Subscriber, pool: asyncpg.Pool, issuer: ThrowawayIssuer, session: aiohttp.ClientSession
) -> None:
    leaf = await stored(pool, sub, issuer, "ari.example.com")
    # Unauthenticated: a plain GET, no JWS, no account.
    status, headers, body = await renewal_info(session, sub.directory, ari.cert_id_of(leaf.cert))
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Retry-After"] == "21600"
    assert "public" in headers["Cache-Control"]
    assert set(body) == {"suggestedWindow"}
    start = parse_time(body["suggestedWindow"]["start"])
    end = parse_time(body["suggestedWindow"]["end"])
    not_before, not_after = leaf.cert.not_valid_before_utc, leaf.cert.not_valid_after_utc
    lifetime = not_after - not_before
    assert abs(start - (not_before + lifetime * 2 / 3)) < timedelta(seconds=2)
    assert abs(end - (not_after - lifetime / 10)) < timedelta(seconds=2)
    assert start < end


async def test_ari_3_renewal_info_for_a_revoked_certificate_says_renew_now(
    sub: Subscriber, pool: asyncpg.Pool, issuer: ThrowawayIssuer, session: aiohttp.ClientSession
) -> None:
    leaf = await stored(pool, sub, issuer, "revoked-ari.example.com")
    reply = await sub.post(
        sub.directory["revokeCert"], {"certificate": b64url_encode(leaf.der), "reason": 4}
    )
    assert reply.status == 200, reply.body
    status, headers, body = await renewal_info(session, sub.directory, ari.cert_id_of(leaf.cert))
    assert status == 200, body
    assert headers["Retry-After"] == "3600"
    start = parse_time(body["suggestedWindow"]["start"])
    end = parse_time(body["suggestedWindow"]["end"])
    assert start < end <= datetime.now(UTC)


async def test_ari_3_renewal_info_errors(
    sub: Subscriber, pool: asyncpg.Pool, issuer: ThrowawayIssuer, session: aiohttp.ClientSession
) -> None:
    leaf = await stored(pool, sub, issuer, "err-ari.example.com")
    status, _, body = await renewal_info(session, sub.directory, "not-a-cert-id")
    assert (status, body["type"]) == (400, ERR + "malformed"), body
    status, _, body = await renewal_info(session, sub.directory, VECTOR + "=")
    assert (status, body["type"]) == (400, ERR + "malformed"), body
    # Well-formed but unknown: the RFC's own example certificate was not issued here.
    status, _, body = await renewal_info(session, sub.directory, VECTOR)
    assert status == 404, body
    # Our serial with another issuer's key identifier is not our certificate.
    wrong_aki = ari.cert_id(b"\x01" * 20, leaf.cert.serial_number)
    status, _, body = await renewal_info(session, sub.directory, wrong_aki)
    assert status == 404, body
    # Only GET (and HEAD) are answered (ACME-GET-1).
    async with session.post(
        f"{sub.directory['renewalInfo']}/{ari.cert_id_of(leaf.cert)}", data=b"{}"
    ) as resp:
        assert resp.status == 405
    # The directory's renewalInfo URL is only a prefix.
    async with session.get(sub.directory["renewalInfo"]) as resp:
        assert resp.status == 405
        assert (await resp.json())["type"] == ERR + "malformed"


# ARI-5: newOrder replaces ---------------------------------------------------------------


async def new_order(sub: Subscriber, names: list[str], replaces: Any) -> Reply:
    return await sub.post(
        sub.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": n} for n in names], "replaces": replaces},
    )


async def test_ari_5_replaces_recorded_and_reflected(
    sub: Subscriber, pool: asyncpg.Pool, issuer: ThrowawayIssuer
) -> None:
    leaf = await stored(pool, sub, issuer, "renew.example.com", "www.renew.example.com")
    cert_id = ari.cert_id_of(leaf.cert)
    # One shared identifier is enough; the new order may add or drop names.
    reply = await new_order(sub, ["renew.example.com", "api.renew.example.com"], cert_id)
    assert reply.status == 201, reply.body
    assert reply.body["replaces"] == cert_id
    fetched = await sub.get(reply.headers["Location"])
    assert fetched.body["replaces"] == cert_id
    order_id = int(reply.headers["Location"].rsplit("/", 1)[1])
    assert await pool.fetchval("SELECT replaces FROM orders WHERE id = $1", order_id) == cert_id
    details = await pool.fetchval(
        "SELECT details FROM audit_events WHERE event = 'order.created' AND order_id = $1",
        order_id,
    )
    assert details["replaces"] == cert_id

    # An order without replaces carries no such field.
    plain = await sub.new_order("plain.example.com")
    assert plain.status == 201 and "replaces" not in plain.body


async def test_ari_5_already_replaced_conflict(
    sub: Subscriber, pool: asyncpg.Pool, issuer: ThrowawayIssuer
) -> None:
    leaf = await stored(pool, sub, issuer, "twice.example.com")
    cert_id = ari.cert_id_of(leaf.cert)
    first = await new_order(sub, ["twice.example.com"], cert_id)
    assert first.status == 201, first.body
    second = await new_order(sub, ["twice.example.com"], cert_id)
    assert_problem(second, 409, "alreadyReplaced")
    assert second.headers.get("Replay-Nonce")

    # Once the replacing order is invalid (here: its authorization deactivated), another
    # order may replace the certificate (RFC 9773 §5: "an Order that is not invalid").
    deactivated = await sub.post(first.body["authorizations"][0], {"status": "deactivated"})
    assert deactivated.status == 200
    assert (await sub.get(first.headers["Location"])).body["status"] == "invalid"
    third = await new_order(sub, ["twice.example.com"], cert_id)
    assert third.status == 201, third.body
    assert third.body["replaces"] == cert_id

    # An expired pending order does not count either.
    await pool.execute(
        "UPDATE orders SET expires_at = $2 WHERE id = $1",
        int(third.headers["Location"].rsplit("/", 1)[1]),
        datetime.now(UTC) - timedelta(seconds=1),
    )
    assert (await new_order(sub, ["twice.example.com"], cert_id)).status == 201


async def test_ari_5_replaces_checks(
    sub: Subscriber,
    va_ca: RunningCa,
    session: aiohttp.ClientSession,
    challsrv: ChallengeTestServer,
    pool: asyncpg.Pool,
    issuer: ThrowawayIssuer,
) -> None:
    leaf = await stored(pool, sub, issuer, "checks.example.com")
    cert_id = ari.cert_id_of(leaf.cert)
    # Malformed certID.
    assert_problem(await new_order(sub, ["checks.example.com"], "nope"), 400, "malformed")
    assert_problem(await new_order(sub, ["checks.example.com"], 42), 400, "malformed")
    # Well formed, but not a certificate of ours (the RFC vector).
    assert_problem(await new_order(sub, ["checks.example.com"], VECTOR), 400, "malformed")
    # No identifier in common.
    assert_problem(await new_order(sub, ["unrelated.example.com"], cert_id), 400, "malformed")
    # Another account's certificate.
    other = await subscriber(va_ca, session, challsrv)
    assert_problem(await new_order(other, ["checks.example.com"], cert_id), 403, "unauthorized")
    # None of the refused requests created an order or marked the certificate replaced.
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE replaces IS NOT NULL") == 0
    assert (await new_order(sub, ["checks.example.com"], cert_id)).status == 201
