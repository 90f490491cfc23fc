"""acme_ca in production shape issues with certbot (issue 19, "Tests").

The environment (:mod:`integration.production_env`) is what an operator runs: an imported
hierarchy made with openssl whose issuing keys live in SoftHSM2, a PostgreSQL server of its
own, ``dnssec = "require"`` against Unbound and a signed zone, five remote VAs in network
namespaces the test creates (one per RIR, each with its own Unbound), CT logs in a separate
process behind a log list file, Debian weak-key lists for every RSA size, ``http01_port =
80`` with loopback validation off, real terms and status URLs.  ``acme-ca serve`` and
``acme-ca worker`` run as separate processes from one configuration file.

certbot (``--manual`` with hooks writing the TXT record into the signed zone) obtains an
RSA and an ECDSA certificate through dns-01; each must chain to the imported root through
the issuing CA for its key type, carry SCTs that verify against the log list, and have
been validated DNSSEC-secure by the primary and all five perspectives (quorum 5/5).

Needs root (network namespaces and veth links); elsewhere the module is skipped with the
reason, but as root under ``CI=true`` a missing piece is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from acme_ca.ca.ct.loglist import parse_log_list
from acme_ca.ca.ct.sct import certificate_precert_entry, embedded_scts, verify_signature
from integration.netns import require_namespaces
from integration.processes import CaProcess, describe, tail
from integration.production_env import (
    PERSPECTIVES,
    STATUS_BASE_URL,
    ZONE,
    ProductionEnv,
    SetupError,
    production_env,
)
from integration.test_issuance import CERTBOT, _openssl_verify
from integration.test_mpic_certbot import _challenge_records
from integration.test_testmode import clean_env
from tests.softhsm import softhsm_available

pytestmark = pytest.mark.integration

EMAIL = "ops@production.example.com"
CERTBOT_TIMEOUT = 180


def _unavailable(reason: str) -> None:
    """Skip, except as root under CI=true: CI must prove the production shape works."""
    if os.geteuid() == 0 and os.environ.get("CI") == "true":
        pytest.fail(f"running as root under CI=true, yet {reason}")
    pytest.skip(reason)


@dataclass
class Running:
    env: ProductionEnv
    serve: CaProcess
    worker: CaProcess


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The environment, ``acme-ca serve`` and one ``acme-ca worker``, once per module."""
    require_namespaces(veth=True, root=True)
    if not softhsm_available():
        _unavailable("SoftHSM2 is not installed (apt-get install softhsm2)")
    try:
        with production_env(tmp_path_factory.mktemp("production")) as env:
            serve = env.start("serve", "serve")
            serve.wait_ready(cafile=env.cafile, timeout=60)
            worker = env.start("worker", "worker")
            worker.wait_event("worker.started", timeout=60)
            yield Running(env, serve, worker)
    except SetupError as exc:
        _unavailable(f"the production environment could not be built: {exc}")


# ------------------------------------------------------------------------------------------
# certbot


def certbot(env: ProductionEnv, work: Path, name: str, key: list[str]) -> None:
    """``certbot certonly --manual`` (dns-01) for ``name``; fails the test with the logs."""
    argv = [
        CERTBOT, "certonly", "--server", env.directory_url, "-n",
        "--config-dir", str(work / "config"), "--work-dir", str(work / "work"),
        "--logs-dir", str(work / "logs"),
        "--manual", "--preferred-challenges", "dns",
        "--manual-auth-hook", str(env.hooks / "certbot-dns01-auth.sh"),
        "--manual-cleanup-hook", str(env.hooks / "certbot-dns01-cleanup.sh"),
        *key, "--agree-tos", "-m", EMAIL, "--cert-name", name, "-d", name,
    ]  # fmt: skip
    run = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=clean_env(REQUESTS_CA_BUNDLE=str(env.cafile)),
        cwd=work,
        timeout=CERTBOT_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert run.returncode == 0, "\n".join(
        [describe(run), tail(work / "logs" / "letsencrypt.log", 80), *env_tails(env)]
    )


def env_tails(env: ProductionEnv) -> list[str]:
    return [p.tails() for p in env.processes.started]


