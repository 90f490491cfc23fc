"""Revocation status end to end (CP 4.9.7, 4.9.9, 4.10; BR 4.9.7, 4.9.10, 7.2, 7.3).

``acme-ca serve --plain-http`` with its in-process signing worker (which also runs the status
updater) and the status listener on a port of its own; the challenge test server's DNS on a
thread of its own answers dns-01.  The ``acme`` library issues an ECDSA certificate, then:

* ``openssl ocsp`` against the listener says ``good`` (verified against the development root:
  the issuing CA signs its own responses);
* revokeCert with keyCompromise (1): within 10 seconds ``openssl ocsp`` says ``revoked`` with
  that reason and ``openssl crl`` shows the serial with "Key Compromise";
* ``lint_crl -t CRL -p BR`` and ``lint_ocsp_response`` find no ERROR or FATAL in the CRL and
  in the good and revoked responses;
* a serial never issued is never ``good`` (BR-OCSP-4);
* the CRL Number strictly increases across a restart of the process holding the keys.
"""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from acme import client, messages
from acme import crypto_util as acme_crypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from integration.challsrv_thread import ThreadedChallengeServer
from integration.clients import answer_dns01
from integration.processes import CaProcess, CaProcesses
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

_T = TypeVar("_T")
BIN = Path(sys.executable).parent
LINT_CRL = str(BIN / "lint_crl")
LINT_OCSP = str(BIN / "lint_ocsp_response")
NAME = "status.example.com"
#: CP 4.9.7 "immediately"; the brief's acceptance: within 10 seconds of revokeCert.
REVOCATION_DEADLINE = 10.0


# ------------------------------------------------------------------------------------------
# fixtures


# ------------------------------------------------------------------------------------------
# helpers


class StatusCa:
    """One ``acme-ca serve`` process and where its status listener is."""

    def __init__(self, process: CaProcess, status_url: str) -> None:
        self.process = process
        self.status_url = status_url


def start_ca(
    processes: CaProcesses, name: str, dsn: str, home: Path, challenge_dns: ThreadedChallengeServer
) -> StatusCa:
    status_port = free_port()
    process = processes.serve_plain(
        name,
        dsn,
        home,
        ACME_CA_DNS_RESOLVER=challenge_dns.resolver,
        ACME_CA_DNSSEC="off",
        ACME_CA_STATUS_LISTEN=f"127.0.0.1:{status_port}",
        ACME_CA_WORKER_POLL_SECONDS="1",
    )
    process.wait_ready(timeout=40)
    ready = process.wait_event("status.ready")
    assert ready["url"] == f"http://127.0.0.1:{status_port}", ready
    return StatusCa(process, ready["url"])


def issue(
    directory_url: str, challenge_dns: ThreadedChallengeServer
) -> tuple[client.ClientV2, x509.Certificate, str]:
    """A new account orders NAME with dns-01; returns the client, the leaf and the PEM chain."""
    account_key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(account_key, alg=ES256, user_agent="acme_ca-status-test")
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
    acme.new_account(
        messages.NewRegistration.from_data(email="ops@example.test", terms_of_service_agreed=True)
    )
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    order = acme.new_order(acme_crypto.make_csr(key_pem, [NAME]))
    answer_dns01(acme, account_key, order, challenge_dns.set_txt)
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    order = acme.poll_and_finalize(order, deadline)
    assert order.fullchain_pem
    leaf = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[0]
    return acme, leaf, order.fullchain_pem


def run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def openssl_ocsp(
    files: dict[str, Path], ocsp_url: str, *target: str, respout: Path | None = None
) -> str:
    """``openssl ocsp`` against the listener; stdout + stderr (``Response verify OK`` is
    printed on stderr)."""
    argv = [
        "openssl",
        "ocsp",
        "-issuer",
        str(files["issuer"]),
        *target,
        "-url",
        ocsp_url,
        "-CAfile",
        str(files["root"]),
    ]
    if respout is not None:
        argv += ["-respout", str(respout)]
    done = run(*argv)
    return done.stdout + done.stderr


