"""Organization Validation through certbot (issue 15; OV-1, OV-2, OV-3).

One ``acme-ca serve --test`` requiring EAB. The operator's side runs the real CLI on the
server's database: ``org add``, ``eab create --org``. certbot registers with that EAB key
(``--eab-kid``/``--eab-hmac-key``) and orders with ``--required-profile ov``: once with its
own RSA key, and once with a CSR of ours whose subject claims another organization. Each
certificate must verify with ``openssl verify`` against the test root, lint clean as pkilint
``OV-FINAL-CERTIFICATE``, come from an OV issuing CA, assert 2.23.140.1.2.2, and carry C, ST,
L, O from the vetted record only. Then the operator revokes the organization: certbot's
next OV order is refused, ``admin revoke --org`` revokes both certificates, and the OV
issuer's CRL lists them.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acme_ca.embedded_pg import EmbeddedPostgres
from integration.clients import (
    CERTBOT,
    blocking_findings,
    certbot_dirs,
    certbot_run,
    openssl_verify,
)
from integration.processes import describe, run_cli, tail
from integration.testmode_server import (
    QuietProcesses,
    RunningTestCa,
    http_get,
    start_test_mode,
    write_pem,
)
from tests.fixtures import TEMPLATE_DB

pytestmark = pytest.mark.integration

STANDALONE_ADDRESS = "127.0.0.2"
OV_POLICY = x509.ObjectIdentifier("2.23.140.1.2.2")
RECORD = {
    "name": "Example Trading K.K.",
    "country": "JP",
    "state": "Tokyo",
    "locality": "Chiyoda-ku",
}


@dataclass
class OvServer:
    ca: RunningTestCa
    root: Path
    base: Path

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        run = run_cli(*args, env=self.ca.env)
        if ok:
            assert run.returncode == 0, describe(run)
        return run

    def certbot(self, work: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [
            CERTBOT,
            "certonly",
            "--standalone",
            "--http-01-address",
            STANDALONE_ADDRESS,
            "--http-01-port",
            str(self.ca.http01_port),
            "--server",
            self.ca.directory_url,
            "-n",
            "--agree-tos",
            "-m",
            "ov@example.test",
            *certbot_dirs(work),
            *args,
        ]
        run = certbot_run(argv, self.ca.cafile, timeout=120, cwd=work)
        if ok:
            assert run.returncode == 0, "\n".join(
                [
                    f"$ {' '.join(argv)}",
                    describe(run),
                    tail(work / "logs" / "letsencrypt.log", 60),
                    self.ca.proc.tails(),
                ]
            )
        return run


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: EmbeddedPostgres,
    template_dsn: str,
    request: pytest.FixtureRequest,
) -> Iterator[OvServer]:
    base = tmp_path_factory.mktemp("ov")
    with QuietProcesses(base / "logs", request.session) as processes:
        dsn = postgres.create_database(f"ov_{uuid.uuid4().hex[:8]}", template=TEMPLATE_DB)
        ca = start_test_mode(
            processes,
            "serve-ov",
            base / "home",
            dsn=dsn,
            env={"ACME_CA_RETRY_AFTER_SECONDS": "1", "ACME_CA_EXTERNAL_ACCOUNT_REQUIRED": "true"},
        )
        try:
            yield OvServer(ca, ca.root_pem(base / "roots"), base)
        finally:
            ca.stop()


def vetted_org(server: OvServer) -> int:
    run = server.cli(
        "org",
        "add",
        "--name",
        RECORD["name"],
        "--country",
        RECORD["country"],
        "--state",
        RECORD["state"],
        "--locality",
        RECORD["locality"],
        "--evidence",
        "houjin-bangou 1234567890123",
        "--vetted-by",
        "alice",
        "--vetted-at",
        time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400)),
    )
    match = re.match(r"id: (\d+)\n", run.stdout)
    assert match, run.stdout
    return int(match[1])


def eab_for(server: OvServer, org_id: int) -> list[str]:
    run = server.cli("eab", "create", "--org", str(org_id), "--comment", "ov interop")
    kid = re.search(r"^kid: (\S+)$", run.stdout, re.MULTILINE)
    key = re.search(r"^hmac_key: (\S+)$", run.stdout, re.MULTILINE)
    assert kid and key, run.stdout
    return [f"--eab-kid={kid[1]}", f"--eab-hmac-key={key[1]}"]


def hostile_csr(directory: Path, names: list[str]) -> Path:
    """A CSR whose subject names another organization in another country."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                    x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Delaware"),
                    x509.NameAttribute(NameOID.LOCALITY_NAME, "Wilmington"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Not The Vetted Org Inc."),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unverified OU"),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "hostile.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def check_ov(
    server: OvServer, leaf: x509.Certificate, chain: list[x509.Certificate], names: list[str]
) -> None:
    """openssl verify, pkilint OV-FINAL-CERTIFICATE clean, OV policy, subject from the record."""
    directory = server.base / f"check-{leaf.serial_number:x}"
    directory.mkdir()
    leaf_pem = write_pem(directory / "leaf.pem", [leaf])
    chain_pem = write_pem(directory / "chain.pem", chain)
    openssl_verify(server.root, chain_pem, leaf_pem)
    blocking = blocking_findings(leaf_pem, validation="OV-FINAL-CERTIFICATE")
    assert not blocking, blocking
    subject = {a.oid: a.value for a in leaf.subject}
    assert subject == {
        NameOID.COUNTRY_NAME: RECORD["country"],
        NameOID.STATE_OR_PROVINCE_NAME: RECORD["state"],
        NameOID.LOCALITY_NAME: RECORD["locality"],
        NameOID.ORGANIZATION_NAME: RECORD["name"],
        NameOID.COMMON_NAME: names[0],
    }, leaf.subject.rfc4514_string()
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert OV_POLICY in [p.policy_identifier for p in policies]
    assert "OV" in chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)


