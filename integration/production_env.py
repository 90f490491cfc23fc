"""acme_ca in production shape on one machine, for ``integration/test_production.py``.

What :func:`production_env` builds (root only: network namespaces and veth links):

* **An imported hierarchy** made with the ``openssl`` command line, as a key ceremony would:
  an offline root (ECDSA P-384, its key never leaves the ceremony directory) and two issuing
  CAs (RSA 2048, ECDSA P-256) in the BR 7.1.2.6 profile -- serverAuth-only EKU, keyUsage
  digitalSignature+keyCertSign+cRLSign, policies 2.23.140.1.2.1 and the CP's OID, CRL DP and
  AIA under ``http://repo.pubcert.jprs.jp``.  The issuing keys are imported into a SoftHSM2
  token with ``softhsm2-util --import`` and then deleted; ``issuers.toml`` is written by hand
  with ``pkcs11_key_label``.  Nothing says "Development", and no ``acme-ca init`` ran.
  The certificate requests are kept, so variants of an issuing CA's certificate (same key)
  can be signed later by the root (:meth:`Ceremony.issue`).
* **Its own PostgreSQL server** (``pg_ctl`` through :class:`EmbeddedPostgres`), given to the
  CA as ``database_url``.
* **A signed zone** ``production.example.com`` (ECDSA P-256, ``CAA 0 issue "jprs.jp"`` at the
  apex) served by a small authoritative server; an ACME client's hook sets its
  ``_acme-challenge`` TXT records through pebble-challtestsrv's ``/set-txt`` verb and the zone
  is re-signed (:mod:`integration.signed_dns`).
* **Debian's Unbound** validating it with the zone's key as trust anchor: one for the primary
  (``dnssec = "require"``), and one inside each remote perspective's namespace.
* **Five remote perspectives**, one per RIR, each a network namespace the test creates (unique
  names) with a veth link to the main namespace in 198.18.0.0/15 (RFC 2544's test range):
  ``acme-ca remote-va`` listens on the namespace's own address, resolves through its own
  Unbound (which reaches the authoritative server over the link: no shared cache) and runs
  with the production defaults.  The perspectives file puts them in real cities, all >= 500
  km apart and from the primary in Tokyo.
* **CT test logs** in a process of their own (``integration.bench.ctlogs``, the same logs the
  CA would otherwise start inside itself) with a home of their own holding a copy of the
  roots they accept, reached over HTTP through the log list file they write:
  ``ct_log_list``.
* **Debian weak-key lists** (``blacklist.RSA-<bits>``, openssl-blacklist format) for every
  RSA size the key policy accepts.
* The CA's configuration file with every production setting (``http01_port = 80``, loopback
  validation off, ``ct_deadline_seconds + backdate_seconds`` far below 48 h, real terms and
  status URLs), ``serve`` without an in-process worker, and ``acme-ca worker`` beside it.

http-01 is not used: on port 80 with loopback refused it needs the client on an address
outside loopback; dns-01 through the signed zone proves the same chain of trust.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from acme_ca.embedded_pg import SHARED_CLUSTER_ROOT, EmbeddedPostgres
from acme_ca.ra.keys import DEFAULT_RSA_SIZES, openssl_blacklist_fingerprint
from integration.bench.servers import Service, start_service
from integration.clients import write_hooks
from integration.netns import Namespace, add_veth, create_namespace
from integration.processes import (
    CaProcess,
    CaProcesses,
    base_env,
    describe,
    run_cli,
)
from integration.signed_dns import (
    AuthoritativeServer,
    DynamicSignedZone,
    ZoneManagement,
    find_unbound,
    install_unbound,
    running_unbound,
    unbound_config,
)
from integration.signed_dns import free_port as free_dns_port
from tests.support.ports import free_port
from tests.support.softhsm import SoftHsmToken

ZONE = "production.example.com."
STATUS_BASE_URL = "http://repo.pubcert.jprs.jp"
TERMS_OF_SERVICE = "https://jprs.jp/pubcert/info/repository/subscriber-agreement/"
TOKEN_LABEL = "acme-ca-production"
POLICY_OID = "1.3.6.1.4.1.53827.1.1.4"
REMOTE_VA_PORT = 14443
READY_TIMEOUT = 60.0
#: Tokyo: where the primary VA and its resolver are.
PRIMARY_AT = (35.6762, 139.6503)
#: (id, RIR, latitude, longitude): one perspective per RIR, all >= 500 km apart and from Tokyo.
PERSPECTIVES = (
    ("us-east", "ARIN", 39.0438, -77.4874),  # Ashburn
    ("eu-central", "RIPE NCC", 50.1109, 8.6821),  # Frankfurt
    ("ap-southeast", "APNIC", 1.3521, 103.8198),  # Singapore
    ("sa-east", "LACNIC", -23.5505, -46.6333),  # Sao Paulo
    ("af-south", "AFRINIC", -26.2041, 28.0473),  # Johannesburg
)
ZONE_TEXT = """
@ 3600 IN SOA ns hostmaster 1 3600 600 86400 60
@ 3600 IN NS ns
@ 3600 IN CAA 0 issue "jprs.jp"
ns 3600 IN A 127.0.0.1
www 3600 IN A 192.0.2.80
"""
#: The subject of every CA certificate: C, O, CN (BR 7.1.2.10.2); no "Development".
ORGANIZATION = "acme_ca Integration Test Trust Services"


class SetupError(RuntimeError):
    """A piece of the environment could not be built; the message says which and why."""


def _run(
    argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> str:
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else dict(env),
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise SetupError(f"$ {' '.join(argv)}\n{describe(done)}")
    return done.stdout


# ------------------------------------------------------------------------------------------
# the key ceremony: openssl


OPENSSL_CNF = """\
[ca]
default_ca = ceremony

