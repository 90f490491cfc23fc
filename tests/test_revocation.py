"""revokeCert (RFC 8555 §7.6; ACME-REV-1..3), key blocking (BR 6.1.1.3(4)) and the operator's
``acme-ca admin revoke`` (CP 4.9, BR 4.9.1.1), through the HTTP API and the real console script.

Issued certificates are made cheaply: a throwaway issuer signs real leaf certificates in the
test, and matching order and certificate rows are inserted with SQL.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme.b64 import b64url_decode, b64url_encode
from acme_ca.acme.jwk import jwk_from_key
from acme_ca.acme.problems import AcmeError
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.keyid import spki_sha256
from acme_ca.ra.csr import check_csr
from acme_ca.ra.keys import KeyPolicy
from acme_ca.ra.revocation import REASON_CODES
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import RunningCa
from tests.support.cli import run_cli
from tests.support.jws import JwsClient, Reply
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

NAMES = ["rev.example.com", "www.rev.example.com"]


# ------------------------------------------------------------------------------------------
# a throwaway issuer and leaf certificates, stored as if this CA had issued them


async def cert_row(pool: asyncpg.Pool, serial: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM certificates WHERE serial = $1", serial)
    assert row is not None
    return row


async def is_blocked(pool: asyncpg.Pool, leaf: Leaf) -> bool:
    return await IssuanceRepository(pool).is_key_blocked(spki_sha256(leaf.key.public_key()))


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def issuer() -> ThrowawayIssuer:
    return make_issuer()


@pytest.fixture
async def owner(
    va_ca: RunningCa, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> Subscriber:
    return await subscriber(va_ca, session, challsrv)


@pytest.fixture
async def leaf(pool: asyncpg.Pool, owner: Subscriber, issuer: ThrowawayIssuer) -> Leaf:
    made = make_leaf(issuer, NAMES)
    await store_certificate(pool, account_id_of(owner), made)
    return made


async def revoke(
    client: JwsClient, leaf: Leaf, reason: Any = None, *, with_cert_key: bool = False, **kw: Any
) -> Reply:
    payload: dict[str, Any] = {"certificate": b64url_encode(leaf.der)}
    if reason is not None:
        payload["reason"] = reason
    if with_cert_key:
        return await client.post(
            client.directory["revokeCert"], payload, key=leaf.key, use_jwk=True, **kw
        )
    return await client.post(client.directory["revokeCert"], payload, **kw)


async def audit(pool: asyncpg.Pool, event: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT at, actor, account_id, order_id, details FROM audit_events "
            "WHERE event = $1 ORDER BY id",
            event,
        )
    )


# ------------------------------------------------------------------------------------------
# ACME-REV-1: who may revoke


async def test_acme_rev_1_issuing_account_revokes(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool
) -> None:
    reply = await revoke(owner, leaf)
    assert reply.status == 200, reply.body
    assert reply.headers.get("Replay-Nonce")
    row = await cert_row(pool, leaf.serial)
    assert row["revoked_at"] is not None
    assert row["revocation_reason"] == 0
    (event,) = await audit(pool, "certificate.revoked")
    assert event["actor"] == f"account:{account_id_of(owner)}"
    assert event["details"] == {"serial": leaf.serial, "reason": 0}
    assert not await is_blocked(pool, leaf), "an account's plain revocation blocks no key"


async def test_acme_rev_3_success_is_200_with_an_empty_body(owner: Subscriber, leaf: Leaf) -> None:
    """RFC 8555 §7.6 defines no body; Boulder and Pebble send none, and acme.sh counts only
    an empty body as success (a JSON ``null`` made it retry with the certificate key)."""
    reply = await revoke(owner, leaf)
    assert reply.status == 200, reply.body
    assert reply.raw == b""
    assert reply.headers.get("Content-Length") == "0"
    assert "Content-Type" not in reply.headers


async def test_acme_rev_3_revoked_certificate_stays_downloadable(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool
) -> None:
    """RFC 8555 §7.4.2 allows either; acme_ca keeps serving a revoked certificate at its URL
    (a deliberate difference from Pebble, docs/testing-with-acme-ca.md): the same PEM leaf
    before and after revocation."""
    cert_id = await pool.fetchval("SELECT id FROM certificates WHERE serial = $1", leaf.serial)
    url = owner.directory_url.removesuffix("/directory") + f"/acme/cert/{cert_id}"
    before = await owner.post(url, None)
    assert before.status == 200, before.body
    assert (await revoke(owner, leaf)).status == 200
    after = await owner.post(url, None)
    assert after.status == 200, after.body
    assert after.raw == before.raw
    pem = leaf.cert.public_bytes(serialization.Encoding.PEM)
    assert after.raw.startswith(pem)


async def test_acme_rev_1_other_account_with_authorizations_for_all_names(
    va_ca: RunningCa,
    session: aiohttp.ClientSession,
    challsrv: ChallengeTestServer,
    leaf: Leaf,
    pool: asyncpg.Pool,
) -> None:
    other = await subscriber(va_ca, session, challsrv)
    order = await other.new_order(*NAMES)
    for authz_url in order.body["authorizations"]:
        await other.answer(authz_url, "http-01")
    assert (await other.wait_order(order.headers["Location"]))["status"] == "ready"

    reply = await revoke(other, leaf, 4)
    assert reply.status == 200, reply.body
    row = await cert_row(pool, leaf.serial)
    assert row["revocation_reason"] == 4
    (event,) = await audit(pool, "certificate.revoked")
    assert event["actor"] == f"account:{account_id_of(other)}"


async def test_acme_rev_1_other_account_without_authorizations_unauthorized(
    va_ca: RunningCa,
    session: aiohttp.ClientSession,
    challsrv: ChallengeTestServer,
    leaf: Leaf,
    pool: asyncpg.Pool,
) -> None:
    other = await subscriber(va_ca, session, challsrv)
    assert_problem(await revoke(other, leaf), 403, "unauthorized")

    # Authorizations for some of the names are not enough: all of them are needed.
    order = await other.new_order(NAMES[0])
    await other.answer(order.body["authorizations"][0], "http-01")
    assert (await other.wait_order(order.headers["Location"]))["status"] == "ready"
    assert_problem(await revoke(other, leaf, 1), 403, "unauthorized")

    row = await cert_row(pool, leaf.serial)
    assert row["revoked_at"] is None
    assert not await is_blocked(pool, leaf), "a refused keyCompromise request blocks nothing"


async def test_acme_rev_1_certificate_key_via_jwk_revokes_and_blocks_key(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool
) -> None:
    anonymous = JwsClient(owner.session, owner.directory_url, leaf.key)
    await anonymous.load_directory()
    reply = await revoke(anonymous, leaf, with_cert_key=True)
    assert reply.status == 200, reply.body
    row = await cert_row(pool, leaf.serial)
    assert row["revoked_at"] is not None and row["revocation_reason"] == 0
    (event,) = await audit(pool, "certificate.revoked")
    assert event["actor"] == "certificate-key"

    # ACME-REV-3 / BR 6.1.1.3(4): the key is blocked, and a later finalize CSR with it fails.
    assert await is_blocked(pool, leaf)
    blocked = await pool.fetchrow("SELECT reason, source FROM blocked_keys")
    assert "proof of possession" in blocked["reason"] and leaf.serial in blocked["reason"]
    assert blocked["source"] == "certificate-key"
    (key_event,) = await audit(pool, "key.blocked")
    assert key_event["details"]["spki_sha256"] == spki_sha256(leaf.key.public_key()).hex()

    policy = KeyPolicy(
        blocked_key_lookup=IssuanceRepository(pool).is_key_blocked, use_badkeys=False
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False
        )
        .sign(leaf.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    account_spki = owner.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(AcmeError) as refused:
        await check_csr(csr, NAMES, account_spki=account_spki, key_policy=policy)
    assert refused.value.problem.type == ERR + "badCSR"
    assert "blocked" in refused.value.problem.detail

    # A fresh key for the same names is still fine.
    fresh = ec.generate_private_key(ec.SECP256R1())
    ok = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False
        )
        .sign(fresh, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    await check_csr(ok, NAMES, account_spki=account_spki, key_policy=policy)


async def test_acme_rev_1_jwk_that_is_not_the_certificate_key_unauthorized(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool
) -> None:
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = JwsClient(owner.session, owner.directory_url, stranger_key)
    await stranger.load_directory()
    reply = await stranger.post(
        stranger.directory["revokeCert"],
        {"certificate": b64url_encode(leaf.der), "reason": 1},
        use_jwk=True,
    )
    assert_problem(reply, 403, "unauthorized")
    assert (await cert_row(pool, leaf.serial))["revoked_at"] is None
    assert not await is_blocked(pool, leaf)


async def test_acme_rev_1_certificate_not_issued_here_not_found(
    owner: Subscriber, leaf: Leaf, issuer: ThrowawayIssuer
) -> None:
    foreign = make_leaf(make_issuer("Somebody Else's CA"), NAMES)
    assert_problem(await revoke(owner, foreign), 404, "malformed")
    # Same serial as one of ours, different certificate: still not ours.
    lookalike = make_leaf(issuer, NAMES, serial=leaf.cert.serial_number)
    assert_problem(await revoke(owner, lookalike), 404, "malformed")
    # Not a certificate at all.
    reply = await owner.post(owner.directory["revokeCert"], {"certificate": b64url_encode(b"x")})
    assert_problem(reply, 400, "malformed")


# ------------------------------------------------------------------------------------------
# ACME-REV-2: reasons


@pytest.mark.parametrize("reason", [2, 6, 8, 9, 10, 11, -1, "1", True])
async def test_acme_rev_2_bad_revocation_reason(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool, reason: Any
) -> None:
    assert_problem(await revoke(owner, leaf, reason), 400, "badRevocationReason")
    assert (await cert_row(pool, leaf.serial))["revoked_at"] is None


@pytest.mark.parametrize("reason", [0, 3, 4, 5])
async def test_acme_rev_2_subscriber_reasons_accepted(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool, reason: int
) -> None:
    assert (await revoke(owner, leaf, reason)).status == 200
    assert (await cert_row(pool, leaf.serial))["revocation_reason"] == reason
    assert not await is_blocked(pool, leaf)


# ------------------------------------------------------------------------------------------
# ACME-REV-3: success, alreadyRevoked, keyCompromise blocks the key


async def test_acme_rev_3_revoked_twice_already_revoked(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool
) -> None:
    assert (await revoke(owner, leaf, 5)).status == 200
    first = await cert_row(pool, leaf.serial)
    assert_problem(await revoke(owner, leaf, 4), 400, "alreadyRevoked")
    again = await cert_row(pool, leaf.serial)
    assert (again["revoked_at"], again["revocation_reason"]) == (first["revoked_at"], 5)
    assert len(await audit(pool, "certificate.revoked")) == 1


async def test_acme_rev_3_key_compromise_by_account_blocks_key(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool, issuer: ThrowawayIssuer
) -> None:
    assert (await revoke(owner, leaf, 1)).status == 200
    assert (await cert_row(pool, leaf.serial))["revocation_reason"] == 1
    assert await is_blocked(pool, leaf)
    blocked = await pool.fetchrow("SELECT reason, source FROM blocked_keys")
    assert "without proof of possession" in blocked["reason"]
    assert blocked["source"] == f"account:{account_id_of(owner)}"

    # The block covers the key, not the certificate: a sibling with the same key is refused
    # at finalize too (checked by the key policy's lookup).
    policy = KeyPolicy(
        blocked_key_lookup=IssuanceRepository(pool).is_key_blocked, use_badkeys=False
    )
    sibling = make_leaf(issuer, ["other.example.com"], key=leaf.key)
    with pytest.raises(Exception, match="blocked"):
        await policy.check(sibling.cert.public_key(), purpose="csr")


async def test_kc_3_key_compromise_on_revoked_certificate_updates_reason_and_blocks_key(
    owner: Subscriber, leaf: Leaf, pool: asyncpg.Pool
) -> None:
    """BR 7.2.2 / KC-3: a keyCompromise report for a certificate revoked for another reason
    moves it to keyCompromise (the earlier revocationDate stays); a second report is
    alreadyRevoked, and the key stays blocked."""
    assert (await revoke(owner, leaf, 4)).status == 200
    first = await cert_row(pool, leaf.serial)
    assert not await is_blocked(pool, leaf)
    anonymous = JwsClient(owner.session, owner.directory_url, leaf.key)
    await anonymous.load_directory()
    assert (await revoke(anonymous, leaf, 1, with_cert_key=True)).status == 200
    assert await is_blocked(pool, leaf), "the compromised key is blocked"
    row = await cert_row(pool, leaf.serial)
    assert (row["revocation_reason"], row["revoked_at"]) == (1, first["revoked_at"])
    (updated,) = await audit(pool, "certificate.revocation_updated")
    assert updated["details"]["previous_reason"] == 4 and updated["details"]["reason"] == 1
    assert updated["actor"] == "certificate-key"
    assert len(await audit(pool, "key_compromise.sweep_queued")) == 1

    assert_problem(await revoke(anonymous, leaf, 1, with_cert_key=True), 400, "alreadyRevoked")
    assert (await cert_row(pool, leaf.serial))["revocation_reason"] == 1


# ------------------------------------------------------------------------------------------
# acme-ca admin revoke (the real console script, on this test's database)


async def run_admin(dsn: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(dsn, tmp_path, "admin", "revoke", *args)


@pytest.fixture
async def account_id(pool: asyncpg.Pool) -> int:
    """An account row for certificates the admin tests revoke (no HTTP needed)."""
    now = datetime.now(UTC)
    jwk = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    row_id: int = await pool.fetchval(
        """INSERT INTO accounts (key_thumbprint, jwk, status, created_at, updated_at)
           VALUES ($1, $2, 'valid', $3, $3) RETURNING id""",
        b64url_decode(jwk.thumbprint_b64()),
        jwk.to_json(),
        now,
    )
    return row_id


def test_admin_reasons_match_the_ra() -> None:
    from acme_ca.cli import ADMIN_REASONS

    assert set(ADMIN_REASONS) == set(REASON_CODES)
    assert REASON_CODES["privilegeWithdrawn"] == 9 and 6 not in REASON_CODES.values()


async def test_admin_revoke_by_serial_audited(
    dsn: str, tmp_path: Path, pool: asyncpg.Pool, account_id: int, issuer: ThrowawayIssuer
) -> None:
    leaf = make_leaf(issuer, NAMES)
    await store_certificate(pool, account_id, leaf)
    # Any hex spelling an operator might paste: upper case, colons, leading zeros.
    spelled = ":".join(f"{b:02X}" for b in leaf.cert.serial_number.to_bytes(20, "big"))
    code, out, err = await run_admin(
        dsn, tmp_path, spelled, "--reason", "privilegeWithdrawn", "--actor", "alice"
    )
    assert code == 0, (out, err)
    assert out.startswith(f"revoked\t{leaf.serial}\treason=privilegeWithdrawn\t"), out
    assert "names=rev.example.com,www.rev.example.com" in out
    row = await cert_row(pool, leaf.serial)
    assert row["revocation_reason"] == 9 and row["revoked_at"] is not None
    (event,) = await audit(pool, "certificate.revoked")
    assert event["actor"] == "operator:alice"
    assert event["account_id"] == account_id and event["order_id"] is not None
    assert event["details"] == {"serial": leaf.serial, "reason": 9}
    assert event["at"] == row["revoked_at"]
    assert not await is_blocked(pool, leaf)

    code, out, err = await run_admin(dsn, tmp_path, leaf.serial, "--reason", "superseded")
    assert code == 1, (out, err)
    assert out.startswith(f"already revoked\t{leaf.serial}\treason=privilegeWithdrawn"), out
    assert len(await audit(pool, "certificate.revoked")) == 1

    code, out, err = await run_admin(dsn, tmp_path, "abcdef0123", "--reason", "superseded")
    assert code == 1 and "no certificate with serial" in err, (out, err)
    code, out, err = await run_admin(dsn, tmp_path, "--reason", "superseded")
    assert code == 2, (out, err)


async def test_admin_revoke_key_compromise_blocks_key(
    dsn: str, tmp_path: Path, pool: asyncpg.Pool, account_id: int, issuer: ThrowawayIssuer
) -> None:
    leaf = make_leaf(issuer, NAMES)
    await store_certificate(pool, account_id, leaf)
    code, out, err = await run_admin(
        dsn, tmp_path, leaf.serial, "--reason", "keyCompromise", "--actor", "bob"
    )
    assert code == 0, (out, err)
    assert out.rstrip().endswith("key_blocked"), out
    assert (await cert_row(pool, leaf.serial))["revocation_reason"] == 1
    assert await is_blocked(pool, leaf)
    assert (await pool.fetchval("SELECT source FROM blocked_keys")) == "operator:bob"


async def test_admin_revoke_by_domain_audited(
    dsn: str, tmp_path: Path, pool: asyncpg.Pool, account_id: int, issuer: ThrowawayIssuer
) -> None:
    now = datetime.now(UTC)
    under = [
        make_leaf(issuer, ["example.com", "www.example.com"]),
        make_leaf(issuer, ["api.shop.example.com"]),
        make_leaf(issuer, ["*.example.com"]),
        make_leaf(issuer, ["example.net", "mail.example.com"]),
    ]
    elsewhere = [
        make_leaf(issuer, ["notexample.com"]),  # a suffix match is not a subdomain
        make_leaf(issuer, ["example.com.evil.net"]),
        make_leaf(issuer, ["example.org"]),
    ]
    expired = make_leaf(
        issuer, ["old.example.com"], not_before=now - timedelta(days=100), lifetime=timedelta(90)
    )
    revoked = make_leaf(issuer, ["gone.example.com"])
    for leaf in [*under, *elsewhere, expired, revoked]:
        await store_certificate(pool, account_id, leaf)
    await pool.execute(
        "UPDATE certificates SET revoked_at = $2, revocation_reason = 4 WHERE serial = $1",
        revoked.serial,
        now,
    )

    code, out, err = await run_admin(
        dsn, tmp_path, "--domain", "Example.COM.", "--reason", "cessationOfOperation", "--dry-run"
    )
    assert code == 0, (out, err)
    listed = {line.split("\t")[1] for line in out.splitlines() if line.startswith("would revoke\t")}
    assert listed == {leaf.serial for leaf in under}, out
    assert await audit(pool, "certificate.revoked") == []

    code, out, err = await run_admin(
        dsn, tmp_path, "--domain", "example.com", "--reason", "cessationOfOperation"
    )
    assert code == 0, (out, err)
    revoked_now = {line.split("\t")[1] for line in out.splitlines() if line.startswith("revoked\t")}
    assert revoked_now == {leaf.serial for leaf in under}, out
    actor = f"operator:{getpass.getuser()}"
    assert f"revoked by {actor}: 4 certificate(s) under example.com" in out
    for leaf in under:
        assert (await cert_row(pool, leaf.serial))["revocation_reason"] == 5
    for leaf in [*elsewhere, expired]:
        assert (await cert_row(pool, leaf.serial))["revoked_at"] is None
    assert (await cert_row(pool, revoked.serial))["revocation_reason"] == 4
    events = await audit(pool, "certificate.revoked")
    assert {e["details"]["serial"] for e in events} == {leaf.serial for leaf in under}
    assert {e["actor"] for e in events} == {actor}
    assert {e["details"]["reason"] for e in events} == {5}

    code, out, err = await run_admin(dsn, tmp_path, "--domain", "com", "--reason", "superseded")
    assert code == 1 and "not a registered domain" in err, (out, err)
    code, out, err = await run_admin(dsn, tmp_path, "--domain", "co.jp", "--reason", "superseded")
    assert code == 1 and "public suffix" in err, (out, err)


async def test_kc_4_admin_revoke_by_domain_includes_precertificates_of_failed_orders(
    dsn: str, tmp_path: Path, pool: asyncpg.Pool, account_id: int, issuer: ThrowawayIssuer
) -> None:
    """BR 7.1.2.9: a precertificate whose order failed is an assigned serial, so revoking
    everything under a domain revokes it too (and a precertificate whose certificate exists
    is revoked once, with it)."""
    now = datetime.now(UTC)
    issued = make_leaf(issuer, ["shop.example.com"])
    await store_certificate(pool, account_id, issued)
    lone = make_leaf(issuer, ["failed.example.com"])
    for leaf, status in ((lone, "failed"), (issued, "done")):
        order_id = await pool.fetchval(
            "INSERT INTO orders (account_id, status, identifiers, expires_at, created_at, "
            "updated_at) VALUES ($1, 'invalid', $2, $3, $3, $3) RETURNING id",
            account_id,
            [{"type": "dns", "value": n} for n in leaf.names],
            now,
        )
        job_id = await pool.fetchval(
            "INSERT INTO issuance_jobs (order_id, account_id, csr_der, names, status, "
            "created_at, updated_at) VALUES ($1, $2, '', '[]', $3, $4, $4) RETURNING id",
            order_id,
            account_id,
            status,
            now,
        )
        await pool.execute(
            "INSERT INTO precertificates (job_id, order_id, account_id, serial, issuer, der, "
            "not_before, not_after, created_at) VALUES ($1, $2, $3, $4, 'test-issuer', $5, $6, "
            "$7, $8)",
            job_id,
            order_id,
            account_id,
            leaf.serial,
            leaf.der,
            leaf.cert.not_valid_before_utc,
            leaf.cert.not_valid_after_utc,
            now,
        )
    code, out, err = await run_admin(
        dsn, tmp_path, "--domain", "example.com", "--reason", "superseded", "--actor", "frank"
    )
    assert code == 0, (out, err)
    lines = {line.split("\t")[1]: line for line in out.splitlines() if "\t" in line}
    assert set(lines) == {issued.serial, lone.serial}, out
    assert lines[lone.serial].endswith("\tprecertificate")
    assert not lines[issued.serial].endswith("\tprecertificate")
    for leaf in (issued, lone):
        row = await pool.fetchrow(
            "SELECT revocation_reason FROM precertificates WHERE serial = $1", leaf.serial
        )
        assert row["revocation_reason"] == 4
    assert (await cert_row(pool, issued.serial))["revocation_reason"] == 4
    assert len(await audit(pool, "certificate.revoked")) == 2