def _uri(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> list[str]:
    value = cert.extensions.get_extension_for_class(kind).value
    if isinstance(value, x509.CRLDistributionPoints):
        return [n.value for dp in value for n in dp.full_name or ()]
    assert isinstance(value, x509.AuthorityInformationAccess)
    return [
        d.access_location.value
        for d in value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]


@pytest.mark.parametrize(
    ("label", "key", "issuer"),
    [
        ("rsa", ["--key-type", "rsa", "--rsa-key-size", "2048"], "dv-rsa"),
        ("ecdsa", ["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"], "dv-ecc"),
    ],
    ids=["rsa2048-dv-rsa", "ecdsa-p256-dv-ecc"],
)
async def test_production_shape_certbot_dns01_issues_with_scts_and_5_of_5(
    production: Running, tmp_path: Path, label: str, key: list[str], issuer: str
) -> None:
    env = production.env
    name = f"{label}.{ZONE.rstrip('.')}"
    work = tmp_path / "certbot"
    work.mkdir()
    certbot(env, work, name, key)

    live = work / "config" / "live" / name
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    chain = x509.load_pem_x509_certificates((live / "chain.pem").read_bytes())
    issuing = x509.load_pem_x509_certificate((env.pki / f"{issuer}.pem").read_bytes())

    # The chain: the issuing CA for the key type, then the imported root, verified by openssl.
    assert chain == [issuing], [c.subject.rfc4514_string() for c in chain]
    _openssl_verify(env.pki / "root.pem", live / "chain.pem", live / "cert.pem")
    public = leaf.public_key()
    assert isinstance(public, rsa.RSAPublicKey if label == "rsa" else ec.EllipticCurvePublicKey)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _uri(leaf, x509.CRLDistributionPoints) == [f"{STATUS_BASE_URL}/crl/{issuer}.crl"]
    assert _uri(leaf, x509.AuthorityInformationAccess) == [
        f"{STATUS_BASE_URL}/issuer/{issuer}.cer"
    ]

    # CT: every embedded SCT verifies against its log's key in the log list file, and the
    # logs span at least two operators (three SCTs for a validity over 180 days).
    log_list = parse_log_list(env.log_list.read_bytes())
    issuer_spki = issuing.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    entry = certificate_precert_entry(leaf.tbs_certificate_bytes, issuer_spki)
    operators = []
    for sct in embedded_scts(leaf.tbs_certificate_bytes):
        ct_log = log_list.by_id(sct.log_id)
        assert ct_log is not None, f"an SCT from a log not in {env.log_list}"
        verify_signature(sct, ct_log.public_key, entry)
        operators.append(ct_log.operator)
    assert len(operators) >= 3 and len(set(operators)) >= 2, operators

    # The worker process signed it (serve has no worker), with the HSM key of the issuer.
    issued = [e for e in production.worker.events("certificate.issued")
              if e.get("serial") == format(leaf.serial_number, "x")]  # fmt: skip
    assert issued and issued[0]["issuer"] == issuer, production.worker.tails()
    assert not production.serve.events("certificate.issued")

    # dns-01 was DNSSEC-secure at the primary and corroborated by all five remotes.
    challenges = await _challenge_records(str(env.settings["database_url"]), name)
    valid = [records for kind, status, records in challenges if status == "valid"]
    assert [kind for kind, status, _ in challenges if status == "valid"] == ["dns-01"]
    records = valid[0]
    # Every DNS answer, the primary's and each remote's through its own Unbound, came
    # validated (AD); the TXT records say "secure" (CAA records carry only the AD bit).
    lookups = [r for r in records if "server" in r]
    assert {r["perspective"] for r in lookups} == {"primary", *(p.id for p in env.perspectives)}
    assert all(r.get("authenticated") is True for r in lookups), records
    txt = [r for r in lookups if r["method"] == "dns-01"]
    assert len(txt) == 1 + len(env.perspectives), records
    assert all(r["dnssec"] == "secure" and r["result"] == "pass" for r in txt), txt
    quorum = [r["quorum"] for r in records if "quorum" in r]
    assert quorum and set(quorum) == {"5/5"}, records
    summaries = {
        r["perspective"]: r
        for r in records
        if "corroborated" in r and r.get("perspective") not in (None, "primary")
    }
    assert set(summaries) == {pid for pid, *_ in PERSPECTIVES}, records
    assert all(s["corroborated"] is True for s in summaries.values()), summaries
    for p in env.perspectives:
        assert p.va is not None
        checked = [e for e in p.va.events("remote_va.checked") if e.get("identifier") == name]
        assert checked and all(e["ok"] for e in checked), p.va.tails()


def test_production_shape_serves_with_five_perspectives(production: Running) -> None:
    ready = production.serve.wait_event("server.ready")
    assert ready["corroboration"] == "5 remote perspective(s)"
    assert ready["worker"] == "external"
    assert ready["test_mode"] is False
