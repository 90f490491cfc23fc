"""Key compromise (BR 4.9.1.1 #3, 4.9.12, 6.1.1.3(4), 7.2.2; KC-1..4 in standards.md) and
precertificates as certificates for revocation (BR 7.1.2.9, 4.9.9).

Everything is real: the ACME front end on a real port, accounts and orders made through it
(http-01 against the challenge test server), a real ``run_worker`` (signing worker with the
development hierarchy's software keys and CT against in-process test logs, the status updater
and the key-compromise sweeper) on the same real PostgreSQL, and the CRLs and OCSP responses
it publishes parsed from their DER.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from acme_ca.acme.b64 import b64url_encode
from acme_ca.ca.ct.loglist import StaticLogList, parse_log_list
from acme_ca.ca.issuers import IssuerSet
from acme_ca.ca.lint import CertificateLinter
from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.db.certificates import CertificateRepository
from acme_ca.db.key_compromise import KeyCompromiseRepository, SweepLost
from acme_ca.db.migrate import apply_schema
from acme_ca.db.status import StatusRepository
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.keyid import spki_sha256
from acme_ca.main.worker import run_worker
from acme_ca.ra.revocation import RevocationAuthority
from acme_ca.status.key_compromise import KeyCompromiseSweeper, retry_delay
from acme_ca.status.ocsp import OcspResponder
from acme_ca.status.settings import StatusSettings
from acme_ca.status.updater import StatusUpdater
from acme_ca.testsrv.ct_log import TestLogSpec
from acme_ca.testsrv.ct_log_set import TestCtLogs
from acme_ca.testsrv.ct_logs_runner import accepted_roots
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import CaFactory, RunningCa
from tests.support.accounts import bare_account, key_change
from tests.support.cli import run_cli
from tests.support.ct import Harness, harness
from tests.support.jws import JwsClient
from tests.support.orders import Subscriber, subscriber, validation_config
from tests.support.problems import assert_problem
from tests.support.revocation import make_issuer, make_leaf, store_certificate
from tests.support.status import STATUS, spk_bits
from tests.support.worker import FAST, build_csr, make_pki_config

ISSUER = "dv-ecc"  # the issuer of P-256 CSRs (Config.ecdsa_issuer)
DATA = Path(__file__).parent / "data"


# --------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def pki_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A development hierarchy with status URLs that lint clean; fast worker polling; 90-day
    certificates (two SCTs)."""
    return make_pki_config(
        tmp_path_factory.mktemp("kc-pki"),
        status_base_url=STATUS,
        worker_poll_seconds=1,
        validity_days=90,  # two SCTs from the two test logs
    )


@pytest.fixture
async def va_ca(ca_factory: CaFactory, challsrv: ChallengeTestServer) -> RunningCa:
    return await ca_factory.start(finalize_wait_seconds=0, **validation_config(challsrv))


@dataclass
class World:
    """The front end, a running worker process's tasks (run_worker) and the database."""

    ca: RunningCa
    session: aiohttp.ClientSession
    challsrv: ChallengeTestServer
    pool: asyncpg.Pool
    issuers: IssuerSet

    async def subscriber(self) -> Subscriber:
        return await subscriber(self.ca, self.session, self.challsrv)

    async def issue(self, sub: Subscriber, name: str, key: ec.EllipticCurvePrivateKey) -> str:
        """Order, validate, finalize with a CSR of ``key``; the certificate's serial once the
        worker issued it."""
        reply = await sub.new_order(name)
        await sub.answer(reply.body["authorizations"][0], "http-01")
        order = await sub.wait_order(reply.headers["Location"])
        assert order["status"] == "ready", order
        csr = b64url_encode(build_csr([name], key=key))
        assert (await sub.post(order["finalize"], {"csr": csr})).status == 200
        done = await sub.wait_order(reply.headers["Location"], timeout=60)
        assert done["status"] == "valid", done
        order_id = int(reply.headers["Location"].rsplit("/", 1)[1])
        serial: str = await self.pool.fetchval(
            "SELECT serial FROM certificates WHERE order_id = $1", order_id
        )
        return serial

    async def der(self, serial: str) -> bytes:
        return bytes(
            await self.pool.fetchval("SELECT der FROM certificates WHERE serial = $1", serial)
        )