[ceremony]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
rand_serial = yes
default_md = sha384
policy = subject_as_requested
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes
utf8 = yes

[subject_as_requested]
countryName = supplied
organizationName = supplied
commonName = supplied

[req]
distinguished_name = dn
string_mask = utf8only
utf8 = yes
prompt = no

[dn]
CN = unused

# BR 7.1.2.1: a root CA certificate.
[root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

# BR 7.1.2.6: a TLS subordinate CA certificate (Chrome: serverAuth only).
[issuing]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
extendedKeyUsage = serverAuth
certificatePolicies = 2.23.140.1.2.1, {policy_oid}
authorityKeyIdentifier = keyid:always
subjectKeyIdentifier = hash
authorityInfoAccess = caIssuers;URI:{base}/issuer/root-r1.cer
crlDistributionPoints = URI:{base}/crl/root-r1.crl
"""


@dataclass
class Ceremony:
    """The ceremony directory: the root's key, the openssl CA database, the requests."""

    dir: Path
    pki: Path
    status_base_url: str

    @property
    def cnf(self) -> Path:
        return self.dir / "openssl.cnf"

    def add_profile(self, section: str, text: str) -> None:
        """One more ``[section]`` of extensions for :meth:`issue`."""
        with self.cnf.open("a") as fh:
            fh.write(f"\n[{section}]\n{text.strip()}\n")

    def openssl(self, *args: str) -> str:
        return _run(["openssl", *args], cwd=self.dir)

    def issue(self, csr: Path, out: Path, profile: str, *, selfsign: bool = False) -> Path:
        """Sign ``csr`` with the root (or its own key), valid from yesterday: a certificate
        cannot start after the subscriber certificates it issues, which are backdated."""
        start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%y%m%d%H%M%SZ")
        days = 9131 if selfsign else 1826  # 25 and 5 years
        end = (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime("%Y%m%d%H%M%SZ")
        argv = [
            "ca",
            "-batch",
            "-config",
            str(self.cnf),
            "-notext",
            "-in",
            str(csr),
            "-out",
            str(out),
            "-extensions",
            profile,
            "-startdate",
            start,
            "-enddate",
            end,
            "-keyfile",
            str(self.dir / "root.key"),
        ]
        argv += ["-selfsign"] if selfsign else ["-cert", str(self.pki / "root.pem")]
        self.openssl(*argv)
        return out

    def reissue(self, name: str, profile: str) -> Path:
        """Another certificate for issuing CA ``name``'s key (in the HSM), from its kept
        request, with the extensions of ``profile``."""
        return self.issue(self.dir / f"{name}.csr", self.dir / f"{name}-{profile}.pem", profile)

    def request(self, stem: str, subject: str, algorithm: Sequence[str]) -> tuple[Path, Path]:
        """A key (PKCS#8 PEM, for softhsm2-util) and its certificate request."""
        key, csr = self.dir / f"{stem}.key", self.dir / f"{stem}.csr"
        self.openssl("genpkey", *algorithm, "-out", str(key))
        self.openssl(
            "req",
            "-new",
            "-config",
            str(self.cnf),
            "-key",
            str(key),
            "-subj",
            subject,
            "-out",
            str(csr),
        )
        return key, csr


def ca_subject(cn: str) -> str:
    """A CA subject for openssl: C, O, CN (BR 7.1.2.10.2)."""
    return f"/C=JP/O={ORGANIZATION}/CN={cn}"


ISSUERS = {
    # name: (CN, key algorithm for openssl genpkey, PKCS#11 label)
    "dv-rsa": (
        "acme_ca Integration DV RSA CA 2026",
        ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"),
        "production-dv-rsa",
    ),
    "dv-ecc": (
        "acme_ca Integration DV ECC CA 2026",
        ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
        "production-dv-ecc",
    ),
}


def issuers_toml(
    base: str, certificates: Mapping[str, str] | None = None, keys: Mapping[str, str] | None = None
) -> str:
    """issuers.toml as an operator writes it (format: :mod:`acme_ca.ca.issuers_file`).
    ``certificates`` / ``keys`` replace an issuer's certificate file or key line."""
    certificates, keys = certificates or {}, keys or {}
    lines = ['root = "root.pem"', ""]
    for name, (_, _, label) in ISSUERS.items():
        lines += [
            f"[issuers.{name}]",
            f'certificate = "{certificates.get(name, name + ".pem")}"',
            "chain = []",
            keys.get(name, f'pkcs11_key_label = "{label}"'),
            f'crl_url = "{base}/crl/{name}.crl"',
            f'ocsp_url = "{base}/ocsp/{name}"',
            f'ca_issuers_url = "{base}/issuer/{name}.cer"',
            "",
        ]
    lines += [
        "# Offline root: no key here.",
        "[roots.r1]",
        'certificate = "root.pem"',
        f'crl_url = "{base}/crl/root-r1.crl"',
        "",
    ]
    return "\n".join(lines)


def key_ceremony(directory: Path, pki: Path, token: SoftHsmToken, base: str) -> Ceremony:
    """Root and issuing CAs with openssl; issuing keys into the token, then shredded."""
    directory.mkdir(parents=True)
    pki.mkdir(parents=True)
    (directory / "issued").mkdir()
    (directory / "index.txt").touch()
    ceremony = Ceremony(directory, pki, base)
    ceremony.cnf.write_text(OPENSSL_CNF.format(dir=directory, policy_oid=POLICY_OID, base=base))
    _, root_csr = ceremony.request(
        "root",
        ca_subject("acme_ca Integration Root R1"),
        ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"),
    )
    ceremony.issue(root_csr, pki / "root.pem", "root", selfsign=True)
    for index, (name, (cn, algorithm, label)) in enumerate(ISSUERS.items(), start=1):
        key, csr = ceremony.request(name, ca_subject(cn), algorithm)
        ceremony.issue(csr, pki / f"{name}.pem", "issuing")
        _run(
            [
                "softhsm2-util",
                "--import",
                str(key),
                "--token",
                token.label,
                "--label",
                label,
                "--id",
                f"{index:04x}",
                "--pin",
                token.pin,
            ],
            env={**os.environ, **token.env()},
        )
        key.unlink()  # the HSM holds the only copy
    (pki / "issuers.toml").write_text(issuers_toml(base))
    return ceremony


def weak_key_lists(directory: Path, sizes: Sequence[int]) -> tuple[list[Path], Path]:
    """One openssl-blacklist file per RSA size (Debian's names), and a PEM private key that
    the 2048-bit list names: a key the CA must refuse (BR 6.1.1.3)."""
    directory.mkdir(parents=True)
    weak = rsa.generate_private_key(65537, 2048)
    paths = []
    for size in sizes:
        entries = [secrets.token_hex(10) for _ in range(32)]
        if size == 2048:
            entries.append(openssl_blacklist_fingerprint(weak.public_key().public_numbers().n))
        path = directory / f"blacklist.RSA-{size}"
        path.write_text(
            "# openssl-blacklist format (openssl-vulnkey(1))\n" + "\n".join(sorted(entries)) + "\n"
        )
        paths.append(path)
    weak_pem = directory / "weak-rsa-2048.key"
    weak_pem.write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths, weak_pem


# ------------------------------------------------------------------------------------------
# the perspectives


@dataclass
class Perspective:
    id: str
    rir: str
    latitude: float
    longitude: float
    ns: Namespace
    host_addr: str
    ns_addr: str
    va: CaProcess | None = None

    @property
    def url(self) -> str:
        return f"https://{self.ns_addr}:{REMOTE_VA_PORT}"


def perspectives_toml(perspectives: Sequence[Perspective]) -> str:
    lines = ["[primary]", f"latitude = {PRIMARY_AT[0]}", f"longitude = {PRIMARY_AT[1]}", ""]
    for p in perspectives:
        lines += [
            "[[perspectives]]",
            f'id = "{p.id}"',
            f'rir = "{p.rir}"',
            f'url = "{p.url}"',
            f"latitude = {p.latitude}",
            f"longitude = {p.longitude}",
            "",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# the whole


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class ProductionEnv:
    base: Path
    settings: dict[str, object]
    """The CA's configuration file, as keys and values."""
    secrets_env: dict[str, str]
    """What an operator keeps out of the file: the token PIN, SOFTHSM2_CONF."""
    processes: CaProcesses
    ceremony: Ceremony
    token: SoftHsmToken
    zone: DynamicSignedZone
    hooks: Path
    perspectives: list[Perspective]
    weak_key: Path
    log_list: Path
    serve: CaProcess | None = None
    worker: CaProcess | None = None
    _configs: int = field(default=0, repr=False)

    @property
    def home(self) -> Path:
        return Path(str(self.settings["home"]))

    @property
    def cafile(self) -> Path:
        """The TLS root of the generated HTTPS certificate of the ACME listener."""
        return self.home / "tls" / "ca.pem"

    @property
    def directory_url(self) -> str:
        return f"https://{self.settings['listen']}/directory"

    @property
    def pki(self) -> Path:
        return self.ceremony.pki

    def config_file(self, **changes: object) -> Path:
        """The configuration file with ``changes`` (None removes a key), written anew."""
        values = {**self.settings, **changes}
        self._configs += 1
        path = self.base / f"acme-ca-{self._configs}.toml"
        path.write_text(
            "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items() if v is not None)
        )
        return path

    def variant_pki(
        self,
        label: str,
        *,
        certificates: Mapping[str, Path] | None = None,
        keys: Mapping[str, Path] | None = None,
    ) -> Path:
        """A copy of the hierarchy directory where issuer ``name`` has another certificate
        (``certificates``) or a software key file (``keys``) instead of its HSM key."""
        directory = self.base / f"pki-{label}"
        directory.mkdir()
        for pem in self.pki.glob("*.pem"):
            shutil.copy(pem, directory)
        for path in [*(certificates or {}).values(), *(keys or {}).values()]:
            shutil.copy(path, directory)
        (directory / "issuers.toml").write_text(
            issuers_toml(
                self.ceremony.status_base_url,
                {name: path.name for name, path in (certificates or {}).items()},
                {name: f'key_file = "{path.name}"' for name, path in (keys or {}).items()},
            )
        )
        return directory

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(**self.secrets_env, **extra)

    def start(
        self, command: str, name: str, config: Path | None = None, **extra_env: str
    ) -> CaProcess:
        """``acme-ca --config FILE <command>`` (serve, worker) in the background."""
        config = config or self.config_file()
        base_url = f"https://{self.settings['listen']}" if command == "serve" else None
        return self.processes.start(
            name, "--config", str(config), command, env=self.env(**extra_env), base_url=base_url
        )

    def cli(
        self, *args: str, config: Path | None = None, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        """A one-shot ``acme-ca --config FILE <args>`` (``check``, ...)."""
        config = config or self.config_file()
        return run_cli("--config", str(config), *args, env=self.env(**extra_env), timeout=120)


def _dns_ready(port: int) -> None:
    """The primary's Unbound answers the zone's SOA validated (AD), or SetupError."""
    query = dns.message.make_query(ZONE, "SOA", want_dnssec=True)
    last: object = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
            if reply.flags & dns.flags.AD and reply.answer:
                return
            last = reply
        except (OSError, dns.exception.DNSException) as exc:
            last = exc
        time.sleep(0.1)
    raise SetupError(f"Unbound does not validate {ZONE}: {last}")


def _wait_for_file(what: str, service: Service, path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not path.exists():
        if not service.alive() or time.monotonic() > deadline:
            raise SetupError(f"{what} did not start\n{service.tails()}")
        time.sleep(0.1)


@contextlib.contextmanager
def production_env(base: Path) -> Iterator[ProductionEnv]:
    """Everything above, started; the CA itself is started by the caller
    (:meth:`ProductionEnv.start`).  Stopped in reverse order on exit."""
    unbound = find_unbound() or install_unbound()
    if unbound is None:
        raise SetupError("unbound is not installed and `apt-get install -y unbound` failed")
    logs = base / "logs"
    home = base / "home"
    with contextlib.ExitStack() as stack:
        # The HSM and the key ceremony.
        token = SoftHsmToken.create(base / "softhsm", label=TOKEN_LABEL, activate=False)
        ceremony = key_ceremony(base / "ceremony", home / "pki", token, STATUS_BASE_URL)
        weak_lists, weak_key = weak_key_lists(base / "weak-keys", sorted(DEFAULT_RSA_SIZES))

        # PostgreSQL, a server of its own.
        postgres = EmbeddedPostgres(base / "postgres")
        dsn = postgres.start()
        cluster = postgres.cluster_dir.resolve() if postgres.cluster_dir else None
        if cluster is not None and cluster.is_relative_to(SHARED_CLUSTER_ROOT):
            # as root the cluster lives outside our temporary directory: remove it after
            stack.callback(shutil.rmtree, cluster, ignore_errors=True)
        stack.callback(postgres.stop)

        # The perspectives' namespaces and their links to the main namespace.
        run_id = uuid.uuid4().hex[:6]
        subnet = secrets.randbelow(256)
        perspectives: list[Perspective] = []
        for index, (pid, rir, lat, lon) in enumerate(PERSPECTIVES):
            ns = create_namespace(f"acme-prod-{run_id}-{pid}")
            stack.callback(ns.close)
            host_addr, ns_addr = (
                f"198.18.{subnet}.{4 * index + 1}",
                f"198.18.{subnet}.{4 * index + 2}",
            )
            add_veth(ns, f"apv{run_id}{index}", host_addr, ns_addr, 30)
            perspectives.append(Perspective(pid, rir, lat, lon, ns, host_addr, ns_addr))

        # The signed zone, its server on loopback and on every link, the Unbounds.
        zone = DynamicSignedZone(ZONE, ZONE_TEXT)
        auth = AuthoritativeServer(zone.zones, ["127.0.0.1", *(p.host_addr for p in perspectives)])
        stack.callback(auth.close)
        management = ZoneManagement(zone)
        stack.callback(management.close)
        hooks = write_hooks(base / "hooks", management.url)
        resolver_port = free_dns_port()
        primary_dns = base / "unbound-primary"
        stack.enter_context(
            running_unbound(
                unbound,
                primary_dns,
                unbound_config(
                    primary_dns,
                    resolver_port,
                    [zone.trust_anchor],
                    [(ZONE, f"127.0.0.1@{auth.port}")],
                ),
            )
        )
        _dns_ready(resolver_port)
        for p in perspectives:
            directory = base / f"unbound-{p.id}"
            stack.enter_context(
                running_unbound(
                    unbound,
                    directory,
                    unbound_config(
                        directory, 53, [zone.trust_anchor], [(ZONE, f"{p.host_addr}@{auth.port}")]
                    ),
                    prefix=p.ns.prefix,
                )
            )

        # The remote VAs: production defaults, their own resolver, their own address.
        processes = stack.enter_context(CaProcesses(logs))  # stopped before what they use
        mtls = base / "mtls"
        made = run_cli(
            "mpic-certs",
            "--out",
            str(mtls),
            "--perspectives",
            ",".join(p.id for p in perspectives),
            env=base_env(),
        )
        if made.returncode != 0:
            raise SetupError(describe(made))
        for p in perspectives:
            p.va = processes.start(
                f"remote-va-{p.id}",
                "remote-va",
                "--listen",
                f"{p.ns_addr}:{REMOTE_VA_PORT}",
                "--perspective",
                p.id,
                "--rir",
                p.rir,
                "--dns-resolver",
                "127.0.0.1:53",
                "--tls-cert",
                str(mtls / f"{p.id}.pem"),
                "--tls-key",
                str(mtls / f"{p.id}.key"),
                "--client-ca",
                str(mtls / "ca.pem"),
                env=base_env(ACME_CA_HOME=str(base / f"remote-{p.id}")),
                prefix=p.ns.prefix,
            )
        for p in perspectives:
            assert p.va is not None
            p.va.wait_event("remote_va.ready", timeout=READY_TIMEOUT)
        (base / "perspectives.toml").write_text(perspectives_toml(perspectives))

        # The CT logs: a process of their own with a home of their own (a log operator
        # holds a copy of the roots it accepts), reached through the log list they write.
        ct_home = base / "ct-logs"
        shutil.copytree(ceremony.pki, ct_home / "pki")
        log_list = ct_home / "ct" / "log_list.json"
        ct_logs = start_service(
            stack,
            "ct-logs",
            [sys.executable, "-m", "integration.bench.ctlogs", "--home", str(ct_home)],
            env=base_env(),
            log_dir=logs,
        )
        _wait_for_file("the CT logs", ct_logs, log_list)

        settings: dict[str, object] = {
            "home": str(home),
            "database_url": dsn,
            "listen": f"127.0.0.1:{free_port()}",
            "status_listen": f"127.0.0.1:{free_port()}",
            "terms_of_service": TERMS_OF_SERVICE,
            "status_base_url": STATUS_BASE_URL,
            "policy_oid": POLICY_OID,
            "pki_dir": str(ceremony.pki),
            "pkcs11_module": token.module,
            "pkcs11_token_label": token.label,
            "dns_resolver": f"127.0.0.1:{resolver_port}",
            "dnssec": "require",
            "http01_port": 80,
            "allow_loopback_validation": False,
            "mpic_perspectives_file": str(base / "perspectives.toml"),
            "mpic_client_cert": str(mtls / "primary.pem"),
            "mpic_client_key": str(mtls / "primary.key"),
            "mpic_server_ca": str(mtls / "ca.pem"),
            # The tests read all five perspectives' results (5/5); on a loaded runner the
            # fifth reply can come later than the default 250 ms after the quorum.
            "mpic_grace_milliseconds": 5000,
            "ct_log_list": str(log_list),
            "ct_deadline_seconds": 3600,
            "backdate_seconds": 60,
            "weak_key_blocklists": [str(p) for p in weak_lists],
            "serve_worker": False,
            "challenge_wait_seconds": 5,
            "retry_after_seconds": 1,
        }
        yield ProductionEnv(
            base=base,
            settings=settings,
            secrets_env={"ACME_CA_PKCS11_PIN": token.pin, **token.env()},
            processes=processes,
            ceremony=ceremony,
            token=token,
            zone=zone,
            hooks=hooks,
            perspectives=perspectives,
            weak_key=weak_key,
            log_list=log_list,
        )
