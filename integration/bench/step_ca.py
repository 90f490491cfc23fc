"""Smallstep's step-ca as the benchmark's third target (issue 20): a production CA users pick
instead of us, run with the same load generator on the same machine.

Debian ships step-ca's Go source (``golang-github-smallstep-certificates-dev``, 0.19) but not
its ``cmd/step-ca``; ``integration/bench/stepca/main.go`` is our short main around
``commands.AppCommand``, built offline against Debian's GOPATH into a cache directory outside
the repository, keyed by the package's version and the main's hash, so a second run does not
rebuild (:func:`build`).  The ``step`` CLI is not packaged, so the root, the intermediate and
``ca.json`` (one ACME provisioner, Badger v2 on disk, step-ca's text request log, the layout
``step ca init`` writes) are made here with ``cryptography`` and
``stepca/ca.json.template``.  step-ca signs in the request with the intermediate's software
key; it runs no linter, CT, OCSP or CRL.

step-ca 0.19 fetches http-01 on port 80 only, so its ``--resolver`` is a
``pebble-challtestsrv`` answering :data:`HTTP01_HOST`, a loopback address of the benchmark's
own, where the load generator's responder listens on port 80 (root, or CAP_NET_BIND_SERVICE,
is needed for that port).  CPU counted: the step-ca process; the DNS server is reported beside
it, as for the other targets.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from string import Template

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.localca import cert_pem, key_pem, local_name, write_private
from integration.bench.servers import (
    READY_TIMEOUT,
    BenchSetupError,
    Target,
    _directory_answers,
    _wait,
    deb_version,
    start_dns,
    start_service,
)
from integration.processes import base_env
from tests.support.ports import free_port

PACKAGE = "golang-github-smallstep-certificates-dev"
GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).resolve().parent / "stepca"
#: Where the load generator answers step-ca's http-01 fetches (always port 80).
HTTP01_HOST = "127.0.34.80"
HTTP01_PORT = 80
BUILD_TIMEOUT = 900.0
#: The ACME provisioner's name in ca.json, part of the directory URL.
PROVISIONER = "acme"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/acme_ca-bench/step-ca`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "acme_ca-bench" / "step-ca"


def missing() -> str | None:
    """Why step-ca cannot be built here, or None."""
    if shutil.which("go") is None:
        return "the Go toolchain is not installed (apt-get install golang-go)"
    if deb_version(PACKAGE) is None:
        return f"step-ca's source is not installed (apt-get install {PACKAGE})"
    return None


def build() -> Path:
    """The step-ca binary for the installed package and our main, built once and cached."""
    problem = missing()
    if problem is not None:
        raise BenchSetupError(problem)
    version = deb_version(PACKAGE)
    main = (SOURCE / "main.go").read_bytes()
    key = f"{version}-{hashlib.sha256(main).hexdigest()[:12]}"
    exe = cache_dir() / key / "step-ca"
    if exe.is_file():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    partial = exe.with_name(f"step-ca.partial-{os.getpid()}")
    env = base_env(
        GO111MODULE="off",
        GOPATH=str(GOPATH),
        GOCACHE=str(cache_dir() / "gocache"),
        GOFLAGS="",
    )
    try:
        run = subprocess.run(
            ["go", "build", "-o", str(partial), "."],
            cwd=SOURCE,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchSetupError(f"building step-ca took over {BUILD_TIMEOUT:.0f} s") from exc
    if run.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BenchSetupError(f"building step-ca failed (exit {run.returncode}):\n{run.stderr}")
    partial.replace(exe)  # atomic: a concurrent run sees no half-written binary
    return exe


def _ca_cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    path_length: int,
    now: dt.datetime,
) -> x509.Certificate:
    """A CA certificate as ``step ca init`` makes them (P-256, 10 years, keyCertSign and
    cRLSign); self-signed when ``issuer`` is None."""
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def write_config(base: Path, port: int) -> tuple[Path, Path]:
    """Root, intermediate (keys mode 0600, unencrypted: no password file) and ca.json under
    ``base``; returns (ca.json, root.pem)."""
    certs, secrets, db = base / "certs", base / "secrets", base / "db"
    for directory in (certs, secrets, db):
        directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = local_name("acme_ca benchmark step-ca Root CA")
    root = _ca_cert(root_name, root_key, None, 1, now)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter_name = local_name("acme_ca benchmark step-ca Intermediate CA")
    inter = _ca_cert(inter_name, inter_key, (root_name, root_key), 0, now)
    root_path = certs / "root_ca.crt"
    root_path.write_bytes(cert_pem(root))
    (certs / "intermediate_ca.crt").write_bytes(cert_pem(inter))
    write_private(secrets / "intermediate_ca_key", key_pem(inter_key))
    values = {
        "root": str(root_path),
        "crt": str(certs / "intermediate_ca.crt"),
        "key": str(secrets / "intermediate_ca_key"),
        "address": f"127.0.0.1:{port}",
        "db": str(db),
    }
    template = Template((SOURCE / "ca.json.template").read_text())
    text = template.substitute({k: json.dumps(v) for k, v in values.items()})
    json.loads(text)  # the template stays valid JSON
    config = base / "ca.json"
    config.write_text(text)
    return config, root_path


def _check_http01_port() -> None:
    """Fail the set-up, not the level, when the responder cannot have port 80."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HTTP01_HOST, HTTP01_PORT))
        except OSError as exc:
            raise BenchSetupError(
                f"step-ca validates http-01 on port 80 only, and {HTTP01_HOST}:{HTTP01_PORT} "
                f"cannot be bound here ({exc}): run the benchmark as root, with nothing "
                "else listening on port 80"
            ) from exc


@contextlib.contextmanager
def step_ca(workdir: Path) -> Iterator[Target]:
    """step-ca with a fresh hierarchy and database, its DNS answering :data:`HTTP01_HOST`;
    stopped on exit."""
    exe = build()
    _check_http01_port()
    base = workdir / "step-ca"
    logs = base / "logs"
    with contextlib.ExitStack() as stack:
        dns_server = start_dns(stack, logs, answer=HTTP01_HOST)
        port = free_port()
        config, root = write_config(base, port)
        # STEPPATH keeps step-ca away from the invoking user's ~/.step.
        env = base_env(STEPPATH=str(base / "step"), HOME=str(base))
        server = start_service(
            stack,
            "step-ca",
            [str(exe), str(config), "--resolver", dns_server.address],
            env=env,
            log_dir=logs,
        )
        directory_url = f"https://127.0.0.1:{port}/acme/{PROVISIONER}/directory"
        _wait(
            "step-ca",
            _directory_answers(directory_url, root),
            [server, dns_server.service],
            READY_TIMEOUT,
        )
        yield Target(
            name="step-ca",
            directory_url=directory_url,
            cafile=root,
            http01_port=HTTP01_PORT,
            http01_host=HTTP01_HOST,
            cpu_pids=lambda: [server.pid],
            alive=server.alive,
            details={
                "version": deb_version(PACKAGE),
                "binary": str(exe),
                "shape": "step-ca 0.19 (Debian's source, our main), one process, HTTPS; "
                "software keys, signing in the request, Badger v2 on disk; no lint, CT, "
                f"OCSP or CRL; pebble-challtestsrv as DNS answering {HTTP01_HOST}",
                "processes": {"step-ca": server.pid, "dns": dns_server.service.pid},
                "config": json.loads(config.read_text()),
                "dns": dns_server.address,
                "cpu_counted": ["step-ca"],
                "logs": str(logs),
            },
            cpu_split={"step-ca": [server.pid]},
            infra_split={"dns": [dns_server.service.pid]},
        )
