"""``acme-ca admin order``: "what happened to this certificate?" in one command (issue 16).

certbot gets a certificate from ``acme-ca serve --test --perspectives 2`` through dns-01 and
revokes it; once the worker has republished OCSP and the CRL, ``admin order --serial`` must
print one timeline, oldest first, holding every kind of entry: certbot's requests (with
user agent and source address), audit rows, validation records (method, ADN, perspective,
quorum, DNSSEC status) and the CAA lookups, the lint result, precertificate, SCTs with log
and operator, final certificate, OCSP responses, CRLs and the revocation (CP 5.4.1; BR
5.4.1 items 7-8 for the validation facts). ``--request-id`` finds the same order from an
``X-Request-ID`` certbot logged; ``admin cert --pem`` gives back certbot's chain;
``admin certs --format csv`` lists the serial; ``audit verify`` passes after real traffic.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509

from acme_ca import cli
from acme_ca.admin.timeline import KINDS
from acme_ca.log import configure_logging
from integration.clients import CERTBOT, certbot_dirs, certbot_run, write_hooks
from integration.processes import CaProcesses, describe, tail
from integration.testmode_server import RunningTestCa, start_test_mode

pytestmark = pytest.mark.integration

NAME = "timeline.certbot.example.com"


def _certbot(ca: RunningTestCa, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return certbot_run(
        [CERTBOT, *args, "--server", ca.directory_url, "-n", *certbot_dirs(work)],
        ca.cafile,
        timeout=180,
        cwd=work,
    )


@dataclass
class Admin:
    """``acme-ca`` commands run in this process (a subprocess each would cost seconds) with
    the server's ACME_CA_* environment."""

    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str]:
        self.capsys.readouterr()
        try:
            status = cli.main(list(args))
        finally:
            configure_logging("json", "debug", stream=sys.__stdout__)  # not capsys' stream
        return status, self.capsys.readouterr().out


async def _published(dsn: str, serial: str, deadline: float) -> None:
    """Wait until OCSP answers revoked, a CRL was published after the revocation, and the
    revocation's request row is stored (rows are written in batches every 0.25 s, off the
    response path: db/requests.RequestRecorder)."""
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            ready = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM ocsp_responses o WHERE o.serial = $1
                                   AND o.status = 'revoked')
                      AND EXISTS (SELECT 1 FROM crls l JOIN certificates c ON c.issuer = l.issuer
                                  WHERE c.serial = $1 AND l.created_at >= c.revoked_at)
                      AND EXISTS (SELECT 1 FROM requests r WHERE r.path = '/acme/revoke-cert')""",
                serial,
            )
            if ready or time.monotonic() > deadline:
                assert ready, (
                    "OCSP/CRL not republished, or revoke-cert not stored, after the revocation"
                )
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def _finalize_request_id(log: str) -> str:
    """The X-Request-ID of the finalize response, from certbot's debug log."""
    after = re.split(r"Sending POST request to \S+/finalize", log, maxsplit=1)
    assert len(after) == 2, "certbot logged no finalize request"
    found = re.search(r"X-Request-ID: ([0-9a-f]+)", after[1], flags=re.IGNORECASE)
    assert found, "no X-Request-ID after finalize in certbot's log"
    return found[1]


