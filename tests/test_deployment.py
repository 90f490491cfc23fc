"""Deployment shapes and the production invariants (FC-1..FC-7; BR 3.2.2.8.1, 3.2.2.9,
6.1.1.3, 7.1.2.7, 7.1.2.8; CP 4.3.1, 6.2; Chrome Root Program Policy 1.8).

The production hierarchy here is *imported*: made with cryptography as a key ceremony would
make it, its issuers.toml written by hand (no ``generated_by``), its keys named by PKCS#11
label.  Start-up assessment reads files only, so the refusals need neither the HSM nor the
database: a configuration that passed would go on to connect to an unreachable database and
fail differently, which the table would report.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acme_ca.acme.problems import AcmeError
from acme_ca.ca.ct.sct import log_id_of
from acme_ca.ca.hierarchy import init_hierarchy
from acme_ca.ca.issuers_file import ISSUERS_FILE, read_issuers_file
from acme_ca.ca.settings import HierarchySettings
from acme_ca.ca.signer import SoftwareSigner
from acme_ca.cli import main
from acme_ca.clock import FixedClock
from acme_ca.config import Config
from acme_ca.deployment import (
    INVARIANTS,
    DeploymentRefused,
    Shape,
    assess,
    hierarchy_shape,
    placeholder_problem,
    signing_guard,
    weak_key_coverage,
)
from acme_ca.log import configure_logging
from acme_ca.main.serve import serve, work
from acme_ca.ra.keys import (
    KeyPolicy,
    KeyRejected,
    KeyRejectReason,
    Purpose,
    openssl_blacklist_fingerprint,
)
from acme_ca.status.ocsp import CertStatus, OcspSignerNotAllowed, sign_ocsp_response
from acme_ca.va.mtls import create_mpic_material
from tests.support.softhsm import find_module, shared_token, softhsm_available

#: The issue's example: started the day before BR 3.2.2.9 asks for 5 remote perspectives.
DAY_BEFORE_FIVE = datetime(2026, 12, 14, 12, 0, tzinfo=UTC)
FIVE_REQUIRED = datetime(2026, 12, 15, 0, 0, tzinfo=UTC)
NOW = DAY_BEFORE_FIVE
UNREACHABLE_DB = "postgresql://nobody@127.0.0.1:1/none"
STATUS = "http://status.ca-deploy-test.jp"


@pytest.fixture(autouse=True)
def _logging_back_to_stdout() -> Iterator[None]:
    """``main`` points structlog at the (captured) stderr of the test; undo that."""
    yield
    configure_logging("json", "debug")


# --------------------------------------------------------------------------- a key ceremony


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Deploy Test CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _usage(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature, False, False, False, False, True, True, False, False)


@dataclass(frozen=True)
class Ceremony:
    """What an imported hierarchy differs in; the defaults satisfy every invariant."""

    root_cn: str = "Deploy Test Root R1"
    generated_by: str | None = None
    issuer_digital_signature: bool = True
    issuer_eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,)
    software_key: bool = False
    status_base: str = STATUS


def write_hierarchy(pki: Path, ceremony: Ceremony = Ceremony()) -> Path:
    """A root and two issuing CAs (RSA, ECDSA) signed with cryptography, and issuers.toml."""
    pki.mkdir(parents=True, exist_ok=True)
    not_before = NOW - timedelta(days=30)
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = _name(ceremony.root_cn)
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=9000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(digital_signature=False), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA384())
    )
    (pki / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    lines = []
    if ceremony.generated_by is not None:
        lines.append(f'generated_by = "{ceremony.generated_by}"')
    lines.append('root = "root.pem"\n')
    keys: dict[str, Any] = {
        "dv-rsa": rsa.generate_private_key(65537, 2048),
        "dv-ecc": ec.generate_private_key(ec.SECP256R1()),
    }
    for name, key in keys.items():
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"Deploy Test {name}"))
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + timedelta(days=1800))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _usage(digital_signature=ceremony.issuer_digital_signature), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage(list(ceremony.issuer_eku)), critical=False)
        )
        cert = builder.sign(root_key, hashes.SHA384())
        (pki / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if ceremony.software_key and name == "dv-rsa":
            (pki / f"{name}.key.pem").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            key_line = f'key_file = "{name}.key.pem"'
        else:
            key_line = f'pkcs11_key_label = "ceremony-{name}"'
        lines.append(
            f'[issuers.{name}]\ncertificate = "{name}.pem"\n{key_line}\n'
            f'crl_url = "{ceremony.status_base}/crl/{name}.crl"\n'
            f'ocsp_url = "{ceremony.status_base}/ocsp/{name}"\n'
            f'ca_issuers_url = "{ceremony.status_base}/issuer/{name}.cer"\n'
        )
    path = pki / ISSUERS_FILE
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------- the rest


#: Five remotes across three RIRs, each far from Tokyo (the primary) and from each other.
FIVE_PERSPECTIVES = (
    ("us-east", "ARIN", 39.04, -77.49),
    ("eu-central", "RIPE NCC", 50.11, 8.68),
    ("ap-south", "APNIC", 19.08, 72.88),
    ("sa-east", "LACNIC", -23.55, -46.63),
    ("us-west", "ARIN", 45.52, -122.68),
)


def write_perspectives(directory: Path, count: int) -> dict[str, Any]:
    rows = FIVE_PERSPECTIVES[:count]
    material = create_mpic_material(directory / "mtls", [r[0] for r in rows])
    text = "[primary]\nlatitude = 35.68\nlongitude = 139.69\n"
    for i, (pid, rir, lat, lon) in enumerate(rows):
        text += (
            f'\n[[perspectives]]\nid = "{pid}"\nrir = "{rir}"\n'
            f'url = "https://192.0.2.{i + 1}:14443"\nlatitude = {lat}\nlongitude = {lon}\n'
        )
    path = directory / f"perspectives-{count}.toml"
    path.write_text(text)
    return {
        "mpic_perspectives_file": path,
        "mpic_client_cert": material.primary_cert,
        "mpic_client_key": material.primary_key,
        "mpic_server_ca": material.ca_cert,
    }


def write_log_list(path: Path, operators: int = 3) -> Path:
    """A v3 log list: one usable RFC 6962 log per operator, no temporal interval."""
    ops = []
    for i in range(operators):
        der = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        ops.append(
            {
                "name": f"Operator {i}",
                "logs": [
                    {
                        "description": f"log {i}",
                        "url": f"https://ct{i}.logs-deploy-test.jp/",
                        "log_id": base64.b64encode(log_id_of(der)).decode(),
                        "key": base64.b64encode(der).decode(),
                        "mmd": 86400,
                        "state": {"usable": {"timestamp": "2025-01-01T00:00:00Z"}},
                    }
                ],
            }
        )
    path.write_text(json.dumps({"version": "1", "operators": ops}))
    return path


def write_blacklists(directory: Path, sizes: tuple[int, ...] = (2048, 4096)) -> list[str]:
    """openssl-blacklist files named as Debian names them, each with a well-formed line (the
    fingerprint of a random odd modulus of the size: only the format matters here)."""
    paths = []
    for size in sizes:
        path = directory / f"blacklist.RSA-{size}"
        n = secrets.randbits(size) | (1 << (size - 1)) | 1
        path.write_text(f"# test list\n{openssl_blacklist_fingerprint(n)}\n")
        paths.append(str(path))
    return paths


@pytest.fixture
def production(tmp_path: Path) -> Config:
    """An imported hierarchy with every invariant met (checked by the first test)."""
    write_hierarchy(tmp_path / "pki")
    return replace(
        Config(),
        home=tmp_path / "home",
        pki_dir=tmp_path / "pki",
        database_url=UNREACHABLE_DB,
        pkcs11_module=find_module() or "/usr/lib/softhsm/libsofthsm2.so",
        pkcs11_pin="1234",
        ct_log_list=write_log_list(tmp_path / "log_list.json"),
        weak_key_blocklists=write_blacklists(tmp_path),
        status_base_url=STATUS,
        terms_of_service="https://ca-deploy-test.jp/subscriber-agreement",
        status_listen="off",
        **write_perspectives(tmp_path, 5),
    ).validate()


def test_fc_1_imported_hierarchy_meeting_every_invariant_is_production_and_passes(
    production: Config,
) -> None:
    result = assess(production, NOW)
    assert result.shape is Shape.PRODUCTION
    assert [f.invariant.id for f in result.failures] == []
    assert result.publicly_trusted
    assert [f.invariant.number for f in result.findings] == list(range(1, 11))


# --------------------------------------------------------------------------- start refusal


def _reissue(tmp_path: Path, **ceremony: Any) -> Callable[[Config], Config]:
    def change(config: Config) -> Config:
        pki = tmp_path / "pki-variant"
        write_hierarchy(pki, Ceremony(**ceremony))
        return replace(config, pki_dir=pki)

    return change


def _set(**changes: Any) -> Callable[[Path], Callable[[Config], Config]]:
    return lambda tmp_path: lambda config: replace(config, **changes)


def _four_perspectives(tmp_path: Path) -> Callable[[Config], Config]:
    # 4 are enough on 2026-12-14; the refusal rows are evaluated on 2026-12-15.
    return lambda config: replace(config, **write_perspectives(tmp_path / "four", 4))


def _in_process_ct(tmp_path: Path) -> Callable[[Config], Config]:
    return lambda config: replace(config, ct_log_list=None)


#: One row per invariant: (invariant id, clause the refusal names, how to break it).
BREAK_ONE: list[tuple[str, str, Callable[[Path], Callable[[Config], Config]]]] = [
    ("issuer-keys-in-hsm", "CP 6.2", lambda p: _reissue(p, software_key=True)),
    ("mpic-perspectives", "BR 3.2.2.9", _four_perspectives),
    ("ct-log-list", "CP 4.3.1", _in_process_ct),
    ("dnssec-required", "BR 3.2.2.8.1", _set(dnssec="off")),
    ("http01-port-80", "BR 3.2.2.4.19", _set(http01_port=5002)),
    ("debian-weak-keys", "BR 6.1.1.3", _set(weak_key_blocklists=[])),
    ("notbefore-48h", "BR 7.1.2.7", _set(ct_deadline_seconds=48 * 3600 - 60)),
    ("ocsp-signer", "BR 7.1.2.8", lambda p: _reissue(p, issuer_digital_signature=False)),
    (
        "subordinate-eku-serverauth",
        "Chrome Root Program Policy 1.8",
        lambda p: _reissue(
            p, issuer_eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
        ),
    ),
    ("no-placeholder-urls", "BR 4.10.2", _set(status_base_url="http://pki.example.com")),
]


def test_the_table_covers_every_invariant() -> None:
    assert [row[0] for row in BREAK_ONE] == [i.id for i in INVARIANTS]


@pytest.mark.parametrize("process", ["serve", "worker"])
@pytest.mark.parametrize(
    ("invariant", "clause", "breaker"), BREAK_ONE, ids=[row[0] for row in BREAK_ONE]
)
async def test_fc_1_production_start_is_refused_naming_the_broken_invariant(
    production: Config,
    tmp_path: Path,
    process: str,
    invariant: str,
    clause: str,
    breaker: Callable[[Path], Callable[[Config], Config]],
) -> None:
    config = breaker(tmp_path)(production)
    clock = FixedClock(FIVE_REQUIRED)
    assert [f.invariant.id for f in assess(config, clock.now()).failures] == [invariant]
    run = serve if process == "serve" else work
    with structlog.testing.capture_logs() as logs, pytest.raises(DeploymentRefused) as refused:
        await asyncio.wait_for(run(config, stop=asyncio.Event(), clock=clock), 30)
    message = str(refused.value)
    assert f"{invariant} ({clause}" in message and "1 of 10" in message
    [event] = [e for e in logs if e["event"] == "deployment.refused"]
    assert event["process"] == process and [f["invariant"] for f in event["failing"]] == [
        next(i.label for i in INVARIANTS if i.id == invariant)
    ]


def test_fc_1_tls_alpn_01_off_port_443_fails_the_port_invariant(production: Config) -> None:
    """BR 3.2.2.4.20: the TLS handshake is made to port 443.  Offering tls-alpn-01 on any other
    port fails the port invariant (so serve, worker and ``acme-ca check`` refuse), naming the
    clause; with tls-alpn-01 switched off the port no longer matters."""
    moved = replace(production, tlsalpn01_port=5001)
    failures = assess(moved, FIVE_REQUIRED).failures
    assert [f.invariant.id for f in failures] == ["http01-port-80"]
    assert "tlsalpn01_port = 5001" in failures[0].detail
    assert "BR 3.2.2.4.20" in failures[0].detail
    off = replace(moved, challenge_types=["http-01", "dns-01"])
    assert not assess(off, FIVE_REQUIRED).failures


async def test_fc_1_every_failure_is_listed_at_once(production: Config) -> None:
    config = replace(
        production, dnssec="off", http01_port=8080, weak_key_blocklists=[], ct_log_list=None
    )
    with pytest.raises(DeploymentRefused) as refused:
        await serve(config, stop=asyncio.Event(), clock=FixedClock(NOW))
    text = str(refused.value)
    assert "4 of 10" in text
    for clause in ("BR 3.2.2.8.1", "BR 3.2.2.4.19", "BR 6.1.1.3", "CP 4.3.1"):
        assert clause in text


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_cli_refusal_exits_non_zero_listing_every_failure(
    production: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    path = write_config(
        tmp_path / "ca.toml", replace(production, dnssec="off", weak_key_blocklists=[])
    )
    assert main(["--config", str(path), command]) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "BR 3.2.2.8.1" in err and "BR 6.1.1.3" in err


# --------------------------------------------------------------------------- development


def _resign_issuer(
    pki: Path,
    name: str,
    change: Callable[[x509.CertificateBuilder, x509.Certificate], x509.CertificateBuilder],
) -> None:
    """Re-sign an init-made issuer certificate with its development root's key file."""
    old = x509.load_pem_x509_certificate((pki / f"{name}.pem").read_bytes())
    root_key = serialization.load_pem_private_key(
        (pki / "keys" / "root-r1.key.pem").read_bytes(), None
    )
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(old.not_valid_before_utc)
        .not_valid_after(old.not_valid_after_utc)
    )
    builder = change(builder, old)
    cert = builder.sign(root_key, hashes.SHA384())
    (pki / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _copy_extensions(
    old: x509.Certificate, replace_with: x509.ExtensionType
) -> Callable[[x509.CertificateBuilder, x509.Certificate], x509.CertificateBuilder]:
    def change(builder: x509.CertificateBuilder, cert: x509.Certificate) -> x509.CertificateBuilder:
        for ext in cert.extensions:
            value = replace_with if type(ext.value) is type(replace_with) else ext.value
            builder = builder.add_extension(value, critical=ext.critical)
        return builder

    return change


@pytest.fixture
async def development(tmp_path: Path, dsn: str) -> Config:
    """An ``acme-ca init`` hierarchy (software keys) under a configuration that breaks all ten
    invariants: the init-made issuers are re-signed without digitalSignature (dv-rsa) and
    with clientAuth (dv-ecc)."""
    config = replace(
        Config(),
        home=tmp_path / "dev-home",
        pki_dir=tmp_path / "dev-pki",
        database_url=dsn,
        dnssec="off",
        http01_port=5002,
        ct_deadline_seconds=48 * 3600,
        plain_http=True,
        listen="127.0.0.1:0",
        status_listen="off",
        metrics_listen="off",
    ).validate()
    await init_hierarchy(HierarchySettings.from_config(config))
    pki = config.pki_path
    dv_rsa = x509.load_pem_x509_certificate((pki / "dv-rsa.pem").read_bytes())
    _resign_issuer(
        pki,
        "dv-rsa",
        _copy_extensions(
            dv_rsa, x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        ),
    )
    dv_ecc = x509.load_pem_x509_certificate((pki / "dv-ecc.pem").read_bytes())
    _resign_issuer(
        pki,
        "dv-ecc",
        _copy_extensions(
            dv_ecc,
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
        ),
    )
    return config


async def test_ov_issuers_are_held_to_the_same_invariants(development: Config) -> None:
    """Issue 15: the OV issuing CAs ``acme-ca init`` makes beside the DV ones are checked like
    them: their software keys fail issuer-keys-in-hsm, and an OV issuer re-signed with
    clientAuth fails subordinate-eku-serverauth by name."""
    pki = development.pki_path
    ov_ecc = x509.load_pem_x509_certificate((pki / "ov-ecc.pem").read_bytes())
    _resign_issuer(
        pki,
        "ov-ecc",
        _copy_extensions(
            ov_ecc,
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
        ),
    )
    failures = {f.invariant.id: f.detail for f in assess(development, datetime.now(UTC)).failures}
    for name in ("ov-rsa", "ov-ecc"):
        assert f"issuers.{name} (" in failures["issuer-keys-in-hsm"], failures
    assert "CN=acme_ca OV ECC CA 2026" in failures["subordinate-eku-serverauth"]
    assert "(issuers.ov-ecc)" in failures["subordinate-eku-serverauth"]
    assert "(issuers.ov-rsa)" not in failures["subordinate-eku-serverauth"]


async def test_fc_1_init_made_hierarchy_starts_logging_each_relaxation_once(
    development: Config,
) -> None:
    result = assess(development, datetime.now(UTC))
    assert result.shape is Shape.DEVELOPMENT
    assert [f.invariant.id for f in result.failures] == [i.id for i in INVARIANTS]
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(serve(development, stop=stop))
        try:
            async with asyncio.timeout(60):
                while not any(e["event"] == "server.ready" for e in logs):
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    relaxed = [e for e in logs if e["event"] == "deployment.invariant_relaxed"]
    assert [(e["invariant"], e["clause"]) for e in relaxed] == [
        (i.id, i.clause) for i in INVARIANTS
    ]
    assert all(e["log_level"] == "warning" for e in relaxed)
    [shape] = [e for e in logs if e["event"] == "deployment.shape"]
    assert shape["shape"] == "development" and shape["publicly_trusted"] is False
    [ready] = [e for e in logs if e["event"] == "server.ready"]
    assert ready["shape"] == "development" and ready["relaxed"] == [i.id for i in INVARIANTS]


# --------------------------------------------------------------------------- shape


def test_init_marks_its_hierarchy_development(tmp_path: Path) -> None:
    config = replace(Config(), home=tmp_path, pki_dir=tmp_path / "pki")
    asyncio.run(init_hierarchy(HierarchySettings.from_config(config)))
    parsed = read_issuers_file(config.pki_path)
    assert parsed.generated_by == "acme-ca init"
    assert hierarchy_shape(parsed)[0] is Shape.DEVELOPMENT


def test_marker_missing_is_production(tmp_path: Path) -> None:
    write_hierarchy(tmp_path, Ceremony(root_cn="Deploy Test Development Root"))
    shape, reason = hierarchy_shape(read_issuers_file(tmp_path, now=NOW))
    assert shape is Shape.PRODUCTION and "generated_by" in reason


def test_marker_with_a_root_not_saying_development_is_production(tmp_path: Path) -> None:
    write_hierarchy(tmp_path, Ceremony(generated_by="acme-ca init"))
    shape, reason = hierarchy_shape(read_issuers_file(tmp_path, now=NOW))
    assert shape is Shape.PRODUCTION and "Development" in reason


def test_marker_and_development_root_is_development(tmp_path: Path) -> None:
    write_hierarchy(
        tmp_path, Ceremony(generated_by="acme-ca init", root_cn="Deploy Test Development Root")
    )
    assert hierarchy_shape(read_issuers_file(tmp_path, now=NOW))[0] is Shape.DEVELOPMENT


def test_init_hierarchy_with_an_imported_root_added_is_production(tmp_path: Path) -> None:
    config = replace(Config(), home=tmp_path, pki_dir=tmp_path / "pki")
    asyncio.run(init_hierarchy(HierarchySettings.from_config(config)))
    write_hierarchy(tmp_path / "other")
    (config.pki_path / "other-root.pem").write_bytes((tmp_path / "other" / "root.pem").read_bytes())
    toml = config.pki_path / ISSUERS_FILE
    toml.write_text(toml.read_text() + '\n[roots.imported]\ncertificate = "other-root.pem"\n')
    shape, reason = hierarchy_shape(read_issuers_file(config.pki_path))
    assert shape is Shape.PRODUCTION and "roots.imported" in reason


def test_embedded_defaults_before_first_start_are_development(tmp_path: Path) -> None:
    result = assess(replace(Config(), home=tmp_path), NOW)
    assert result.shape is Shape.DEVELOPMENT and not result.publicly_trusted


def test_unreadable_issuers_file_is_production(tmp_path: Path) -> None:
    result = assess(replace(Config(), home=tmp_path, pki_dir=tmp_path / "nowhere"), NOW)
    assert result.shape is Shape.PRODUCTION
    assert {"issuer-keys-in-hsm", "ocsp-signer"} <= {f.invariant.id for f in result.failures}


def test_generated_by_must_be_a_string(tmp_path: Path) -> None:
    write_hierarchy(tmp_path)
    toml = tmp_path / ISSUERS_FILE
    toml.write_text("generated_by = 1\n" + toml.read_text())
    with pytest.raises(Exception, match="generated_by"):
        read_issuers_file(tmp_path, now=NOW)


# --------------------------------------------------------------------------- acme-ca check


def write_config(path: Path, config: Config) -> Path:
    """The keys of ``config`` that differ from the defaults, as a TOML file."""
    defaults = Config()
    lines = []
    for key in config.__dataclass_fields__:
        value = getattr(config, key)
        if value == getattr(defaults, key) or value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(f"{key} = {json.dumps([str(v) for v in value])}")
        else:
            lines.append(f"{key} = {json.dumps(str(value))}")
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())
    return path


