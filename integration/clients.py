"""Real ACME clients driven by the integration tests: certbot (and its hook scripts), the acme
library, openssl verify, and the challenge records a validation stored."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from acme import challenges, client, messages
from acme import crypto_util as acme_crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256, JWASignature
from josepy.jwk import JWK, JWKEC

from integration.processes import (
    CaProcess,
    base_env,
    describe,
)

BIN = Path(sys.executable).parent


CERTBOT = str(BIN / "certbot")


NAMES = ["www.example.com", "example.com", "api.example.com"]


EMAIL = "ops@example.test"


def certbot_dirs(base: Path) -> list[str]:
    """certbot's config, work and log directories under ``base``: nothing in /etc or /var."""
    return [
        "--config-dir", str(base / "config"),
        "--work-dir", str(base / "work"),
        "--logs-dir", str(base / "logs"),
    ]  # fmt: skip


def certbot_run(
    argv: Sequence[str], cafile: Path, *, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` (certbot and its arguments) against a CA whose HTTPS chains to ``cafile``;
    the run is returned, failed or not."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=base_env(REQUESTS_CA_BUNDLE=str(cafile)),
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def certbot_certonly(
    tmp_path: Path, ca: CaProcess, cafile: Path, key_type: str, http01_port: int
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """certbot certonly --standalone for NAMES; returns the run and certbot's base dir."""
    certbot_dir = tmp_path / f"certbot-{key_type}"
    args = [
        CERTBOT,
        "certonly",
        "--standalone",
        "--server",
        ca.directory_url,
        "--http-01-port",
        str(http01_port),
        "--http-01-address",
        "127.0.0.1",
        "--key-type",
        key_type,
        *[arg for name in NAMES for arg in ("-d", name)],
        "-n",
        "--agree-tos",
        "-m",
        EMAIL,
        *certbot_dirs(certbot_dir),
    ]
    return certbot_run(args, cafile), certbot_dir


def certbot_failure(
    run: subprocess.CompletedProcess[str], certbot_dir: Path, *cas: CaProcess
) -> str:
    log = certbot_dir / "logs" / "letsencrypt.log"
    log_tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log.exists() else ""
    return "\n".join(
        [f"certbot: {describe(run)}", f"--- letsencrypt.log tail ---\n{log_tail}"]
        + [ca.tails() for ca in cas]
    )


def openssl_verify(cafile: Path, untrusted: Path, leaf: Path) -> None:
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(cafile), "-untrusted", str(untrusted), str(leaf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verify.returncode == 0, f"openssl verify: {describe(verify)}"
    assert verify.stdout.strip() == f"{leaf}: OK", describe(verify)


def acme_account(
    directory_url: str,
    cafile: Path | None,
    key: JWK | None = None,
    alg: JWASignature = ES256,
) -> tuple[client.ClientV2, JWK]:
    """A registered account; P-256/ES256 unless ``key`` and ``alg`` say otherwise."""
    key = key or JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(
        key,
        alg=alg,
        user_agent="acme-ca-integration",
        # requests takes a CA bundle path wherever it takes True.
        verify_ssl=str(cafile) if cafile is not None else True,  # type: ignore[arg-type]
    )
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
    acme.new_account(messages.NewRegistration.from_data(email=EMAIL, terms_of_service_agreed=True))
    return acme, key


def csr_pem(names: list[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return acme_crypto.make_csr(pem, names)


HOOKS = {
    "certbot-dns01-auth.sh": """#!/bin/bash
# certbot --manual-auth-hook (dns-01): certbot exports CERTBOT_DOMAIN and CERTBOT_VALIDATION.
set -euo pipefail
MGMT=@MGMT@
curl -sSf -X POST "$MGMT/set-txt" \\
  -d "{\\"host\\":\\"_acme-challenge.${CERTBOT_DOMAIN}.\\",\\"value\\":\\"${CERTBOT_VALIDATION}\\"}"
""",
    "certbot-dns01-cleanup.sh": """#!/bin/bash
# certbot --manual-cleanup-hook (dns-01)
set -euo pipefail
MGMT=@MGMT@
curl -sSf -X POST "$MGMT/clear-txt" -d "{\\"host\\":\\"_acme-challenge.${CERTBOT_DOMAIN}.\\"}"
""",
    "lego-exec.sh": """#!/bin/bash
# lego --dns exec (EXEC_PATH): present|cleanup FQDN VALUE; the FQDN ends in a dot.
set -euo pipefail
MGMT=@MGMT@
case "$1" in
  present) curl -sSf -X POST "$MGMT/set-txt" -d "{\\"host\\":\\"$2\\",\\"value\\":\\"$3\\"}" ;;
  cleanup) curl -sSf -X POST "$MGMT/clear-txt" -d "{\\"host\\":\\"$2\\"}" ;;
esac
""",
    "dehydrated-http01.sh": """#!/bin/bash
# dehydrated hook (http-01): deploy_challenge/clean_challenge DOMAIN TOKEN KEYAUTH
set -euo pipefail
MGMT=@MGMT@
case "$1" in
  deploy_challenge)
    curl -sSf -X POST "$MGMT/add-http01" -d "{\\"token\\":\\"$3\\",\\"content\\":\\"$4\\"}" ;;
  clean_challenge)
    curl -sSf -X POST "$MGMT/del-http01" -d "{\\"token\\":\\"$3\\"}" ;;
esac
exit 0
""",
    "dehydrated-dns01.sh": """#!/bin/bash
# dehydrated hook (dns-01): deploy_challenge/clean_challenge DOMAIN TOKEN TXT-VALUE
set -euo pipefail
MGMT=@MGMT@
case "$1" in
  deploy_challenge)
    curl -sSf -X POST "$MGMT/set-txt" \\
      -d "{\\"host\\":\\"_acme-challenge.$2.\\",\\"value\\":\\"$4\\"}" ;;
  clean_challenge)
    curl -sSf -X POST "$MGMT/clear-txt" -d "{\\"host\\":\\"_acme-challenge.$2.\\"}" ;;
esac
exit 0
""",
    "uacme-http01.sh": """#!/bin/bash
# uacme -h (http-01 only): METHOD TYPE IDENT TOKEN AUTH; non-zero declines a challenge.
MGMT=@MGMT@
case "$1:$2" in
  begin:http-01)
    curl -sSf -X POST "$MGMT/add-http01" -d "{\\"token\\":\\"$4\\",\\"content\\":\\"$5\\"}" ;;
  done:http-01|failed:http-01)
    curl -sSf -X POST "$MGMT/del-http01" -d "{\\"token\\":\\"$4\\"}" ;;
  *) exit 1 ;;
esac
""",
    "uacme-dns01.sh": """#!/bin/bash
# uacme -h (dns-01 only): METHOD TYPE IDENT TOKEN AUTH; AUTH is already the TXT value.
MGMT=@MGMT@
case "$1:$2" in
  begin:dns-01)
    curl -sSf -X POST "$MGMT/set-txt" \\
      -d "{\\"host\\":\\"_acme-challenge.$3.\\",\\"value\\":\\"$5\\"}" ;;
  done:dns-01|failed:dns-01)
    curl -sSf -X POST "$MGMT/clear-txt" -d "{\\"host\\":\\"_acme-challenge.$3.\\"}" ;;
  *) exit 1 ;;
esac
""",
}


def write_hooks(directory: Path, management_url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in HOOKS.items():
        path = directory / name
        path.write_text(text.replace("@MGMT@", management_url))
        path.chmod(0o755)
    return directory


async def challenge_records(dsn: str, identifier: str) -> list[tuple[str, str, list[Any]]]:
    """(type, status, validation_records) of every challenge of ``identifier``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.type, c.status, c.validation_records FROM challenges c"
            " JOIN authorizations a ON a.id = c.authz_id WHERE a.identifier = $1"
            " ORDER BY c.id",
            identifier,
        )
    finally:
        await conn.close()
    result = []
    for row in rows:
        records = row["validation_records"]
        if isinstance(records, str):
            records = json.loads(records)
        result.append((row["type"], row["status"], records))
    return result


def pkilint_findings(
    cert: Path, validation: str = "DV-FINAL-CERTIFICATE"
) -> list[tuple[str, str, str]]:
    """(severity, code, node path) of every pkilint finding at WARNING and above: the
    ``lint_cabf_serverauth_cert lint -t VALIDATION`` command line and JSON report, run through
    the CLI's entry point in this process (0.2 s a certificate instead of a second for a new
    interpreter)."""
    from pkilint.bin.lint_cabf_serverauth_cert import main as pkilint_main

    out, err = io.StringIO(), io.StringIO()
    argv = ["lint", "-t", validation, "-s", "WARNING", "-f", "JSON", str(cert)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            pkilint_main(argv)
    except SystemExit as exc:  # argparse or a load error
        pytest.fail(f"pkilint exited {exc.code}: {err.getvalue()}")
    try:
        report = json.loads(out.getvalue())
    except ValueError:
        pytest.fail(f"pkilint output is not JSON: {out.getvalue()!r} {err.getvalue()!r}")
    return [
        (f["severity"], f["code"], r["node_path"])
        for r in report["results"]
        for f in r["finding_descriptions"]
    ]


def blocking_findings(
    cert: Path, validation: str = "DV-FINAL-CERTIFICATE"
) -> list[tuple[str, str, str]]:
    findings = pkilint_findings(cert, validation)
    return [f for f in findings if f[0] in ("ERROR", "FATAL")]


def answer_dns01(
    acme: client.ClientV2,
    key: JWK,
    order: messages.OrderResource,
    set_txt: Callable[[str, str], None],
) -> None:
    """Answer each authorization of ``order`` by dns-01: ``set_txt(name, value)`` puts the TXT
    value at the validation name (no trailing dot), then the challenge is POSTed."""
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01))
        response, validation = challb.chall.response_and_validation(key)
        set_txt(challb.chall.validation_domain_name(authz.body.identifier.value), validation)
        acme.answer_challenge(challb, response)
