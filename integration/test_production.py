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

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from acme_ca.ca.ct.loglist import parse_log_list
from acme_ca.ca.ct.sct import certificate_precert_entry, embedded_scts, verify_signature
from acme_ca.deployment import INVARIANTS
from integration.clients import (
    CERTBOT,
    certbot_dirs,
    certbot_run,
    challenge_records,
    openssl_verify,
)
from integration.netns import require_namespaces
from integration.processes import CaProcess, describe, tail
from integration.production_env import (
    PERSPECTIVES,
    STATUS_BASE_URL,
    ZONE,
    Perspective,
    ProductionEnv,
    SetupError,
    ca_subject,
    perspectives_toml,
    production_env,
    weak_key_lists,
)
from tests.support.ports import free_port
from tests.support.requirements import unavailable
from tests.support.softhsm import softhsm_available

pytestmark = pytest.mark.integration

EMAIL = "ops@production.example.com"
CERTBOT_TIMEOUT = 180


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
        unavailable("SoftHSM2 is not installed (apt-get install softhsm2)")
    try:
        with production_env(tmp_path_factory.mktemp("production")) as env:
            serve = env.start("serve", "serve")
            serve.wait_ready(cafile=env.cafile, timeout=60)
            worker = env.start("worker", "worker")
            worker.wait_event("worker.started", timeout=60)
            yield Running(env, serve, worker)
    except SetupError as exc:
        unavailable(f"the production environment could not be built: {exc}")


# ------------------------------------------------------------------------------------------
# certbot


def run_certbot(
    env: ProductionEnv, work: Path, name: str, args: list[str]
) -> subprocess.CompletedProcess[str]:
    """``certbot certonly --manual`` (dns-01, the hooks write the signed zone) for ``name``."""
    argv = [
        CERTBOT, "certonly", "--server", env.directory_url, "-n",
        *certbot_dirs(work),
        "--manual", "--preferred-challenges", "dns",
        "--manual-auth-hook", str(env.hooks / "certbot-dns01-auth.sh"),
        "--manual-cleanup-hook", str(env.hooks / "certbot-dns01-cleanup.sh"),
        "--agree-tos", "-m", EMAIL, "-d", name, *args,
    ]  # fmt: skip
    return certbot_run(argv, env.cafile, timeout=CERTBOT_TIMEOUT, cwd=work)


def certbot(env: ProductionEnv, work: Path, name: str, key: list[str]) -> None:
    """A certificate for ``name`` with a new ``key``; fails the test with every log."""
    run = run_certbot(env, work, name, [*key, "--cert-name", name])
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