def two_logs() -> list[TestLogSpec]:
    return [
        TestLogSpec.generate("log A", "operator A"),
        TestLogSpec.generate("log B", "operator B"),
    ]


@contextlib.asynccontextmanager
async def worker_process(config: Config, dsn: str) -> AsyncIterator[None]:
    """``run_worker`` as ``acme-ca worker`` runs it (CT against test logs), stopped on exit."""
    async with TestCtLogs(two_logs(), accepted_roots(config)) as logs:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(
                config,
                dsn,
                stop,
                SystemClock(),
                ct_logs=StaticLogList(parse_log_list(logs.log_list())),
                production=False,
            )
        )
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


@pytest.fixture
async def world(
    va_ca: RunningCa,
    session: aiohttp.ClientSession,
    challsrv: ChallengeTestServer,
    pool: asyncpg.Pool,
    dsn: str,
    pki_config: Config,
    issuers: IssuerSet,
) -> AsyncIterator[World]:
    async with worker_process(pki_config, dsn):
        yield World(va_ca, session, challsrv, pool, issuers)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- CRL and OCSP


def crl_entries(der: bytes) -> dict[int, x509.RevokedCertificate]:
    return {entry.serial_number: entry for entry in x509.load_der_x509_crl(der)}


def entry_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


async def listed_on_crl(pool: asyncpg.Pool, serials: list[str], reason: x509.ReasonFlags) -> bool:
    """Every serial is on the issuer's latest CRL with ``reason``."""
    crl = await StatusRepository(pool).latest_crl(ISSUER)
    if crl is None:
        return False
    listed = crl_entries(crl.der)
    return all(int(s, 16) in listed and entry_reason(listed[int(s, 16)]) == reason for s in serials)


async def ocsp_answer(world: World, serial: str) -> ocsp.OCSPResponse:
    """What the status listener answers for the serial: a real SHA-1 OCSPRequest through the
    key-less responder every ``serve`` runs."""
    issuer = world.issuers.by_name(ISSUER).certificate
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            hashlib.sha1(issuer.subject.public_bytes()).digest(),
            hashlib.sha1(spk_bits(issuer)).digest(),
            int(serial, 16),
            hashes.SHA1(),
        )
        .build()
    )
    responder = OcspResponder(StatusRepository(world.pool), {ISSUER: issuer}, SystemClock())
    answer = await responder.answer(request.public_bytes(serialization.Encoding.DER))
    return ocsp.load_der_ocsp_response(answer.der)


async def ocsp_says(
    world: World, serial: str, status: ocsp.OCSPCertStatus, reason: x509.ReasonFlags | None
) -> bool:
    response = await ocsp_answer(world, serial)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return False
    if response.certificate_status != status:
        return False
    return status != ocsp.OCSPCertStatus.REVOKED or response.revocation_reason == reason


async def revoked_for_key_compromise(world: World, serials: list[str]) -> None:
    """Wait until every serial is on the CRL and answered revoked by OCSP, keyCompromise."""
    key_compromise = x509.ReasonFlags.key_compromise
    await eventually(lambda: listed_on_crl(world.pool, serials, key_compromise), "the CRL")
    for serial in serials:
        await eventually(
            functools.partial(
                ocsp_says, world, serial, ocsp.OCSPCertStatus.REVOKED, key_compromise
            ),
            f"OCSP revoked for {serial}",
        )


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def audit(pool: asyncpg.Pool, event: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT at, actor, account_id, details FROM audit_events WHERE event = $1 ORDER BY id",
            event,
        )
    )


# --------------------------------------------------------------------------- KC-1, KC-2


