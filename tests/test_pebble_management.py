"""Pebble's management interface (issue 21 item 3): /roots/N, /root-keys/N, /intermediates/N,
/intermediate-keys/N and /cert-status-by-serial/SERIAL, on test mode's own HTTPS listener
(Pebble's ``managementListenAddress``) and on the challenge test server's API, compared with
the real Pebble's (Debian's ``pebble`` package, run with ``PEBBLE_ALTERNATE_ROOTS=1`` so both
have two chains): the same status, Content-Type, ``Link: <…>;rel="alternate"`` headers and,
where Pebble sends none, no body.  The PEM differs by nature (other CAs, ECDSA keys where
Pebble's are RSA), so it is checked to be the served CA's own certificates and keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.jwk import jwk_from_key
from acme_ca.ca.hierarchy import init_hierarchy
from acme_ca.ca.settings import HierarchySettings
from acme_ca.config import Config, load_config
from acme_ca.db.accounts import AccountRepository
from acme_ca.localca import LocalCa, cert_pem, key_pem, local_name
from acme_ca.testsrv.pebble_ca import PebbleCa, pebble_ca, pebble_management_listener
from acme_ca.testsrv.server import ChallengeServerConfig, ChallengeTestServer
from tests.support.jws import JwsClient
from tests.support.ports import free_port as _free_port
from tests.support.revocation import make_issuer, make_leaf, store_certificate

PEBBLE = shutil.which("pebble")
pytestmark = pytest.mark.skipif(PEBBLE is None, reason="pebble not installed (Debian: pebble)")

PATHS = [
    "/roots/0",
    "/roots/1",
    "/roots/2",
    "/roots/x",
    "/roots/-1",
    "/intermediates/0",
    "/intermediates/1",
    "/root-keys/0",
    "/root-keys/1",
    "/intermediate-keys/0",
    "/intermediate-keys/1",
    "/cert-status-by-serial/zz",
    "/cert-status-by-serial/0x1f",
    "/cert-status-by-serial/abcdef0123",
]


class PebbleProcess:
    """The real Pebble, started at once and waited for only when first used, so it
    generates its keys while the module's own hierarchy is generated."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, acme_port: int) -> None:
        self._proc, self._port, self._acme_port, self._ready = proc, port, acme_port, False

    @property
    def directory_url(self) -> str:
        """Its ACME directory, once both of its listeners accept connections."""
        deadline = time.monotonic() + 30
        while True:
            _ = self.url
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self._acme_port)) == 0:
                    return f"https://127.0.0.1:{self._acme_port}/dir"
            assert time.monotonic() < deadline, "pebble's ACME listener never opened"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        deadline = time.monotonic() + 30
        while not self._ready:
            assert self._proc.poll() is None, "pebble exited"
            with socket.socket() as sock:
                self._ready = sock.connect_ex(("127.0.0.1", self._port)) == 0
            assert time.monotonic() < deadline, "pebble's management listener never opened"
            if not self._ready:
                time.sleep(0.05)
        return f"https://127.0.0.1:{self._port}"


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleProcess]:
    """The real Pebble with two chains (PEBBLE_ALTERNATE_ROOTS=1); its management listener.
    Its validations always pass at once and it rejects no nonce, so a test can have it issue
    and revoke a certificate for /cert-status-by-serial in well under a second."""
    assert PEBBLE is not None
    work = tmp_path_factory.mktemp("pebble")
    now = datetime.now(UTC)
    local = LocalCa.create(local_name("pebble test"), now=now, lifetime=timedelta(days=2))
    cert, key = local.issue(
        local_name("localhost"),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        names=["localhost", "127.0.0.1"],
        now=now,
        lifetime=timedelta(days=1),
    )
    (work / "cert.pem").write_bytes(cert_pem(cert))
    (work / "key.pem").write_bytes(key_pem(key))
    acme, management = _free_port(), _free_port()
    (work / "config.json").write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(work / "cert.pem"),
                    "privateKey": str(work / "key.pem"),
                    "httpPort": _free_port(),
                    "tlsPort": _free_port(),
                }
            }
        )
    )
    proc = subprocess.Popen(
        [PEBBLE, "-config", str(work / "config.json")],
        env={
            **os.environ,
            "PEBBLE_ALTERNATE_ROOTS": "1",
            "PEBBLE_VA_ALWAYS_VALID": "1",
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield PebbleProcess(proc, management, acme)
    finally:
        proc.kill()  # all its state is in memory; nothing to shut down cleanly
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated test hierarchy (software keys) for the module."""
    home = tmp_path_factory.mktemp("home")
    config = replace(Config(), home=home).validate()
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, init_hierarchy(HierarchySettings.from_config(config))).result()
    return home


@pytest.fixture
async def ours(home: Path, dsn: str) -> AsyncIterator[tuple[str, str, PebbleCa]]:
    """Our management endpoints: (own HTTPS listener URL, challenge server API URL, sources)."""
    config = replace(
        Config(), home=home, test_mode=True, management_listen="127.0.0.1:0"
    ).validate()
    ca = await pebble_ca(config.pki_path, dsn)
    async with (
        ChallengeTestServer(ChallengeServerConfig.ephemeral(), ca=ca.endpoints) as srv,
        pebble_management_listener(config, ca) as url,
    ):
        assert url is not None and url.startswith("https://")
        yield url, srv.management_url, ca


async def _get(
    session: aiohttp.ClientSession, url: str
) -> tuple[int, str | None, list[str], bytes]:
    async with session.get(url, ssl=False) as resp:
        return (
            resp.status,
            resp.headers.get("Content-Type"),
            resp.headers.getall("Link", []),
            await resp.read(),
        )


def _links(links: list[str], base: str) -> list[str]:
    return sorted(link.replace(base, "BASE") for link in links)


@pytest.mark.parametrize("path", PATHS)
async def test_pebble_management_endpoint_answers_as_pebble(
    path: str,
    pebble: PebbleProcess,
    ours: tuple[str, str, PebbleCa],
    session: aiohttp.ClientSession,
) -> None:
    theirs = await _get(session, pebble.url + path)
    for base in ours[:2]:
        mine = await _get(session, base + path)
        assert mine[:2] == theirs[:2], (path, base, theirs[:3], mine[:3])
        assert _links(mine[2], base) == _links(theirs[2], pebble.url), path
        assert bool(mine[3]) == bool(theirs[3]), path
        if mine[0] == 200 and path.startswith(("/roots/", "/intermediates/")):
            assert x509.load_pem_x509_certificates(mine[3])
        elif mine[0] == 200:
            key = serialization.load_pem_private_key(mine[3], None)
            assert key is not None


async def test_pebble_management_keys_belong_to_the_served_certificates(
    ours: tuple[str, str, PebbleCa], session: aiohttp.ClientSession
) -> None:
    base = ours[0]
    for index in (0, 1):
        root = x509.load_pem_x509_certificate((await _get(session, f"{base}/roots/{index}"))[3])
        key = serialization.load_pem_private_key(
            (await _get(session, f"{base}/root-keys/{index}"))[3], None
        )
        assert root.subject == root.issuer
        assert key.public_key() == root.public_key()
    intermediates = x509.load_pem_x509_certificates(
        (await _get(session, f"{base}/intermediates/0"))[3]
    )
    keys_pem = (await _get(session, f"{base}/intermediate-keys/0"))[3]
    blocks = re.findall(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----\n?", keys_pem, re.S)
    public = [serialization.load_pem_private_key(b, None).public_key() for b in blocks]
    assert [c.public_key() for c in intermediates] == public
    # chain 1 reaches Root X1 through the cross-certificate
    alternate = x509.load_pem_x509_certificates((await _get(session, f"{base}/intermediates/1"))[3])
    root_x1 = x509.load_pem_x509_certificate((await _get(session, f"{base}/roots/1"))[3])
    assert any(c.issuer == root_x1.subject for c in alternate)


async def test_pebble_cert_status_by_serial_valid_then_revoked(
    ours: tuple[str, str, PebbleCa], session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    jwk = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    account = await AccountRepository(pool).create(
        jwk=jwk, contact=(), tos_agreed=True, eab_kid=None, now=datetime.now(UTC)
    )
    leaf = make_leaf(make_issuer(), ["status.example.com"], serial=0x00FEDCBA9876)
    await store_certificate(pool, account.id, leaf)
    for base in ours[:2]:
        status, ctype, _, body = await _get(session, f"{base}/cert-status-by-serial/FEDCBA9876")
        assert (status, ctype) == (200, "application/json; charset=utf-8")
        assert json.loads(body) == {
            "Status": "Valid",
            "Serial": "fedcba9876",
            "Certificate": leaf.cert.public_bytes(serialization.Encoding.PEM).decode(),
        }
        assert body.startswith(b'{\n   "Status"')  # Go's MarshalIndent, three spaces

    revoked_at = datetime(2026, 12, 3, 12, 30, 15, 250000, tzinfo=UTC)
    await pool.execute(
        "UPDATE certificates SET revoked_at = $2, revocation_reason = 4 WHERE serial = $1",
        "fedcba9876",
        revoked_at,
    )
    _, _, _, body = await _get(session, f"{ours[0]}/cert-status-by-serial/fedcba9876")
    answer = json.loads(body)
    assert (answer["Status"], answer["Reason"]) == ("Revoked", 4)
    assert answer["RevokedAt"] == "2026-12-03 12:30:15.25 +0000 UTC"  # Go's Time.String()


def test_management_listen_config_key_and_pebble_name() -> None:
    assert load_config(env={}, overrides={"test_mode": True}).management_listen == (
        "127.0.0.1:15000"
    )
    off = load_config(env={"ACME_CA_MANAGEMENT_LISTEN": "off"}, overrides={"test_mode": True})
    assert off.management_listen == "off"


async def _pebble_issued(
    pebble: PebbleProcess, session: aiohttp.ClientSession, name: str
) -> tuple[x509.Certificate, JwsClient]:
    """A certificate the real Pebble issued for ``name`` (validation always passes), and the
    account that holds it."""
    client = JwsClient(session, pebble.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    assert (await client.register()).status == 201
    order = await client.post(
        client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]}
    )
    assert order.status == 201, order.body
    (authz_url,) = order.body["authorizations"]
    authz = (await client.post(authz_url, None)).body
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert (await client.post(challenge["url"], {})).status == 200
    order_url = order.headers["Location"]
    cert_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(cert_key, hashes.SHA256())
    )
    for _ in range(200):
        body = (await client.post(order_url, None)).body
        if body["status"] == "ready":
            csr_der = csr.public_bytes(serialization.Encoding.DER)
            finalized = await client.post(body["finalize"], {"csr": b64url_encode(csr_der)})
            assert finalized.status == 200, finalized.body
        elif body["status"] == "valid":
            pem = (await client.post(body["certificate"], None)).raw
            return x509.load_pem_x509_certificates(pem)[0], client
        else:
            assert body["status"] in ("pending", "processing"), body
        await asyncio.sleep(0.02)
    raise AssertionError("Pebble never issued")


def _layout(body: bytes) -> str:
    """The document with every string value and number blanked: Go's MarshalIndent layout
    and member order, which a client parsing it by hand depends on."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"(?=[,\n])', '"-"', body.decode())
    return re.sub(r": \d+", ": 0", text)


GO_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC$")
"""Go's ``Time.UTC().String()``, which Pebble sends as ``RevokedAt``."""


async def test_pebble_cert_status_by_serial_documents_as_pebbles(
    pebble: PebbleProcess,
    ours: tuple[str, str, PebbleCa],
    pool: asyncpg.Pool,
) -> None:
    """/cert-status-by-serial/SERIAL of a valid, then a revoked certificate: the same status,
    Content-Type, members in the same order, layout and value formats as the real Pebble's
    for a certificate it issued and revoked itself."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        cert, holder = await _pebble_issued(pebble, session, "status.example")
        their_serial = format(cert.serial_number, "x")
        jwk = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        account = await AccountRepository(pool).create(
            jwk=jwk, contact=(), tos_agreed=True, eab_kid=None, now=datetime.now(UTC)
        )
        leaf = make_leaf(make_issuer(), ["status-pair.example.com"], serial=0x0ABCDEF012345)
        await store_certificate(pool, account.id, leaf)
        my_serial = format(leaf.cert.serial_number, "x")

        async def both() -> tuple[tuple[int, str | None, bytes], ...]:
            answers = []
            for url in (
                f"{pebble.url}/cert-status-by-serial/{their_serial.upper()}",
                f"{ours[0]}/cert-status-by-serial/{my_serial.upper()}",
                f"{ours[1]}/cert-status-by-serial/{my_serial.upper()}",
            ):
                status, ctype, _, body = await _get(session, url)
                answers.append((status, ctype, body))
            theirs, *mine = answers
            for answer in mine:
                assert answer[:2] == theirs[:2], (theirs, answer)
                assert _layout(answer[2]) == _layout(theirs[2]), (theirs[2], answer[2])
            return tuple(answers)

        theirs, mine, _ = await both()
        assert json.loads(theirs[2])["Serial"] == their_serial
        assert json.loads(mine[2])["Serial"] == my_serial
        assert json.loads(theirs[2])["Status"] == json.loads(mine[2])["Status"] == "Valid"

        cert_der = cert.public_bytes(serialization.Encoding.DER)
        revoked = await holder.post(
            holder.directory["revokeCert"], {"certificate": b64url_encode(cert_der), "reason": 4}
        )
        assert revoked.status == 200, revoked.body
        await pool.execute(
            "UPDATE certificates SET revoked_at = $2, revocation_reason = 4 WHERE serial = $1",
            my_serial,
            datetime.now(UTC),
        )
        theirs, mine, _ = await both()
        their_doc, my_doc = json.loads(theirs[2]), json.loads(mine[2])
        assert list(my_doc) == list(their_doc)
        assert (their_doc["Status"], their_doc["Reason"]) == ("Revoked", 4)
        assert (my_doc["Status"], my_doc["Reason"]) == ("Revoked", 4)
        assert GO_TIME.match(their_doc["RevokedAt"]), their_doc
        assert GO_TIME.match(my_doc["RevokedAt"]), my_doc