def test_issue_16_admin_order_timeline_of_a_certbot_issuance_and_revocation(
    dsn: str,
    tmp_path: Path,
    processes: CaProcesses,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca = start_test_mode(
        processes,
        "serve-timeline",
        tmp_path / "ca-home",
        dsn=dsn,
        args=("--perspectives", "2"),
        env={"ACME_CA_RETRY_AFTER_SECONDS": "1"},
    )
    hooks = write_hooks(tmp_path / "hooks", ca.management_url)
    work = tmp_path / "certbot"
    work.mkdir()
    run = _certbot(
        ca, work, "certonly", "--manual", "--preferred-challenges", "dns",
        "--manual-auth-hook", str(hooks / "certbot-dns01-auth.sh"),
        "--manual-cleanup-hook", str(hooks / "certbot-dns01-cleanup.sh"),
        "--key-type", "ecdsa", "--agree-tos", "-m", "ops@example.test",
        "--cert-name", NAME, "-d", NAME,
    )  # fmt: skip
    certbot_log = work / "logs" / "letsencrypt.log"
    assert run.returncode == 0, "\n".join([describe(run), tail(certbot_log, 60), ca.proc.tails()])
    live = work / "config" / "live" / NAME
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    serial = format(leaf.serial_number, "x")
    request_id = _finalize_request_id(certbot_log.read_text(errors="replace"))

    run = _certbot(
        ca, work, "revoke", "--cert-path", str(live / "cert.pem"), "--reason", "superseded",
        "--no-delete-after-revoke",
    )  # fmt: skip
    assert run.returncode == 0, describe(run)
    asyncio.run(_published(dsn, serial, time.monotonic() + 60))
    for key, value in ca.env.items():
        if key.startswith("ACME_CA_"):
            monkeypatch.setenv(key, value)
    admin = Admin(capsys)

    # One command: the whole story, as JSON for this test (people get the same as text).
    status, shown = admin("admin", "order", "--serial", serial, "--json")
    assert status == 0, shown
    doc: dict[str, Any] = json.loads(shown)
    timeline: list[dict[str, Any]] = doc["timeline"]
    assert doc["serial"] == serial and doc["status"] == "valid"
    assert {e["kind"] for e in timeline} == set(KINDS), sorted({e["kind"] for e in timeline})
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)  # oldest first

    status, text = admin("admin", "order", "--serial", serial)
    assert status == 0 and f"serial {serial}" in text, text
    (tmp_path / "timeline.txt").write_text(text)  # kept for a failure's reader

    def kind(k: str) -> list[dict[str, Any]]:
        return [e for e in timeline if e["kind"] == k]

    requests = kind("request")
    assert any(r["details"]["path"].endswith("/finalize") for r in requests)
    assert any(r["details"]["path"] == "/acme/new-order" for r in requests)
    assert any(r["details"]["path"] == "/acme/revoke-cert" for r in requests)  # via its audit row
    assert all("certbot" in r["details"]["user_agent"].lower() for r in requests)
    assert all(r["details"]["source"] == "127.0.0.1" for r in requests)
    events = {e["details"]["event"] for e in kind("audit")}
    assert {
        "order.created",
        "challenge.processing",
        "challenge.valid",
        "order.processing",
        "issuance.prepared",
        "precertificate.issued",
        "ct.scts_collected",
        "certificate.issued",
        "certificate.revoked",
    } <= events, events
    validation = kind("validation")
    assert any(v["details"].get("quorum") == "2/2" for v in validation), validation
    assert {v["details"]["perspective"] for v in validation} >= {"primary", "test-1", "test-2"}
    assert any(v["details"].get("adn") == NAME for v in validation)
    assert any(v["details"].get("dnssec") == "unchecked" for v in validation)  # test mode
    caa = kind("caa")
    assert {c["details"]["query"] for c in caa} >= {f"{NAME} CAA", "example.com CAA"}, caa
    assert all("records=" in c["summary"] for c in caa)
    assert "no findings" in kind("lint")[0]["summary"] or "pkilint" in kind("lint")[0]["summary"]
    scts = kind("sct")
    assert scts and all(s["details"]["log"] and s["details"]["operator"] for s in scts)
    assert any(o["details"]["status"] == "revoked" for o in kind("ocsp"))
    assert any(c["details"]["lists_serial"] for c in kind("crl"))
    assert "superseded" in kind("revocation")[0]["summary"]

    # The X-Request-ID certbot saw on finalize leads to the same order.
    status, by_request = admin("admin", "order", "--request-id", request_id, "--json")
    assert status == 0, by_request
    assert json.loads(by_request)["order_id"] == doc["order_id"]

    # The certificate and its chain, as certbot got them.
    status, pem = admin("admin", "cert", serial, "--pem")
    assert status == 0, pem
    assert x509.load_pem_x509_certificates(pem.encode()) == (
        x509.load_pem_x509_certificates((live / "fullchain.pem").read_bytes())
    )
    cert = json.loads(admin("admin", "cert", serial, "--json")[1])
    assert cert["status"] == "revoked" and cert["revocation_reason"] == "superseded"
    assert len(cert["scts"]) == len(scts) and cert["chain"]
    status, human = admin("admin", "cert", serial)
    assert status == 0 and f"serial {serial}  revoked" in human and "chain: CN=" in human, human

    # The auditors' list, and a search by name.
    _, listed = admin("admin", "certs", "--issued-since", "2020-01-01", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(listed)))
    assert [(r["serial"], r["names"], r["status"]) for r in rows] == [(serial, NAME, "revoked")]
    found = json.loads(admin("admin", "search", "--domain", "example.com", "--json")[1])
    assert [o["certificate"]["serial"] for o in found] == [serial]

    status, verified = admin("audit", "verify")
    assert status == 0 and "audit chain OK" in verified, verified
    ca.stop()