async def test_br_4_9_1_1_key_compromise_revokes_all_certs_with_key(world: World) -> None:
    """KC-1/KC-2: three certificates with one key under two accounts; revoking one as
    keyCompromise (signed with the certificate key) revokes all three on the CRL and in OCSP
    within seconds, each revocation audited; another key's certificate stays good; the key is
    refused afterwards as a CSR key (finalize: badCSR) and as an account key (newAccount and
    keyChange: badPublicKey)."""
    key = p256()
    alice, bob = await world.subscriber(), await world.subscriber()
    serials = [
        await world.issue(alice, "kc-one.example.com", key),
        await world.issue(alice, "kc-two.example.com", key),
        await world.issue(bob, "kc-three.example.com", key),
    ]
    unrelated = await world.issue(bob, "kc-other.example.com", p256())
    for serial in [*serials, unrelated]:
        await eventually(
            functools.partial(ocsp_says, world, serial, ocsp.OCSPCertStatus.GOOD, None), "good"
        )

    holder = JwsClient(world.session, world.ca.directory_url, key)
    await holder.load_directory()
    reply = await holder.post(
        holder.directory["revokeCert"],
        {"certificate": b64url_encode(await world.der(serials[0])), "reason": 1},
        use_jwk=True,
    )
    assert reply.status == 200, reply.body

    await revoked_for_key_compromise(world, serials)
    assert await ocsp_says(world, unrelated, ocsp.OCSPCertStatus.GOOD, None)
    crl = await StatusRepository(world.pool).latest_crl(ISSUER)
    assert crl is not None and int(unrelated, 16) not in crl_entries(crl.der)

    # Certificates and precertificates alike: every row of every serial says keyCompromise.
    for table in ("certificates", "precertificates"):
        rows = await world.pool.fetch(
            f"SELECT serial, revocation_reason FROM {table} WHERE serial = ANY($1)",
            serials,
        )
        assert {(r["serial"], r["revocation_reason"]) for r in rows} == {(s, 1) for s in serials}, (
            table
        )
    revoked = await audit(world.pool, "certificate.revoked")
    assert revoked[0]["details"]["serial"] == serials[0]
    assert revoked[0]["actor"] == "certificate-key"
    (sweep_done,) = await audit(world.pool, "key_compromise.sweep_done")
    sweep_id = sweep_done["details"]["sweep_id"]
    swept = {e["details"]["serial"]: e for e in revoked[1:]}
    assert set(swept) == set(serials[1:])
    for event in swept.values():
        assert event["actor"] == f"key-compromise-sweep:{sweep_id}"
        assert event["details"]["sweep_id"] == sweep_id and event["details"]["reason"] == 1
    assert {e["account_id"] for e in revoked} == {
        int(alice.account_url.rsplit("/", 1)[1]),
        int(bob.account_url.rsplit("/", 1)[1]),
    }
    assert sweep_done["details"]["revoked"] == 2

    # KC-2: the key is refused for a new certificate ...
    reply = await alice.new_order("kc-four.example.com")
    await alice.answer(reply.body["authorizations"][0], "http-01")
    order = await alice.wait_order(reply.headers["Location"])
    refused = await alice.post(
        order["finalize"], {"csr": b64url_encode(build_csr(["kc-four.example.com"], key=key))}
    )
    assert_problem(refused, 400, "badCSR")
    assert "blocked" in refused.body["detail"]
    # ... as a new account's key ...
    assert_problem(await holder.register(), 400, "badPublicKey")
    # ... and as the new key of an existing account.
    assert_problem(await key_change(bob, key), 400, "badPublicKey")


# --------------------------------------------------------------------------- KC-4


@dataclass
class StatusWorld:
    """The status side of a worker, driven step by step: updater and sweeper."""

    pool: asyncpg.Pool
    issuers: IssuerSet
    updater: StatusUpdater
    sweeper: KeyCompromiseSweeper

    async def publish(self) -> None:
        await self.updater.publish_all_crls()
        await self.updater.refresh_ocsp()

    async def crl(self) -> dict[int, x509.RevokedCertificate]:
        record = await StatusRepository(self.pool).latest_crl(ISSUER)
        assert record is not None
        return crl_entries(record.der)


@pytest.fixture
async def status_world(
    pool: asyncpg.Pool, issuers: IssuerSet, linter: CertificateLinter, pki_config: Config
) -> StatusWorld:
    updater = StatusUpdater(
        StatusRepository(pool),
        issuers,
        linter,
        SystemClock(),
        StatusSettings.from_config(pki_config),
    )
    sweeper = KeyCompromiseSweeper(KeyCompromiseRepository(pool), SystemClock(), worker_id="t")
    return StatusWorld(pool, issuers, updater, sweeper)