def _openssl_ocsp(env: ProductionEnv, live: Path, url: str) -> subprocess.CompletedProcess[str]:
    """``openssl ocsp`` for certbot's certificate, trusting the imported root; retried while
    the response is not yet produced (the worker produces it right after signing)."""
    argv = ["openssl", "ocsp", "-issuer", str(live / "chain.pem"), "-cert",
            str(live / "cert.pem"), "-url", url, "-CAfile", str(env.pki / "root.pem"),
            "-no_nonce"]  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if ": good" in run.stdout or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


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
    openssl_verify(env.pki / "root.pem", live / "chain.pem", live / "cert.pem")
    public = leaf.public_key()
    assert isinstance(public, rsa.RSAPublicKey if label == "rsa" else ec.EllipticCurvePublicKey)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _uri(leaf, x509.CRLDistributionPoints) == [f"{STATUS_BASE_URL}/crl/{issuer}.crl"]
    assert _uri(leaf, x509.AuthorityInformationAccess) == [f"{STATUS_BASE_URL}/issuer/{issuer}.cer"]

    # Revocation status, signed in the HSM by the worker and served key-less by serve's
    # status listener at the paths of the URLs in the certificate: the CRL does not list the
    # leaf, and openssl finds the OCSP response good and signed by the issuer.
    status = f"http://{env.settings['status_listen']}"
    crl_path = urllib.parse.urlsplit(_uri(leaf, x509.CRLDistributionPoints)[0]).path
    with urllib.request.urlopen(status + crl_path, timeout=10) as response:
        crl = x509.load_der_x509_crl(response.read())
    issuing_key = issuing.public_key()
    assert isinstance(issuing_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert crl.issuer == issuing.subject and crl.is_signature_valid(issuing_key)
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is None
    ocsp = _openssl_ocsp(env, live, f"{status}/ocsp/{issuer}")
    assert f"{live / 'cert.pem'}: good" in ocsp.stdout, describe(ocsp)
    assert "Response verify OK" in ocsp.stdout + ocsp.stderr, describe(ocsp)

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
    issued = production.worker.wait_events(  # logged just after the commit
        "certificate.issued", where=lambda e: e.get("serial") == format(leaf.serial_number, "x")
    )
    assert issued and issued[0]["issuer"] == issuer, production.worker.tails()
    assert not production.serve.events("certificate.issued")

    # dns-01 was DNSSEC-secure at the primary and corroborated by all five remotes.
    challenges = await challenge_records(str(env.settings["database_url"]), name)
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


# ------------------------------------------------------------------------------------------
# the invariants: acme-ca check passes them all; each broken alone refuses serve and worker


def test_production_check_passes_every_invariant(production: Running) -> None:
    """``acme-ca check`` on the running configuration: production shape, 10/10, exit 0."""
    env = production.env
    text = env.cli("check")
    assert text.returncode == 0, describe(text)
    assert "10/10 invariants pass" in text.stdout, text.stdout
    assert "could this configuration issue publicly-trusted certificates? yes" in text.stdout
    as_json = env.cli("check", "--json")
    assert as_json.returncode == 0, describe(as_json)
    report = json.loads(as_json.stdout)
    assert report["shape"] == "production" and report["publicly_trusted"] is True, report
    assert [(i["number"], i["passed"]) for i in report["invariants"]] == [
        (n, True) for n in range(1, 11)
    ], report


ChangeFn = Callable[[ProductionEnv], dict[str, object]]


def _software_key(env: ProductionEnv) -> dict[str, object]:
    key, csr = env.ceremony.request(
        "dv-ecc-software",
        ca_subject("acme_ca Integration DV ECC CA S1"),
        ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
    )
    cert = env.ceremony.issue(csr, env.ceremony.dir / "dv-ecc-software.pem", "issuing")
    return {"pki_dir": env.variant_pki("software-key", certificates={"dv-ecc": cert},
                                       keys={"dv-ecc": key})}  # fmt: skip


def _reissued(issuer: str, profile: str, extensions: str) -> ChangeFn:
    """The issuing CA re-certified by the root (same HSM key) with other extensions."""

    def change(env: ProductionEnv) -> dict[str, object]:
        env.ceremony.add_profile(profile, extensions)
        cert = env.ceremony.reissue(issuer, profile)
        return {"pki_dir": env.variant_pki(profile, certificates={issuer: cert})}

    return change


def _perspectives(label: str, edit: Callable[[list[Perspective]], list[Perspective]]) -> ChangeFn:
    def change(env: ProductionEnv) -> dict[str, object]:
        path = env.base / f"perspectives-{label}.toml"
        path.write_text(perspectives_toml(edit(list(env.perspectives))))
        return {"mpic_perspectives_file": str(path)}

    return change


def _one_operator_log_list(env: ProductionEnv) -> dict[str, object]:
    """The log list with only its first operator's first log: no CT policy can be met."""
    data = json.loads(env.log_list.read_text())
    first = data["operators"][0]
    data["operators"] = [{**first, "logs": first["logs"][:1], "tiled_logs": []}]
    path = env.base / "log_list-one-log.json"
    path.write_text(json.dumps(data))
    return {"ct_log_list": str(path)}


def _weak_list_for_1024(env: ProductionEnv) -> dict[str, object]:
    paths, _ = weak_key_lists(env.base / "weak-keys-1024", [1024])
    return {"weak_key_blocklists": [str(p) for p in paths]}


OSAKA = (34.6937, 135.5023)  # 392 km from Tokyo
NO_DIGITAL_SIGNATURE = """
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
extendedKeyUsage = serverAuth
certificatePolicies = 2.23.140.1.2.1
authorityKeyIdentifier = keyid:always
subjectKeyIdentifier = hash
"""
CLIENT_AUTH_TOO = """
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
extendedKeyUsage = serverAuth, clientAuth
certificatePolicies = 2.23.140.1.2.1
authorityKeyIdentifier = keyid:always
subjectKeyIdentifier = hash
"""
Change = dict[str, object] | ChangeFn
#: (id, invariant number, the configuration change that breaks it and nothing else)
BROKEN: list[tuple[str, int, Change]] = [
    ("software-issuer-key", 1, _software_key),
    ("no-pkcs11-module", 1, {"pkcs11_module": None}),
    ("no-perspectives-file", 2, {"mpic_perspectives_file": None}),
    ("three-perspectives", 2, _perspectives("three", lambda ps: ps[:3])),
    ("one-rir", 2, _perspectives("one-rir", lambda ps: [replace(p, rir="ARIN") for p in ps])),
    ("perspective-near-the-primary", 2, _perspectives(
        "osaka", lambda ps: [*ps[:-1], replace(ps[-1], latitude=OSAKA[0], longitude=OSAKA[1])])),
    ("no-ct-log-list", 3, {"ct_log_list": None}),
    ("ct-policy-unmeetable", 3, _one_operator_log_list),
    ("dnssec-off", 4, {"dnssec": "off"}),
    ("http01-port-5002", 5, {"http01_port": 5002}),
    ("loopback-validation", 5, {"allow_loopback_validation": True}),
    ("no-weak-key-list", 6, {"weak_key_blocklists": []}),
    ("weak-key-list-for-no-accepted-size", 6, _weak_list_for_1024),
    ("48h-after-notbefore", 7, {"ct_deadline_seconds": 48 * 3600 - 60, "backdate_seconds": 60}),
    ("issuer-without-digitalsignature", 8,
     _reissued("dv-rsa", "no_digital_signature", NO_DIGITAL_SIGNATURE)),
    ("issuer-with-clientauth", 9, _reissued("dv-ecc", "client_auth_too", CLIENT_AUTH_TOO)),
    ("placeholder-status-base-url", 10, {"status_base_url": "http://pki.acme-ca.example.com"}),
    ("placeholder-terms", 10, {"terms_of_service": "https://example.com/terms"}),
]  # fmt: skip


def _rows() -> list[Any]:
    """One row per broken setting; the first row of each invariant also starts the worker
    (the others need only ``serve``: both run the same gate)."""
    seen: set[int] = set()
    rows = []
    for row_id, number, change in BROKEN:
        commands = ("serve",) if number in seen else ("serve", "worker")
        seen.add(number)
        rows.append(pytest.param(number, change, commands, id=f"{number}-{row_id}"))
    return rows


@pytest.mark.parametrize(("number", "change", "commands"), _rows())
def test_production_each_broken_invariant_refuses_serve_and_worker(
    production: Running, number: int, change: Change, commands: tuple[str, ...]
) -> None:
    """The same configuration with one invariant broken: ``serve`` (and ``worker``) exit 2
    naming that invariant and only it, before listening or signing."""
    env = production.env
    changes = change(env) if callable(change) else change
    invariant = next(i for i in INVARIANTS if i.number == number)
    config = env.config_file(
        **changes, listen=f"127.0.0.1:{free_port()}", status_listen=f"127.0.0.1:{free_port()}"
    )
    label = f"refused-{number}-{config.stem}"
    started = [env.start(command, f"{label}-{command}", config) for command in commands]
    for process in started:
        try:
            code = process.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{process.name} did not refuse to start\n{process.tails()}")
        stderr = process.stderr_path.read_text()
        assert code == 2, process.tails()
        assert "refusing to start, 1 of 10 production invariants fail" in stderr, stderr
        assert f"[{invariant.label}]" in stderr, stderr
        refused = process.events("deployment.refused")
        assert [f["invariant"] for f in refused[0]["failing"]] == [invariant.label], refused
        assert not process.events("server.ready") and not process.events("worker.started")


def test_br_6_1_1_3_debian_weak_key_csr_refused(production: Running, tmp_path: Path) -> None:
    """certbot with a CSR whose RSA 2048 key the configured Debian list names: the finalize
    is refused (badCSR, debian_weak) and nothing is signed."""
    env = production.env
    name = f"weak.{ZONE.rstrip('.')}"
    csr = tmp_path / "weak.csr"
    made = subprocess.run(
        ["openssl", "req", "-new", "-key", str(env.weak_key), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-outform", "DER", "-out", str(csr)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert made.returncode == 0, describe(made)
    work = tmp_path / "certbot"
    work.mkdir()
    run = run_certbot(env, work, name, ["--csr", str(csr)])
    assert run.returncode != 0, describe(run)
    log = (work / "logs" / "letsencrypt.log").read_text(errors="replace")
    assert "urn:ietf:params:acme:error:badCSR" in log, tail(work / "logs" / "letsencrypt.log")
    assert "Debian weak key" in log or "debian_weak" in log, tail(work / "logs" / "letsencrypt.log")
    assert not [e for e in production.worker.events("certificate.issued")
                if name in e.get("names", [])]  # fmt: skip
