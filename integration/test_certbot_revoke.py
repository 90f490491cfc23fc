"""certbot revoke against the real ``acme-ca serve`` (RFC 8555 §7.6; ACME-REV-1..3, ARI-3).

certbot (``--standalone`` http-01) gets two certificates from one account; the first is
revoked through the account (``--reason keycompromise``), the second with ``--key-path``, a
request signed by the certificate key.  The database then shows both revoked with the
requested reasons, the audit trail names who did it, both keys are on the blocked list,
renewalInfo tells clients to renew now, and a re-issue with the compromised key is refused.

Names resolve through the in-process challenge test server's DNS (every A query answers
127.0.0.1), on a thread of its own so the test can block on subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509

from acme_ca.acme import ari
from acme_ca.keyid import spki_sha256
from integration.challsrv_thread import ThreadedChallengeServer
from integration.clients import CERTBOT, certbot_dirs, certbot_run
from integration.processes import CaProcess, CaProcesses, base_env, describe
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

EMAIL = "ops@example.test"
BY_ACCOUNT = ["revoke-a.example.com", "www.revoke-a.example.com"]
BY_KEY = ["revoke-b.example.com"]


class Certbot:
    def __init__(self, base: Path, ca: CaProcess, cafile: Path, http01_port: int) -> None:
        self.base = base
        self.ca = ca
        self.cafile = cafile
        self.http01_port = http01_port

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return certbot_run(
            [
                CERTBOT,
                *args,
                "--server",
                self.ca.directory_url,
                "-n",
                *certbot_dirs(self.base),
            ],
            self.cafile,
            timeout=120,
        )

    def certonly(self, names: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "certonly",
            "--standalone",
            "--http-01-port",
            str(self.http01_port),
            "--http-01-address",
            "127.0.0.1",
            "--key-type",
            "ecdsa",
            "--agree-tos",
            "-m",
            EMAIL,
            "--cert-name",
            names[0],
            *[arg for name in names for arg in ("-d", name)],
            *extra,
        )

    def live(self, name: str) -> Path:
        return self.base / "config" / "live" / name

    def failure(self, run: subprocess.CompletedProcess[str]) -> str:
        log = self.base / "logs" / "letsencrypt.log"
        text = log.read_text(errors="replace").splitlines()[-60:] if log.exists() else []
        return "\n".join(
            [f"certbot: {describe(run)}", "--- letsencrypt.log tail ---", *text, self.ca.tails()]
        )


def _leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


async def _db(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _renewal_info(ca: CaProcess, cafile: Path, cert: x509.Certificate) -> dict[str, object]:
    context = ssl.create_default_context(cafile=str(cafile))
    url = f"{ca.base_url}/acme/renewal-info/{ari.cert_id_of(cert)}"
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        assert resp.status == 200
        assert resp.headers["Retry-After"]
        body: dict[str, object] = json.loads(resp.read())
        return body


def test_acme_rev_3_certbot_revoke_by_account_and_by_certificate_key(
    dsn: str, tmp_path: Path, processes: CaProcesses, challenge_dns: ThreadedChallengeServer
) -> None:
    home = tmp_path / "ca-home"
    http01_port = free_port()
    port = free_port()
    env = base_env(
        ACME_CA_HOME=str(home),
        ACME_CA_DATABASE_URL=dsn,
        ACME_CA_STATUS_LISTEN=f"127.0.0.1:{free_port()}",
    )
    ca = processes.serve(
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--dns-resolver",
        challenge_dns.resolver,
        "--dnssec",
        "off",
        "--http01-port",
        str(http01_port),
        "--allow-loopback-validation",
        env=env,
        base_url=f"https://127.0.0.1:{port}",
    )
    cafile = home / "tls" / "ca.pem"
    ca.wait_ready(cafile=cafile, timeout=40)
    certbot = Certbot(tmp_path / "certbot", ca, cafile, http01_port)

    for names in (BY_ACCOUNT, BY_KEY):
        run = certbot.certonly(names)
        assert run.returncode == 0, certbot.failure(run)
    cert_a = _leaf(certbot.live(BY_ACCOUNT[0]) / "cert.pem")
    cert_b = _leaf(certbot.live(BY_KEY[0]) / "cert.pem")
    serial_a, serial_b = format(cert_a.serial_number, "x"), format(cert_b.serial_number, "x")

    # Before any revocation renewalInfo suggests the last third of the lifetime.
    window = _renewal_info(ca, cafile, cert_a)["suggestedWindow"]
    assert isinstance(window, dict)
    assert window["start"] > datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # 1. By the account that ordered it, as keyCompromise.
    run = certbot.run(
        "revoke",
        "--cert-path",
        str(certbot.live(BY_ACCOUNT[0]) / "cert.pem"),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
    )
    assert run.returncode == 0, certbot.failure(run)
    assert "Congratulations! You have successfully revoked" in run.stdout + run.stderr

    # 2. Signed by the certificate's own key (jwk), as superseded.
    run = certbot.run(
        "revoke",
        "--cert-path",
        str(certbot.live(BY_KEY[0]) / "cert.pem"),
        "--key-path",
        str(certbot.live(BY_KEY[0]) / "privkey.pem"),
        "--reason",
        "superseded",
        "--no-delete-after-revoke",
    )
    assert run.returncode == 0, certbot.failure(run)

    rows = asyncio.run(
        _db(
            dsn,
            "SELECT serial, account_id, revoked_at, revocation_reason FROM certificates "
            "WHERE serial = ANY($1::text[])",
            [serial_a, serial_b],
        )
    )
    by_serial = {r["serial"]: r for r in rows}
    assert by_serial[serial_a]["revocation_reason"] == 1
    assert by_serial[serial_b]["revocation_reason"] == 4
    assert all(r["revoked_at"] is not None for r in rows)

    events = asyncio.run(
        _db(dsn, "SELECT actor, details FROM audit_events WHERE event = 'certificate.revoked'")
    )
    actors = {e["details"]["serial"]: e["actor"] for e in events}
    assert actors == {
        serial_a: f"account:{by_serial[serial_a]['account_id']}",
        serial_b: "certificate-key",
    }

    blocked = {
        bytes(r["spki_sha256"]): r["reason"]
        for r in asyncio.run(_db(dsn, "SELECT spki_sha256, reason FROM blocked_keys"))
    }
    assert "keyCompromise stated by" in blocked[spki_sha256(cert_a.public_key())]
    assert "proof of possession" in blocked[spki_sha256(cert_b.public_key())]

    # renewalInfo now says: renew immediately (a window wholly in the past).
    window = _renewal_info(ca, cafile, cert_a)["suggestedWindow"]
    assert isinstance(window, dict)
    assert window["end"] <= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # Re-issuing with the compromised key is refused at finalize (badCSR).
    run = certbot.certonly(BY_ACCOUNT, "--reuse-key", "--force-renewal")
    assert run.returncode != 0, describe(run)
    log = (certbot.base / "logs" / "letsencrypt.log").read_text(errors="replace")
    assert "badCSR" in log and "blocked" in log, certbot.failure(run)
