"""``acme-ca serve --test``: the in-process CT test logs give every certificate real SCTs.

One ``acme-ca serve --test --plain-http`` process (embedded defaults otherwise: development
PKI, no ``ct_log_list``) on the test's database; the ``acme`` library orders a certificate
(``always_valid``, so no challenge responder is needed).  The certificate must carry three
SCTs (199 days > 180) from the three test logs, which verify:

* with our own verifier and the log list the process wrote to ``home/ct/log_list.json``;
* with ``openssl s_client -ct -ctlogfile`` (the log file in OpenSSL's format, made from that
  list) against ``openssl s_server`` presenting the downloaded chain.

The process logs ``ct.test_logs_started`` and the SCTs (log, operator, timestamp) with
``certificate.issued``.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import time
from pathlib import Path

import pytest
from acme import challenges, client, messages
from acme import crypto_util as acme_crypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from acme_ca.ca.ct.loglist import openssl_ctlog_config, parse_log_list
from acme_ca.ca.ct.sct import certificate_precert_entry, embedded_scts, verify_signature
from integration.processes import CaProcesses, base_env
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

NAMES = ["www.ct-serve.example.com", "ct-serve.example.com"]


def _order(directory_url: str, key: ec.EllipticCurvePrivateKey) -> str:
    account_key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(account_key, alg=ES256, user_agent="acme-ca-ct-test")
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    order = acme.new_order(acme_crypto.make_csr(pem, NAMES))
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        acme.answer_challenge(challb, challb.chall.response(account_key))
    deadline = dt.datetime.now() + dt.timedelta(seconds=60)
    done = acme.poll_and_finalize(order, deadline)
    fullchain: str = done.fullchain_pem
    return fullchain


def _openssl_ct(
    tmp: Path, chain_pem: str, key: ec.EllipticCurvePrivateKey, root: Path, ctlogs: Path
) -> str:
    leaf, *rest = x509.load_pem_x509_certificates(chain_pem.encode())
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp / "chain.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in rest)
    )
    (tmp / "leaf.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = free_port()
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            str(port),
            "-cert",
            str(tmp / "leaf.pem"),
            "-key",
            str(tmp / "leaf.key"),
            "-cert_chain",
            str(tmp / "chain.pem"),
            "-quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "no s_server"
            time.sleep(0.05)
        run = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                str(root),
                "-verify_return_error",
                "-ct",
                "-ctlogfile",
                str(ctlogs),
            ],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.kill()
        server.wait(timeout=10)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_serve_test_mode_certificates_carry_real_verifiable_scts(dsn: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = base_env(
        ACME_CA_HOME=str(home),
        ACME_CA_DATABASE_URL=dsn,
        ACME_CA_STATUS_LISTEN=f"127.0.0.1:{free_port()}",
        ACME_CA_CHALLSRV_DNS=f"127.0.0.1:{free_port()}",
        ACME_CA_CHALLSRV_MANAGEMENT=f"127.0.0.1:{free_port()}",
        ACME_CA_CHALLSRV_HTTP01="off",
        ACME_CA_ALWAYS_VALID="true",
        ACME_CA_LOG_FORMAT="json",
    )
    key = ec.generate_private_key(ec.SECP256R1())
    with CaProcesses(tmp_path / "logs") as processes:
        ca = processes.serve(
            "serve",
            "--test",
            "--plain-http",
            "--listen",
            f"127.0.0.1:{port}",
            env=env,
            base_url=f"http://127.0.0.1:{port}",
        )
        ca.wait_ready(timeout=60)
        started = ca.wait_event("ct.test_logs_started")
        fullchain = _order(ca.directory_url, key)
        issued = ca.wait_event("certificate.issued")
        precert_events = ca.events("precertificate.issued")

    list_path = home / "ct" / "log_list.json"
    assert started["log_list"] == str(list_path.resolve())
    assert [(x["operator"], x["api"]) for x in started["logs"]] == [
        ("acme-ca test operator A", "rfc6962"),
        ("acme-ca test operator B", "rfc6962"),
        ("acme-ca test operator C", "static-ct-api"),
    ]
    log_list = parse_log_list(list_path.read_bytes())
    leaf, issuer = x509.load_pem_x509_certificates(fullchain.encode())[:2]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc > dt.timedelta(days=180)
    entry = certificate_precert_entry(
        leaf.tbs_certificate_bytes,
        issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    scts = embedded_scts(leaf.tbs_certificate_bytes)
    operators = []
    for sct in scts:
        ct_log = log_list.by_id(sct.log_id)
        assert ct_log is not None, "SCT from a log not in home/ct/log_list.json"
        verify_signature(sct, ct_log.public_key, entry)
        operators.append(ct_log.operator)
    assert sorted(operators) == [
        "acme-ca test operator A",
        "acme-ca test operator B",
        "acme-ca test operator C",
    ]
    assert sorted(s["operator"] for s in issued["scts"]) == sorted(operators)
    assert [e["serial"] for e in precert_events] == [issued["serial"]]
    assert issued["serial"] == format(leaf.serial_number, "x")

    ctlogs = tmp_path / "ctlogs.cnf"
    ctlogs.write_text(openssl_ctlog_config(log_list))
    # s_client compares SCT timestamps with the session start in whole seconds.
    time.sleep(max(0.0, max(s.timestamp for s in scts) / 1000 + 1.05 - time.time()))
    out = _openssl_ct(tmp_path, fullchain, key, home / "pki" / "root.pem", ctlogs)
    assert "SCTs present (3)" in out, out
    assert out.count("SCT validation status: valid") == 3, out