async def failed_precertificate(
    h: Harness, name: str, key: ec.EllipticCurvePrivateKey | None = None
) -> str:
    """A precertificate signed for an order that then failed: every log down past the CT
    deadline.  Its serial, which no certificate will ever carry."""
    for ct_log in h.logs.logs:
        ct_log.faults.unavailable = True
    order_id, _ = await h.queue([name], key)
    assert await h.worker("ct-down", settings=replace(FAST, deadline=timedelta(0))).run_once()
    order = await h.pool.fetchrow("SELECT status FROM orders WHERE id = $1", order_id)
    assert order["status"] == "invalid"
    serial: str = await h.pool.fetchval(
        "SELECT serial FROM precertificates WHERE order_id = $1", order_id
    )
    assert serial is not None
    assert not await h.pool.fetchval("SELECT count(*) FROM certificates WHERE serial = $1", serial)
    return serial


def world_of(status: StatusWorld) -> World:
    """Just enough of a World for :func:`ocsp_says`."""
    return World(None, None, None, status.pool, status.issuers)  # type: ignore[arg-type]


async def test_kc_4_revoked_precertificate_of_failed_order_on_crl_and_ocsp(
    status_world: StatusWorld,
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
    dsn: str,
    tmp_path: Path,
) -> None:
    """BR 7.1.2.9, 4.9.9 (KC-4): a precertificate's serial is revocable by serial with
    ``acme-ca admin revoke`` although its order failed, is then on the CRL and revoked in
    OCSP; an unrevoked one is good, never unknown; and a key-compromise sweep revokes a
    precertificate with the key."""
    compromised = p256()
    async with harness(pool, pki_config, issuers, linter, two_logs()) as h:
        revoked = await failed_precertificate(h, "pre-revoked.example.com")
        kept = await failed_precertificate(h, "pre-kept.example.com")
        swept = await failed_precertificate(h, "pre-swept.example.com", compromised)
    await status_world.publish()
    for serial in (revoked, kept, swept):
        assert await ocsp_says(world_of(status_world), serial, ocsp.OCSPCertStatus.GOOD, None)

    code, out, err = await run_admin(
        dsn, tmp_path, revoked.upper(), "--reason", "superseded", "--actor", "carol"
    )
    assert code == 0, (out, err)
    assert out.startswith(f"revoked\t{revoked}\treason=superseded") and "precertificate" in out
    (event,) = await audit(pool, "certificate.revoked")
    assert event["details"] == {"serial": revoked, "reason": 4, "precertificate": True}

    code, out, err = await run_block_key(
        dsn, tmp_path, "--spki", spki_sha256(compromised.public_key()).hex(), "--actor", "carol"
    )
    assert code == 0, (out, err)
    assert await status_world.sweeper.run_due() == 1

    await status_world.publish()
    listed = await status_world.crl()
    assert entry_reason(listed[int(revoked, 16)]) == x509.ReasonFlags.superseded
    assert entry_reason(listed[int(swept, 16)]) == x509.ReasonFlags.key_compromise
    assert int(kept, 16) not in listed
    world = world_of(status_world)
    assert await ocsp_says(world, revoked, ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.superseded)
    assert await ocsp_says(
        world, swept, ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.key_compromise
    )
    assert await ocsp_says(world, kept, ocsp.OCSPCertStatus.GOOD, None)


# --------------------------------------------------------------------------- the CLI