def wait_for(check: Callable[[], str | None], what: str, timeout: float) -> str:
    """Poll ``check`` until it returns a string (its evidence) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last is not None:
            return last
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def fetch(url: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read(), dict(r.headers)


def crl_number(der: bytes) -> int:
    crl = x509.load_der_x509_crl(der)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def assert_lint_clean(tool: str, *args: str | Path) -> None:
    done = run(tool, "lint", *map(str, args))
    assert done.returncode == 0, f"{tool} {args}: {done.stdout}{done.stderr}"
    assert "ERROR" not in done.stdout and "FATAL" not in done.stdout, done.stdout


# ------------------------------------------------------------------------------------------
# the test


def test_status_revocation_end_to_end(
    dsn: str, tmp_path: Path, processes: CaProcesses, challenge_dns: ThreadedChallengeServer
) -> None:
    home = tmp_path / "home"
    ca = start_ca(processes, "ca-status", dsn, home, challenge_dns)
    acme, leaf, chain_pem = issue(ca.process.directory_url, challenge_dns)

    # Where the certificate says its status lives: the listener serves the same paths.
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_method = AuthorityInformationAccessOID.OCSP
    (ocsp_in_cert,) = [d.access_location.value for d in aia if d.access_method == ocsp_method]
    crldp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    full_name = crldp[0].full_name
    assert full_name is not None
    crl_in_cert = full_name[0].value
    issuer_name = urllib.parse.urlsplit(ocsp_in_cert).path.rsplit("/", 1)[1]
    assert issuer_name == "dv-ecc"
    ocsp_url = ca.status_url + urllib.parse.urlsplit(ocsp_in_cert).path
    crl_url = ca.status_url + urllib.parse.urlsplit(crl_in_cert).path

    files = {
        "cert": tmp_path / "cert.pem",
        "issuer": tmp_path / "issuer.pem",
        "root": home / "pki" / "root.pem",
    }
    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    files["cert"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files["issuer"].write_bytes(chain[1].public_bytes(serialization.Encoding.PEM))
    # The issuer certificate is also served, as the AIA caIssuers URL says.
    issuer_der, headers = fetch(ca.status_url + f"/issuer/{issuer_name}.cer")
    assert headers["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(issuer_der) == chain[1]

    # ---- good, right after issuance (the worker produces it after storing the certificate)
    good_der = tmp_path / "good.der"

    def says_good() -> str | None:
        out = openssl_ocsp(files, ocsp_url, "-cert", str(files["cert"]), respout=good_der)
        return out if f"{files['cert']}: good" in out else None

    out = wait_for(says_good, "OCSP good after issuance", 10)
    assert "Response verify OK" in out, out
    assert_lint_clean(LINT_OCSP, good_der)
    # GET (RFC 6960 A.1) answers the same: url-encoded base64 of the DER request.
    request_der = run(
        "openssl",
        "ocsp",
        "-issuer",
        str(files["issuer"]),
        "-cert",
        str(files["cert"]),
        "-no_nonce",
        "-reqout",
        str(tmp_path / "req.der"),
    )
    assert request_der.returncode == 0, request_der.stderr
    encoded = urllib.parse.quote(base64.b64encode((tmp_path / "req.der").read_bytes()), safe="")
    body, headers = fetch(f"{ocsp_url}/{encoded}")
    assert headers["Content-Type"] == "application/ocsp-response"
    assert "must-revalidate" in headers["Cache-Control"] and "Expires" in headers
    assert body == good_der.read_bytes()

    crl_before, headers = fetch(crl_url)
    assert headers["Content-Type"] == "application/pkix-crl"
    number_before = crl_number(crl_before)

    # ---- BR-OCSP-4: a serial we never issued is never good
    unknown = openssl_ocsp(files, ocsp_url, "-serial", "0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a")
    assert "unauthorized" in unknown, unknown
    assert ": good" not in unknown, unknown

    # ---- revoke with keyCompromise; OCSP and CRL follow within seconds
    acme.revoke(leaf, 1)
    revoked_at = time.monotonic()
    revoked_der = tmp_path / "revoked.der"

    def says_revoked() -> str | None:
        out = openssl_ocsp(files, ocsp_url, "-cert", str(files["cert"]), respout=revoked_der)
        return out if f"{files['cert']}: revoked" in out else None

    out = wait_for(says_revoked, "OCSP revoked", REVOCATION_DEADLINE)
    assert "Reason: keyCompromise" in out, out
    assert "Response verify OK" in out, out
    crl_der = tmp_path / "crl.der"

    def crl_entry_text() -> str | None:
        """The `openssl crl -text` block of our serial's entry, once the CRL lists it."""
        der, _ = fetch(crl_url)
        crl_der.write_bytes(der)
        text = run("openssl", "crl", "-inform", "DER", "-in", str(crl_der), "-text", "-noout")
        for block in text.stdout.split("Serial Number:")[1:]:
            if int(block.split()[0], 16) == leaf.serial_number:
                return block
        return None

    left = REVOCATION_DEADLINE - (time.monotonic() - revoked_at)
    entry = wait_for(crl_entry_text, "CRL entry", max(left, 1.0))
    assert "Key Compromise" in entry, entry
    number_revoked = crl_number(crl_der.read_bytes())
    assert number_revoked > number_before
    assert_lint_clean(LINT_CRL, "-t", "CRL", "-p", "BR", crl_der)
    assert_lint_clean(LINT_OCSP, revoked_der)
    # BR-CRL-1: the published CRL is also a file an operator can hand to a CDN.
    crl_file = home / "crl" / "dv-ecc.crl"
    on_disk = wait_for(
        lambda: (
            crl_file.read_bytes().hex()
            if crl_file.exists() and crl_number(crl_file.read_bytes()) >= number_revoked
            else None
        ),
        "CRL file",
        5,
    )
    assert leaf.serial_number in {
        e.serial_number for e in x509.load_der_x509_crl(bytes.fromhex(on_disk))
    }

    events = ca.process.log_events()
    published = [e for e in events if e.get("event") == "crl.published"]
    assert any(e["issuer"] == "dv-ecc" and e.get("trigger") == "revocation" for e in published)
    assert any(e.get("event") == "ocsp.refreshed" for e in events)

    # ---- restart the process holding the keys: the CRL Number keeps increasing
    assert ca.process.terminate() == 0, ca.process.tails()
    again = start_ca(processes, "ca-status-restarted", dsn, home, challenge_dns)
    again.process.wait_event("crl.published")

    def newer_crl() -> str | None:
        try:
            der, _ = fetch(crl_url.replace(ca.status_url, again.status_url))
        except urllib.error.URLError:
            return None
        return der.hex() if crl_number(der) > number_revoked else None

    after_restart = bytes.fromhex(wait_for(newer_crl, "CRL after restart", 10))
    entries = {e.serial_number for e in x509.load_der_x509_crl(after_restart)}
    assert leaf.serial_number in entries
    out = openssl_ocsp(
        files, ocsp_url.replace(ca.status_url, again.status_url), "-cert", str(files["cert"])
    )
    assert f"{files['cert']}: revoked" in out, out
    assert again.process.terminate() == 0, again.process.tails()