def test_check_passes_a_production_configuration(
    production: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path / "ca.toml", production)
    assert main(["--config", str(path), "check", "--at", "2026-12-14T12:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "shape: production" in out and out.count("\nPASS") == 10
    assert "publicly-trusted certificates? yes" in out


def test_check_at_a_later_date_fails_the_perspective_minimum(
    production: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = replace(production, **write_perspectives(tmp_path / "four", 4))
    path = write_config(tmp_path / "ca.toml", config)
    assert main(["--config", str(path), "check", "--at", "2026-12-14T23:59:59Z"]) == 0
    capsys.readouterr()
    assert main(["--config", str(path), "check", "--json", "--at", "2026-12-15"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == "production" and report["publicly_trusted"] is False
    [failing] = [i for i in report["invariants"] if not i["passed"]]
    assert failing["clause"] == "BR 3.2.2.9" and "at least 5" in failing["detail"]
    assert failing["keys"][0] == "mpic_perspectives_file"


def test_check_answers_no_for_a_development_configuration(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "ca.toml"
    path.write_text(f'home = "{tmp_path / "home"}"\n')
    assert main(["--config", str(path), "init"]) == 0
    capsys.readouterr()
    assert main(["--config", str(path), "check"]) == 1
    out = capsys.readouterr().out
    assert "shape: development" in out
    assert "publicly-trusted certificates? no: development hierarchy" in out
    assert "FAIL   1 issuer-keys-in-hsm          CP 6.2" in out
    assert "set: weak_key_blocklists" in out
    assert "relaxing (and logging) each failing invariant" in out


def test_check_rejects_a_bad_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--at", "soon"]) == 2
    assert "ISO 8601" in capsys.readouterr().err


# --------------------------------------------------------------------------- invariant details


def test_fc_2_signing_guard_refuses_from_2026_12_15_with_four_perspectives(
    production: Config,
    tmp_path: Path,
) -> None:
    config = replace(production, **write_perspectives(tmp_path / "four", 4))
    started = assess(config, DAY_BEFORE_FIVE)
    assert started.failures == ()
    guard = signing_guard(started)
    assert guard(DAY_BEFORE_FIVE) == []
    assert guard(FIVE_REQUIRED - timedelta(seconds=1)) == []
    [violation] = guard(FIVE_REQUIRED)
    assert "BR 3.2.2.9" in violation and "at least 5 from 2026-12-15" in violation


def test_signing_guard_of_a_development_hierarchy_relaxes(tmp_path: Path) -> None:
    config = replace(Config(), home=tmp_path)
    guard = signing_guard(assess(config, NOW))
    assert guard(FIVE_REQUIRED) == []


def test_br_3_2_2_9_perspectives_closer_than_500_km_fail(
    production: Config,
    tmp_path: Path,
) -> None:
    settings = write_perspectives(tmp_path / "near", 5)
    path = settings["mpic_perspectives_file"]
    path.write_text(
        path.read_text().replace(
            "latitude = 45.52\nlongitude = -122.68", "latitude = 39.5\nlongitude = -77.0"
        )
    )
    result = assess(replace(production, **settings), NOW)
    [failure] = result.failures
    assert failure.invariant.id == "mpic-perspectives" and "500 km" in failure.detail


def test_cp_4_3_1_a_list_naming_the_in_process_test_logs_fails(
    production: Config,
    tmp_path: Path,
) -> None:
    in_process = production.home / "ct" / "log_list.json"
    in_process.parent.mkdir(parents=True)
    write_log_list(in_process)
    copy = tmp_path / "copied.json"
    copy.write_bytes(in_process.read_bytes())
    for listed in (in_process, copy):
        [failure] = assess(replace(production, ct_log_list=listed), NOW).failures
        assert failure.invariant.id == "ct-log-list" and "in-process" in failure.detail


def test_cp_4_3_1_a_list_that_cannot_meet_the_policy_fails(
    production: Config,
    tmp_path: Path,
) -> None:
    one_operator = write_log_list(tmp_path / "one.json", operators=1)
    [failure] = assess(replace(production, ct_log_list=one_operator), NOW).failures
    assert failure.invariant.id == "ct-log-list" and "cannot give 3 SCTs" in failure.detail


def test_ct_test_logs_behind_a_log_list_file_are_acceptable(production: Config) -> None:
    """Logs run as separate processes are URLs in a list, like any real log's."""
    assert production.ct_log_list is not None
    assert "logs-deploy-test.jp" in production.ct_log_list.read_text()
    assert not assess(production, NOW).failures


@pytest.mark.parametrize(
    ("url", "bad"),
    [
        ("http://pki.acme-ca.example.com", True),
        ("http://example.net/x", True),
        ("http://status.example.org", True),
        ("http://ca.example", True),
        ("http://status.test", True),
        ("http://x.invalid", True),
        ("http://localhost:14080", True),
        ("http://127.0.0.1:14080", True),
        ("http://10.0.0.8", True),
        ("http://status", True),
        ("http://repo.pubcert.jprs.jp", False),
        ("https://examples.com/terms", False),
    ],
)
def test_placeholder_urls(url: str, bad: bool) -> None:
    assert (placeholder_problem(url) is not None) is bad


def test_the_default_terms_of_service_is_a_placeholder(production: Config) -> None:
    [failure] = assess(
        replace(production, terms_of_service=Config().terms_of_service), NOW
    ).failures
    assert failure.invariant.id == "no-placeholder-urls" and "default" in failure.detail


def test_placeholder_issuer_urls_in_issuers_toml_fail(
    production: Config,
    tmp_path: Path,
) -> None:
    config = _reissue(tmp_path, status_base="http://crl.example.com")(production)
    [failure] = assess(config, NOW).failures
    assert "issuers.dv-rsa.crl_url" in failure.detail


# --------------------------------------------------------------------------- BR 6.1.1.3


def test_weak_key_coverage_comes_from_debian_file_names(tmp_path: Path) -> None:
    paths = [Path(p) for p in write_blacklists(tmp_path, (2048,))]
    odd = tmp_path / "weak-keys.txt"
    odd.write_text(Path(paths[0]).read_text())
    broken = tmp_path / "blacklist.RSA-4096"
    broken.write_text("not hex\n")
    covered, problems = weak_key_coverage([*paths, odd, broken])
    assert covered == frozenset({2048})
    assert any("does not say which RSA size" in p for p in problems)
    assert any("expected 20 hex digits" in p for p in problems)


def test_br_6_1_1_3_lists_covering_no_accepted_size_fail(
    production: Config,
    tmp_path: Path,
) -> None:
    (tmp_path / "small").mkdir()
    config = replace(production, weak_key_blocklists=write_blacklists(tmp_path / "small", (1024,)))
    [failure] = assess(config, NOW).failures
    assert failure.invariant.id == "debian-weak-keys" and "none of the RSA sizes" in failure.detail


PURPOSES: tuple[Purpose, ...] = ("account", "csr")


@pytest.mark.parametrize("purpose", PURPOSES)
async def test_br_6_1_1_3_production_refuses_rsa_sizes_no_list_covers(purpose: Purpose) -> None:
    policy = KeyPolicy(use_badkeys=False, debian_weak_rsa_sizes={2048, 4096})
    await policy.check(rsa.generate_private_key(65537, 2048).public_key(), purpose=purpose)
    with pytest.raises(KeyRejected) as rejected:
        await policy.check(rsa.generate_private_key(65537, 3072).public_key(), purpose=purpose)
    assert rejected.value.reason is KeyRejectReason.DEBIAN_WEAK_UNCHECKABLE
    error = rejected.value.to_acme_error(purpose=purpose)
    assert isinstance(error, AcmeError)
    expected = "badPublicKey" if purpose == "account" else "badCSR"
    assert error.problem.type.endswith(expected)
    assert "BR 6.1.1.3" in error.problem.detail and "3072" in error.problem.detail
    # ECDSA keys are not Debian weak keys: unaffected.
    await policy.check(ec.generate_private_key(ec.SECP256R1()).public_key(), purpose=purpose)


async def test_development_key_policy_accepts_every_configured_rsa_size() -> None:
    policy = KeyPolicy(use_badkeys=False)
    await policy.check(rsa.generate_private_key(65537, 3072).public_key(), purpose="csr")


# --------------------------------------------------------------------------- BR 7.1.2.8


async def test_br_7_1_2_8_no_ocsp_is_signed_by_a_key_without_digital_signature(
    tmp_path: Path,
) -> None:
    write_hierarchy(tmp_path, Ceremony(issuer_digital_signature=False, software_key=True))
    cert = x509.load_pem_x509_certificate((tmp_path / "dv-rsa.pem").read_bytes())
    signer = await SoftwareSigner.load(tmp_path / "dv-rsa.key.pem")
    try:
        with pytest.raises(OcspSignerNotAllowed, match="digitalSignature"):
            await sign_ocsp_response(
                cert,
                signer,
                1234,
                CertStatus(),
                "sha256",
                this_update=NOW,
                next_update=NOW + timedelta(days=4),
                produced_at=NOW,
            )
    finally:
        await signer.aclose()


@pytest.mark.skipif(not softhsm_available(), reason="SoftHSM2 is not installed")
async def test_softhsm_hierarchy_made_by_init_is_development_with_keys_in_the_hsm(
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    """The benchmark's shape: `acme-ca init` with pkcs11_module set. Invariant 1 holds, and
    the hierarchy is still development (its roots say so), so the rest may be relaxed."""
    token = shared_token(tmp_path_factory.getbasetemp() / "softhsm")
    config = replace(
        Config(),
        home=tmp_path,
        pkcs11_module=token.module,
        pkcs11_token_label=token.label,
        pkcs11_pin=token.pin,
    ).validate()
    await init_hierarchy(
        HierarchySettings.from_config(config), key_label_prefix=f"deploy-{secrets.token_hex(4)}"
    )
    result = assess(config, datetime.now(UTC))
    assert result.shape is Shape.DEVELOPMENT and not result.publicly_trusted
    hsm = next(f for f in result.findings if f.invariant.id == "issuer-keys-in-hsm")
    assert hsm.passed, hsm.detail