async def run_admin(dsn: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(dsn, tmp_path, "admin", "revoke", *args)


async def run_block_key(dsn: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(dsn, tmp_path, "admin", "block-key", *args)


# --------------------------------------------------------------------------- block-key


@pytest.mark.parametrize("by", ["key", "spki"])
async def test_br_4_9_12_block_key_revokes_and_refuses_the_key(
    world: World, dsn: str, tmp_path: Path, by: str
) -> None:
    """``acme-ca admin block-key`` by PEM and by SPKI hash has the effects of a keyCompromise
    revocation: every certificate with the key revoked (the running worker's sweep, waited
    for with --wait) and the key refused as an account key."""
    key = p256()
    sub = await world.subscriber()
    serials = [
        await world.issue(sub, "block-one.example.com", key),
        await world.issue(sub, "block-two.example.com", key),
    ]
    if by == "key":
        pem = tmp_path / "leaked.pem"
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        which = ["--key", str(pem)]
    else:
        digest = spki_sha256(key.public_key()).hex()
        which = ["--spki", ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()]
    code, out, err = await run_block_key(
        dsn, tmp_path, *which, "--reason", "ticket 42", "--actor", "dave", "--wait", "30"
    )
    assert code == 0, (out, err)
    first, second = out.splitlines()
    assert first.startswith(f"blocked\t{spki_sha256(key.public_key()).hex()}\tsweep=")
    assert first.endswith("\tunexpired_certificates=2")
    assert second.endswith("done\trevoked=2\tupdated=0\tattempts=1"), second

    blocked = await world.pool.fetchrow("SELECT reason, source FROM blocked_keys")
    assert blocked["source"] == "operator:dave" and "ticket 42" in blocked["reason"]
    await revoked_for_key_compromise(world, serials)
    holder = JwsClient(world.session, world.ca.directory_url, key)
    await holder.load_directory()
    assert_problem(await holder.register(), 400, "badPublicKey")


async def test_block_key_refuses_bad_input(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "nothing.pem").write_text("not a key\n")
    for args in (
        ["--spki", "abcd"],
        ["--spki", "zz" * 32],
        ["--key", str(tmp_path / "nothing.pem")],
        ["--key", str(tmp_path / "missing.pem")],
    ):
        code, out, err = await run_block_key(dsn, tmp_path, *args)
        assert code == 2 and out == "", (args, out, err)
    code, _, err = await run_block_key(
        dsn, tmp_path, "--spki", "00" * 32, "--compromised-at", "2999-01-01T00:00:00Z"
    )
    assert code == 1 and "future" in err


# --------------------------------------------------------------------------- KC-3


async def test_br_7_2_2_reason_upgrade_to_key_compromise_updates_crl_entry(
    world: World, dsn: str, tmp_path: Path
) -> None:
    """KC-3: a certificate revoked as superseded, then reported keyCompromise by its account,
    gets reason keyCompromise in its CRL entry and OCSP response with its revocation date
    kept; a compromise date an operator later learns moves the date back (BR 7.2.2 note), to
    no earlier than the certificate's notBefore."""
    key = p256()
    sub = await world.subscriber()
    serial = await world.issue(sub, "upgrade.example.com", key)
    revoke_url = sub.directory["revokeCert"]
    certificate = {"certificate": b64url_encode(await world.der(serial))}
    assert (await sub.post(revoke_url, certificate | {"reason": 4})).status == 200
    await eventually(
        lambda: listed_on_crl(world.pool, [serial], x509.ReasonFlags.superseded), "superseded"
    )
    first = await world.pool.fetchrow(
        "SELECT revoked_at, not_before FROM certificates WHERE serial = $1", serial
    )

    assert (await sub.post(revoke_url, certificate | {"reason": 1})).status == 200
    await revoked_for_key_compromise(world, [serial])
    crl = await StatusRepository(world.pool).latest_crl(ISSUER)
    assert crl is not None
    entry = crl_entries(crl.der)[int(serial, 16)]
    assert entry.revocation_date_utc == first["revoked_at"].replace(microsecond=0)
    assert_problem(await sub.post(revoke_url, certificate | {"reason": 1}), 400, "alreadyRevoked")

    # The operator learns the key leaked before the certificate was issued: the entry's date
    # moves back to the notBefore.
    leaked = first["not_before"] - timedelta(days=3)
    code, out, err = await run_block_key(
        dsn,
        tmp_path,
        "--spki",
        spki_sha256(key.public_key()).hex(),
        "--compromised-at",
        leaked.isoformat(),
        "--wait",
        "30",
    )
    assert code == 0 and "updated=1" in out, (out, err)

    async def backdated() -> bool:
        record = await StatusRepository(world.pool).latest_crl(ISSUER)
        assert record is not None
        listed = crl_entries(record.der)[int(serial, 16)]
        return bool(listed.revocation_date_utc == first["not_before"])

    await eventually(backdated, "the CRL entry's date moved back")

    async def ocsp_backdated() -> bool:
        response = await ocsp_answer(world, serial)
        return bool(response.revocation_time_utc == first["not_before"])

    await eventually(ocsp_backdated, "the OCSP revocation time moved back")
    (updated, moved) = await audit(world.pool, "certificate.revocation_updated")
    assert updated["details"]["previous_reason"] == 4
    assert moved["details"]["previous_reason"] == 1 and moved["details"]["sweep_id"]


# --------------------------------------------------------------------------- durability


async def new_account(pool: asyncpg.Pool) -> int:
    account_id: int = await pool.fetchval(
        "INSERT INTO accounts (key_thumbprint, jwk, status, created_at, updated_at) "
        "VALUES ($1, $2, 'valid', now(), now()) RETURNING id",
        os.urandom(32),
        {"kty": "EC"},
    )
    return account_id


async def revocations(pool: asyncpg.Pool, serials: list[str]) -> dict[str, int | None]:
    rows = await pool.fetch(
        "SELECT serial, revocation_reason FROM certificates WHERE serial = ANY($1)", serials
    )
    return {r["serial"]: r["revocation_reason"] for r in rows}


async def test_br_4_9_1_1_sweep_survives_a_restart(pool: asyncpg.Pool) -> None:
    """The sweep is a database row: queued while no worker runs, taken over from a worker
    that died holding it once its lease lapses, never run by two workers at once, and
    finished by the new one; a certificate with the key that appears later is swept again."""
    issuer = make_issuer()
    key = p256()
    leaves = [make_leaf(issuer, [f"d{i}.example.com"], key=key) for i in range(3)]
    accounts = [await new_account(pool), await new_account(pool)]
    for i, leaf in enumerate(leaves):
        await store_certificate(pool, accounts[i % 2], leaf)
    serials = [leaf.serial for leaf in leaves]

    authority = RevocationAuthority(CertificateRepository(pool), SystemClock())
    blocked = await authority.block_key(
        spki_sha256(key.public_key()), actor="operator:test", reason="report"
    )
    assert blocked.certificates == 3

    # A worker claims it, revokes one certificate, and dies (its lease still runs).
    repository = KeyCompromiseRepository(pool)
    dead = await repository.claim("dead-worker", now=datetime.now(UTC), lease=timedelta(minutes=2))
    assert dead is not None and dead.id == blocked.sweep_id
    targets = await repository.targets(dead, now=datetime.now(UTC), limit=10)
    assert sorted(targets) == sorted(serials)
    await repository.revoke(dead, targets[0], worker_id="dead-worker", now=datetime.now(UTC))

    # The restarted worker does not touch a sweep another worker holds ...
    sweeper = KeyCompromiseSweeper(repository, SystemClock(), worker_id="new-worker")
    assert await sweeper.run_due() == 0
    assert list((await revocations(pool, serials)).values()).count(1) == 1
    # ... and takes it over once the lease lapsed.
    await pool.execute(
        "UPDATE key_compromise_sweeps SET locked_until = now() - interval '1 second'"
    )
    assert await sweeper.run_due() == 1
    assert await revocations(pool, serials) == dict.fromkeys(serials, 1)
    sweep = await repository.get(blocked.sweep_id)
    assert sweep is not None
    assert (sweep.status, sweep.revoked, sweep.attempts) == ("done", 3, 2)
    assert sweep.locked_by is None and sweep.finished_at is not None
    # The dead worker, woken up, cannot go on with a sweep it no longer holds.
    with pytest.raises(SweepLost):
        await repository.revoke(dead, targets[1], worker_id="dead-worker", now=datetime.now(UTC))
    events = await audit(pool, "certificate.revoked")
    assert {e["details"]["serial"] for e in events} == set(serials)
    assert {e["actor"] for e in events} == {f"key-compromise-sweep:{blocked.sweep_id}"}
    assert {e["account_id"] for e in events} == set(accounts)

    # A certificate with the key signed after the sweep (its CSR was checked before the key
    # was blocked) is found by the periodic recheck and swept too.
    late = make_leaf(issuer, ["late.example.com"], key=key)
    await store_certificate(pool, accounts[0], late)
    await sweeper.recheck()
    assert await sweeper.run_due() == 1
    assert await revocations(pool, [late.serial]) == {late.serial: 1}


async def test_br_4_9_1_1_failed_sweep_is_retried_with_backoff(pool: asyncpg.Pool) -> None:
    issuer = make_issuer()
    key = p256()
    leaf = make_leaf(issuer, ["retry.example.com"], key=key)
    await store_certificate(pool, await new_account(pool), leaf)
    authority = RevocationAuthority(CertificateRepository(pool), SystemClock())
    blocked = await authority.block_key(
        spki_sha256(key.public_key()), actor="operator:test", reason=""
    )
    repository = KeyCompromiseRepository(pool)
    claimed = await repository.claim("w1", now=datetime.now(UTC), lease=timedelta(minutes=2))
    assert claimed is not None
    retry_at = datetime.now(UTC) + retry_delay(claimed.attempts)
    await repository.fail(claimed, worker_id="w1", error="database went away", retry_at=retry_at)
    sweeper = KeyCompromiseSweeper(repository, SystemClock(), worker_id="w2")
    assert await sweeper.run_due() == 0, "not before its retry time"
    sweep = await repository.get(blocked.sweep_id)
    assert sweep is not None and sweep.last_error == "database went away"
    await pool.execute("UPDATE key_compromise_sweeps SET run_after = now()")
    assert await sweeper.run_due() == 1
    assert await revocations(pool, [leaf.serial]) == {leaf.serial: 1}
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 9, 10, 50)] == [
        2,
        4,
        8,
        512,
        600,
        600,
    ]