def test_ov_3_certbot_eab_required_profile_ov_issues_from_the_record(server: OvServer) -> None:
    """OV-1..3 end to end, then the organization's revocation (CLI, refusal, CRL)."""
    org_id = vetted_org(server)
    eab = eab_for(server, org_id)
    work = server.base / "certbot"
    work.mkdir()
    suffix = uuid.uuid4().hex[:6]

    rsa_names = [f"ov-{suffix}.example.com", f"www.ov-{suffix}.example.com"]
    for name in rsa_names:
        server.ca.mgmt("/add-a", {"host": name, "addresses": [STANDALONE_ADDRESS]})
    server.certbot(
        work,
        *eab,
        "--required-profile",
        "ov",
        "--key-type",
        "rsa",
        "--rsa-key-size",
        "2048",
        "--cert-name",
        "ov-rsa",
        *[a for n in rsa_names for a in ("-d", n)],
    )
    live = work / "config" / "live" / "ov-rsa"
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    chain = x509.load_pem_x509_certificates((live / "chain.pem").read_bytes())
    check_ov(server, leaf, chain, rsa_names)

    # The same account (certbot keeps it in its config dir) with a CSR claiming another
    # organization: the subject still comes from the vetted record only.
    csr_names = [f"csr-{suffix}.example.com"]
    server.ca.mgmt("/add-a", {"host": csr_names[0], "addresses": [STANDALONE_ADDRESS]})
    out = server.base / "csr-out"
    out.mkdir()
    server.certbot(
        work,
        "--required-profile",
        "ov",
        "--csr",
        str(hostile_csr(out, csr_names)),
        "--cert-path",
        str(out / "cert.pem"),
        "--chain-path",
        str(out / "chain.pem"),
        "--fullchain-path",
        str(out / "fullchain.pem"),
        "-d",
        csr_names[0],
    )
    csr_leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    check_ov(
        server,
        csr_leaf,
        x509.load_pem_x509_certificates((out / "chain.pem").read_bytes()),
        csr_names,
    )

    # Revoked: the next OV order is refused at once, and its certificates are revoked.
    server.cli("org", "revoke", str(org_id), "--actor", "carol")
    refused_name = f"refused-{suffix}.example.com"
    server.ca.mgmt("/add-a", {"host": refused_name, "addresses": [STANDALONE_ADDRESS]})
    run = server.certbot(
        work, "--required-profile", "ov", "--cert-name", "refused", "-d", refused_name, ok=False
    )
    assert run.returncode != 0
    log = (work / "logs" / "letsencrypt.log").read_text(errors="replace")
    assert "unauthorized" in log and f"organization {org_id}" in log and "revoked" in log, tail(
        work / "logs" / "letsencrypt.log", 40
    )
    revoked = server.cli("admin", "revoke", "--org", str(org_id), "--actor", "carol")
    serials = {format(c.serial_number, "x") for c in (leaf, csr_leaf)}
    done = {
        line.split("\t")[1] for line in revoked.stdout.splitlines() if line.startswith("revoked\t")
    }
    assert done == serials, revoked.stdout
    issuers = {c.issuer.rfc4514_string() for c in (leaf, csr_leaf)}
    crl_urls = {
        c.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
        for c in (leaf, csr_leaf)
    }
    deadline = time.monotonic() + 20
    listed: set[str] = set()
    while time.monotonic() < deadline and listed != serials:
        listed = set()
        for url in crl_urls:
            path = url.split("/", 3)[3]
            status, _, body = http_get(f"http://127.0.0.1:{server.ca.status_port}/{path}")
            if status == 200:
                crl = x509.load_der_x509_crl(body)
                assert crl.issuer.rfc4514_string() in issuers
                listed |= {format(e.serial_number, "x") for e in crl} & serials
        time.sleep(0.3)
    assert listed == serials, (listed, serials)