async def test_spki_hash_column_matches_the_key(pool: asyncpg.Pool) -> None:
    """The SQL DER walk gives what cryptography gives, for RSA (long-form lengths) and EC."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    account = await new_account(pool)
    for key in (
        p256(),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=4096),
    ):
        leaf = make_leaf(make_issuer(), ["hash.example.com"], key=key)  # type: ignore[arg-type]
        await store_certificate(pool, account, leaf)
        stored = await pool.fetchval(
            "SELECT spki_sha256 FROM certificates WHERE serial = $1", leaf.serial
        )
        assert stored == spki_sha256(key.public_key())
    assert await pool.fetchval("SELECT acme_ca_spki_sha256('\\x3000'::bytea)") is None


# --------------------------------------------------------------------------- migration 001


async def test_migration_001_backfills_key_hashes_and_queues_legacy_sweeps(
    postgres: EmbeddedPostgres,
) -> None:
    """A database made by the schema before 001, holding a certificate revoked for
    keyCompromise (its key blocked, its OCSP response revoked) and a precertificate with the
    same key: the migration hashes both keys, marks the precertificate's serial revoked,
    records the response's revocation time and queues the sweep such keys never had."""
    dsn = postgres.create_database(f"m_{os.urandom(8).hex()}")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute((DATA / "schema_before_001.sql").read_text())
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
        key = p256()
        issuer = make_issuer()
        leaf = make_leaf(issuer, ["old.example.com"], key=key)
        pre = make_leaf(issuer, ["old-pre.example.com"], key=key)
        now = datetime.now(UTC)
        account = await bare_account(conn, now)
        # The certificate, revoked, and its precertificate (same serial); another
        # precertificate whose order failed.
        await conn.execute(
            "INSERT INTO certificates (account_id, serial, issuer, der, not_before, not_after, "
            "revoked_at, revocation_reason, created_at) "
            "VALUES ($1, $2, 'dv-ecc', $3, $4, $5, $6, 1, $6)",
            account,
            leaf.serial,
            leaf.der,
            leaf.cert.not_valid_before_utc,
            leaf.cert.not_valid_after_utc,
            now,
        )
        for made, status in ((leaf, "done"), (pre, "failed")):
            order = await conn.fetchval(
                "INSERT INTO orders (account_id, status, identifiers, expires_at, created_at, "
                "updated_at) VALUES ($1, 'invalid', '[]', $2, $2, $2) RETURNING id",
                account,
                now,
            )
            job = await conn.fetchval(
                "INSERT INTO issuance_jobs (order_id, account_id, csr_der, names, status, "
                "created_at, updated_at) VALUES ($1, $2, '', '[]', $3, $4, $4) RETURNING id",
                order,
                account,
                status,
                now,
            )
            await conn.execute(
                "INSERT INTO precertificates (job_id, order_id, account_id, serial, issuer, "
                "der, not_before, not_after, created_at) "
                "VALUES ($1, $2, $3, $4, 'dv-ecc', $5, $6, $7, $8)",
                job,
                order,
                account,
                made.serial,
                made.der,
                made.cert.not_valid_before_utc,
                made.cert.not_valid_after_utc,
                now,
            )
        await conn.execute(
            "INSERT INTO blocked_keys (spki_sha256, reason, added_at, source) "
            "VALUES ($1, $2, $3, 'account:1')",
            spki_sha256(key.public_key()),
            f"keyCompromise stated by account:1 without proof of possession, serial {leaf.serial}",
            now,
        )
        await conn.execute(
            "INSERT INTO ocsp_responses (issuer, serial, hash_algorithm, status, "
            "revocation_reason, der, this_update, next_update, produced_at) "
            "VALUES ('dv-ecc', $1, 'sha1', 'revoked', 1, '\\x00', $2, $3, $2)",
            leaf.serial,
            now,
            now + timedelta(days=4),
        )

        applied = await apply_schema(conn)
        assert applied[:1] == [1] and sorted(applied) == applied

        digest = spki_sha256(key.public_key())
        for table in ("certificates", "precertificates"):
            hashes_ = await conn.fetch(f"SELECT spki_sha256 FROM {table}")
            assert {bytes(r["spki_sha256"]) for r in hashes_} == {digest}, table
        synced = await conn.fetchrow(
            "SELECT revoked_at, revocation_reason FROM precertificates WHERE serial = $1",
            leaf.serial,
        )
        assert (synced["revoked_at"], synced["revocation_reason"]) == (now, 1)
        assert await conn.fetchval("SELECT revoked_at FROM ocsp_responses") == now
        sweep = await conn.fetchrow("SELECT * FROM key_compromise_sweeps")
        assert bytes(sweep["spki_sha256"]) == digest and sweep["status"] == "queued"
        assert sweep["compromised_at"] == now and sweep["requested_by"] == "account:1"
        assert await apply_schema(conn) == [], "replaying the schema changes nothing"
    finally:
        await conn.close()


async def test_kc_4_certificate_of_a_revoked_precertificate_is_stored_revoked(
    status_world: StatusWorld,
    pool: asyncpg.Pool,
    pki_config: Config,
    issuers: IssuerSet,
    linter: CertificateLinter,
) -> None:
    """The serial is what is revoked: a precertificate revoked while its job waits for SCTs,
    whose certificate is then signed and stored, leaves a certificate stored revoked, on the
    CRL and revoked in OCSP, as the precertificate was."""
    async with harness(pool, pki_config, issuers, linter, two_logs()) as h:
        h.logs["log B"].faults.corrupt_signature = True
        order_id, _ = await h.queue(["pre-then-cert.example.com"])
        assert await h.worker().run_once()
        serial: str = await pool.fetchval(
            "SELECT serial FROM precertificates WHERE order_id = $1", order_id
        )
        assert serial is not None
        authority = RevocationAuthority(CertificateRepository(pool), SystemClock())
        done = await authority.revoke_serial(serial, 5, actor="operator:erin")
        assert done.revoked and done.precertificate
        h.logs["log B"].faults.clear()
        await pool.execute(
            "UPDATE issuance_jobs SET retry_at = now() WHERE order_id = $1", order_id
        )
        assert await h.worker().run_once()
    row = await pool.fetchrow(
        "SELECT revoked_at, revocation_reason FROM certificates WHERE order_id = $1", order_id
    )
    assert row is not None, "the certificate was stored"
    assert (row["revoked_at"], row["revocation_reason"]) == (done.revoked_at, 5)
    await status_world.publish()
    listed = await status_world.crl()
    assert entry_reason(listed[int(serial, 16)]) == x509.ReasonFlags.cessation_of_operation
    assert await ocsp_says(
        world_of(status_world),
        serial,
        ocsp.OCSPCertStatus.REVOKED,
        x509.ReasonFlags.cessation_of_operation,
    )


def test_block_key_reads_every_pem_an_operator_may_hold() -> None:
    """``--key``: a public key, a certificate, a CSR or the leaked private key all name the
    same blocked-key id; anything else is refused."""
    from acme_ca.ra.revocation import OperatorRevocationError, spki_sha256_from_pem

    key = p256()
    leaf = make_leaf(make_issuer(), ["pem.example.com"], key=key)
    pems = [
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        leaf.cert.public_bytes(serialization.Encoding.PEM),
        x509.load_der_x509_csr(build_csr(["pem.example.com"], key=key)).public_bytes(
            serialization.Encoding.PEM
        ),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    ]
    assert {spki_sha256_from_pem(pem) for pem in pems} == {spki_sha256(key.public_key())}
    with pytest.raises(OperatorRevocationError):
        spki_sha256_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
