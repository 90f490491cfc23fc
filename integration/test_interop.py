"""Interop: real ACME clients against a freshly started ``acme-ca serve --test``.

Clients: certbot (PyPI), lego 4.9.1, dehydrated 0.7.0 and uacme 1.7.4 (Debian). They run
one after another against ONE test-mode server per module (started on first use, on free
ports), every case on names of its own; EAB cases use a second server that requires External
Account Binding, and lego runs every case again against the same pair of servers with
``PEBBLE_WFE_NONCEREJECT=20`` (label ``lego-noncereject20``). Cases per client:

* issuance: http-01 with RSA 2048 and three names in one certificate; http-01 with ECDSA
  P-256; dns-01 with RSA 2048 for a name and its wildcard; dns-01 with ECDSA P-256 for a
  wildcard alone; and for lego, tls-alpn-01 (``--tls``) with ECDSA P-256;
* profiles (draft-ietf-acme-profiles): certbot ``--required-profile`` for each shipped DV
  profile (``dv``, ``tlsserver``, ``shortlived``) and ``--preferred-profile`` (a known one, and
  an unknown one falling back to the default); lego, which sends no profile, gets ``dv``;
* renewal (a forced renewal of the http-01 ECDSA certificate: a new serial), revocation (of
  that renewed certificate: the CA logs ``certificate.revoked`` for its serial), account key
  rollover where the client has it (the old key finds no account, the new key the same
  one), and EAB registration with a key from ``acme-ca eab create`` (the key ends up bound;
  lego can register only while ordering, so it also gets a certificate).

http-01: certbot ``--standalone`` and lego ``--http`` bind the CA's validation port
(``--http01-port``) themselves on 127.0.0.2, where ``/add-a`` points their names;
dehydrated and uacme answer through the challenge server's own listener on 127.0.0.1 (the
same port), fed by hook scripts calling ``/add-http01``. tls-alpn-01: lego ``--tls`` binds
the CA's tls-alpn-01 port (``--tlsalpn01-port``, a free one; the challenge server's own
tls-alpn-01 listener is off) on 127.0.0.2 itself. dns-01: every client's hook
mechanism calls ``/set-txt`` and ``/clear-txt`` on the management API (certbot
``--manual-auth-hook``/``--manual-cleanup-hook``, lego ``--dns exec``, dehydrated and uacme
hook scripts): bash + curl, written into the module's temporary directory.

Every certificate is verified with ``openssl verify`` against the root fetched from
``/roots/0`` on the management API and linted with pkilint (no ERROR or FATAL).

Skipped, with the reason in the skip: account key rollover for certbot (neither certbot nor
its ``acme`` library implements keyChange), lego 4.9.1 (no such command) and dehydrated
0.7.0 (no keyChange). uacme needs the test CA in its trust store: libcurl-gnutls reads only
the system bundle, so uacme runs in a private mount namespace where the CA's ``tls/ca.pem``
is bind-mounted over ``/etc/ssl/certs`` (its cases skip if ``unshare`` is not permitted).

Time: uacme 1.7.4 ignores Retry-After and sleeps 5 s whenever a poll finds ``processing``
(every authorization and every finalize); dehydrated sleeps 1 s and 2 s. That is why the
matrix uses three names once, and why renewal and revocation reuse earlier certificates.
Set ``INTEROP_DEBUG=1`` to print every client command with its duration and stderr.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID

from acme_ca.embedded_pg import EmbeddedPostgres
from integration.clients import (
    CERTBOT,
    blocking_findings,
    certbot_dirs,
    openssl_verify,
    write_hooks,
)
from integration.processes import STOP_TIMEOUT, CaProcesses, base_env, describe, run_cli, tail
from integration.testmode_server import QuietProcesses, RunningTestCa, start_test_mode, write_pem
from tests.fixtures import TEMPLATE_DB
from tests.support.jws import JwsClient

pytestmark = pytest.mark.integration

EMAIL = "interop@example.test"
STANDALONE_ADDRESS = "127.0.0.2"
CLIENT_TIMEOUT = 120
LEGO = shutil.which("lego")
DEHYDRATED = shutil.which("dehydrated")
UACME = shutil.which("uacme")

#: Server kinds: the environment each test-mode server gets on top of the defaults.
SERVER_ENV = {
    "main": {},
    "nonce20": {"PEBBLE_WFE_NONCEREJECT": "20"},
    "eab": {"ACME_CA_EXTERNAL_ACCOUNT_REQUIRED": "true"},
    "eab-nonce20": {"ACME_CA_EXTERNAL_ACCOUNT_REQUIRED": "true", "PEBBLE_WFE_NONCEREJECT": "20"},
}
#: Client label -> (client, server kind, EAB server kind).
CLIENTS = {
    "certbot": ("certbot", "main", "eab"),
    "lego": ("lego", "main", "eab"),
    "lego-noncereject20": ("lego", "nonce20", "eab-nonce20"),
    "dehydrated": ("dehydrated", "main", "eab"),
    "uacme": ("uacme", "main", "eab"),
}
#: (challenge, key, which names): the shapes of names_for().
ISSUANCE = [
    pytest.param("http-01", "rsa", "3names", id="http01-rsa2048-3names"),
    pytest.param("http-01", "ecdsa", "1name", id="http01-ecdsa-p256"),
    pytest.param("dns-01", "rsa", "name+wildcard", id="dns01-rsa2048-name-and-wildcard"),
    pytest.param("dns-01", "ecdsa", "wildcard", id="dns01-ecdsa-p256-wildcard"),
]
ROLLOVER_UNSUPPORTED = {
    "certbot": "certbot has no account key rollover: neither certbot nor its acme library "
    "implements keyChange (RFC 8555 §7.3.5)",
    "lego": "lego 4.9.1 has no account key rollover (commands: run, renew, revoke, list)",
    "dehydrated": "dehydrated 0.7.0 implements no keyChange (RFC 8555 §7.3.5)",
}


# ------------------------------------------------------------------------------------------
# hook scripts: bash + curl against the management API, as a Pebble harness has them


# ------------------------------------------------------------------------------------------
# servers: one test-mode server per kind and module, started when first needed


@dataclass
class InteropServer:
    kind: str
    ca: RunningTestCa
    root: Path
    hooks: Path
    uacme_certs: Path
    """A directory holding only ``ca-certificates.crt`` = the CA's TLS root, for uacme."""

    def add_standalone_names(self, names: list[str]) -> None:
        """Point the names at 127.0.0.2, where certbot/lego bind the validation port."""
        for name in names:
            self.ca.mgmt("/add-a", {"host": name, "addresses": [STANDALONE_ADDRESS]})

    def eab_key(self, comment: str) -> tuple[str, str]:
        """``acme-ca eab create`` on the server's own database and home."""
        run = run_cli("eab", "create", "--comment", comment, env=self.ca.env)
        assert run.returncode == 0, describe(run)
        kid = re.search(r"^kid: (\S+)$", run.stdout, re.MULTILINE)
        key = re.search(r"^hmac_key: (\S+)$", run.stdout, re.MULTILINE)
        assert kid and key, run.stdout
        return kid[1], key[1]

    def eab_bound(self, kid: str) -> bool:
        run = run_cli("eab", "list", env=self.ca.env)
        assert run.returncode == 0, describe(run)
        return any(
            line.startswith(kid + "\t") and "\tbound to account " in line
            for line in run.stdout.splitlines()
        )

    def issued_serials(self) -> list[str]:
        return [e["serial"] for e in self.ca.proc.events("certificate.issued")]

    def wait_revoked(self, serial: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("serial") == serial for e in self.ca.proc.events("certificate.revoked")):
                return
            time.sleep(0.2)
        pytest.fail(f"no certificate.revoked event for {serial}\n{self.ca.proc.tails()}")


class Servers:
    def __init__(self, base: Path, processes: CaProcesses, postgres: EmbeddedPostgres) -> None:
        self._base = base
        self._processes = processes
        self._postgres = postgres
        self._running: dict[str, InteropServer] = {}

    def get(self, kind: str) -> InteropServer:
        if kind not in self._running:
            dsn = self._postgres.create_database(
                f"interop_{kind.replace('-', '_')}_{uuid.uuid4().hex[:8]}", template=TEMPLATE_DB
            )
            ca = start_test_mode(
                self._processes,
                f"serve-{kind}",
                self._base / f"home-{kind}",
                dsn=dsn,
                # Polling clients honour Retry-After: a short one keeps the suite quick.
                env={"ACME_CA_RETRY_AFTER_SECONDS": "1", **SERVER_ENV[kind]},
                # tls-alpn-01 is answered by lego --tls itself, on its own port (a free one).
                challsrv_tlsalpn01="off",
            )
            print(f"interop server {kind}: started in {ca.startup_seconds:.2f} s")
            uacme_certs = self._base / f"uacme-certs-{kind}"
            uacme_certs.mkdir()
            shutil.copy(ca.cafile, uacme_certs / "ca-certificates.crt")
            self._running[kind] = InteropServer(
                kind=kind,
                ca=ca,
                root=ca.root_pem(self._base / "roots"),
                hooks=write_hooks(self._base / f"hooks-{kind}", ca.management_url),
                uacme_certs=uacme_certs,
            )
        return self._running[kind]

    def stop(self) -> None:
        """SIGTERM to every server at once (once: a second one after the server has put
        back the default handlers would kill it), then wait for each to exit cleanly."""
        running = [server.ca.proc for server in self._running.values()]
        for proc in running:
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                code = proc.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{proc.name} ignored SIGTERM\n{proc.tails()}")
            assert code == 0, f"{proc.name}: exit {code}\n{proc.tails()}"


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: EmbeddedPostgres,
    template_dsn: str,
    request: pytest.FixtureRequest,
) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("interop")
    with QuietProcesses(base / "logs", request.session) as processes:
        registry = Servers(base, processes, postgres)
        try:
            yield registry
        finally:
            registry.stop()


# ------------------------------------------------------------------------------------------
# what every issued certificate must pass


@dataclass
class Issued:
    names: list[str]
    key_type: str
    leaf: Path
    chain: Path

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.leaf.read_bytes())

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")


def snapshot(directory: Path, leaf_file: Path, chain_file: Path | None = None) -> tuple[Path, Path]:
    """Copy what a client wrote (often symlinks it moves on renewal) into ``directory``:
    ``leaf.pem`` and ``chain.pem``; without ``chain_file`` the leaf file is a bundle."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = x509.load_pem_x509_certificates(leaf_file.read_bytes())
    chain = (
        certs[1:]
        if chain_file is None
        else x509.load_pem_x509_certificates(chain_file.read_bytes())
    )
    assert chain, f"no issuer certificate from the client in {leaf_file} / {chain_file}"
    return write_pem(directory / "leaf.pem", certs[:1]), write_pem(directory / "chain.pem", chain)


def check_issued(server: InteropServer, issued: Issued, *, lint: bool = True) -> None:
    """openssl verify against /roots/0, pkilint clean, the names and the key asked for."""
    openssl_verify(server.root, issued.chain, issued.leaf)
    if lint:
        blocking = blocking_findings(issued.leaf)
        assert not blocking, blocking
    cert = issued.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(issued.names)
    key = cert.public_key()
    if issued.key_type == "rsa":
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048, key
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1", key
    assert issued.serial in server.issued_serials()


# ------------------------------------------------------------------------------------------
# the clients


class Client:
    """One client with a working directory (its own account) for one test case."""

    name = ""

    def __init__(self, server: InteropServer, workdir: Path) -> None:
        self.server = server
        self.ca = server.ca
        self.work = workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self._snapshots = 0

    # subprocesses -----------------------------------------------------------------------
    def run(
        self, argv: list[str], *, env: dict[str, str] | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        run = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=base_env(**(env or {})),
            cwd=self.work,
            timeout=CLIENT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if os.environ.get("INTEROP_DEBUG"):
            print(f"--- {time.monotonic() - started:.2f} s: {' '.join(argv)}\n{run.stderr}")
        if ok:
            assert run.returncode == 0, self.failure(argv, run)
        return run

    def failure(self, argv: list[str], run: subprocess.CompletedProcess[str]) -> str:
        return "\n".join(
            [f"$ {' '.join(argv)}", describe(run), self.client_log(), self.ca.proc.tails()]
        )

    def client_log(self) -> str:
        return ""

    def next_snapshot(self) -> Path:
        self._snapshots += 1
        return self.work / f"issued-{self._snapshots}"

    # operations -------------------------------------------------------------------------
    def issue(
        self,
        names: list[str],
        key_type: str,
        challenge: str,
        *,
        eab: tuple[str, str] | None = None,
    ) -> Issued:
        raise NotImplementedError

    def renew(self, issued: Issued, challenge: str) -> Issued:
        raise NotImplementedError

    def revoke(self, issued: Issued) -> None:
        raise NotImplementedError

    def register(self, eab: tuple[str, str] | None = None) -> bool:
        """Create the account only; False if the client registers only while ordering."""
        raise NotImplementedError

    def rollover_key(self) -> Path:
        """The account key file, for clients that support rollover."""
        raise NotImplementedError

    def rollover(self) -> tuple[Path, Path]:
        """Change the account key; returns (old key, new key) PEM files."""
        raise NotImplementedError


class Certbot(Client):
    name = "certbot"

    def _argv(self, *args: str) -> list[str]:
        return [
            CERTBOT,
            *args,
            "--server",
            self.ca.directory_url,
            "-n",
            *certbot_dirs(self.work),
        ]

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self._argv(*args), env={"REQUESTS_CA_BUNDLE": str(self.ca.cafile)})

    def client_log(self) -> str:
        return "--- letsencrypt.log ---\n" + tail(self.work / "logs" / "letsencrypt.log", 60)

    def _snapshot(self, names: list[str], key_type: str) -> Issued:
        live = self.work / "config" / "live" / cert_name(names)
        leaf, chain = snapshot(self.next_snapshot(), live / "cert.pem", live / "chain.pem")
        return Issued(names, key_type, leaf, chain)

    def issue(
        self,
        names: list[str],
        key_type: str,
        challenge: str,
        *,
        eab: tuple[str, str] | None = None,
        profile: tuple[str, str] | None = None,
    ) -> Issued:
        """``profile``: ("required" or "preferred", name): certbot's --required-profile or
        --preferred-profile (certbot 4+, draft-ietf-acme-profiles)."""
        if challenge == "http-01":
            self.server.add_standalone_names(names)
            how = [
                "--standalone",
                "--http-01-address",
                STANDALONE_ADDRESS,
                "--http-01-port",
                str(self.ca.http01_port),
            ]
        else:
            how = [
                "--manual",
                "--preferred-challenges",
                "dns",
                "--manual-auth-hook",
                str(self.server.hooks / "certbot-dns01-auth.sh"),
                "--manual-cleanup-hook",
                str(self.server.hooks / "certbot-dns01-cleanup.sh"),
            ]
        keys = (
            ["--key-type", "rsa", "--rsa-key-size", "2048"]
            if key_type == "rsa"
            else ["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"]
        )
        binding = [f"--eab-kid={eab[0]}", f"--eab-hmac-key={eab[1]}"] if eab else []
        choice = [f"--{profile[0]}-profile", profile[1]] if profile else []
        self._run(
            "certonly",
            *how,
            *keys,
            *binding,
            *choice,
            "--agree-tos",
            "-m",
            EMAIL,
            "--cert-name",
            cert_name(names),
            *[arg for name in names for arg in ("-d", name)],
        )
        return self._snapshot(names, key_type)

    def register(self, eab: tuple[str, str] | None = None) -> bool:
        binding = [f"--eab-kid={eab[0]}", f"--eab-hmac-key={eab[1]}"] if eab else []
        self._run("register", "--agree-tos", "-m", EMAIL, *binding)
        return True

    def renew(self, issued: Issued, challenge: str) -> Issued:
        # The renewal configuration remembers the standalone address and port.
        self._run(
            "renew",
            "--cert-name",
            cert_name(issued.names),
            "--force-renewal",
            "--no-random-sleep-on-renew",
        )
        return self._snapshot(issued.names, issued.key_type)

    def revoke(self, issued: Issued) -> None:
        self._run(
            "revoke",
            "--cert-path",
            str(issued.leaf),
            "--reason",
            "superseded",
            "--no-delete-after-revoke",
        )


class Lego(Client):
    name = "lego"

    def _argv(
        self, names: list[str], key_type: str, challenge: str, eab: tuple[str, str] | None
    ) -> list[str]:
        assert LEGO is not None
        argv = [
            LEGO,
            "--server",
            self.ca.directory_url,
            "--accept-tos",
            "--email",
            EMAIL,
            "--path",
            str(self.work / "lego"),
            "--key-type",
            "rsa2048" if key_type == "rsa" else "ec256",
            *[arg for name in names for arg in ("-d", name)],
        ]
        if challenge == "http-01":
            argv += ["--http", "--http.port", f"{STANDALONE_ADDRESS}:{self.ca.http01_port}"]
        elif challenge == "tls-alpn-01":
            argv += ["--tls", "--tls.port", f"{STANDALONE_ADDRESS}:{self.ca.tlsalpn01_port}"]
        else:
            argv += ["--dns", "exec", "--dns.resolvers", self.ca.resolver, "--dns.disable-cp"]
        if eab:
            argv += ["--eab", f"--kid={eab[0]}", f"--hmac={eab[1]}"]
        return argv

    def _env(self) -> dict[str, str]:
        return {
            "LEGO_CA_CERTIFICATES": str(self.ca.cafile),
            "EXEC_PATH": str(self.server.hooks / "lego-exec.sh"),
            # The exec provider waits 60 s between names of one order unless told otherwise.
            "EXEC_SEQUENCE_INTERVAL": "1",
            "EXEC_POLLING_INTERVAL": "1",
            "EXEC_PROPAGATION_TIMEOUT": "30",
        }

    def _snapshot(self, names: list[str], key_type: str) -> Issued:
        certificates = self.work / "lego" / "certificates"
        leaf, chain = snapshot(
            self.next_snapshot(),
            certificates / f"{names[0].replace('*', '_')}.crt",
            certificates / f"{names[0].replace('*', '_')}.issuer.crt",
        )
        return Issued(names, key_type, leaf, chain)

    def issue(
        self, names: list[str], key_type: str, challenge: str, *, eab: tuple[str, str] | None = None
    ) -> Issued:
        if challenge in ("http-01", "tls-alpn-01"):
            self.server.add_standalone_names(names)
        self.run([*self._argv(names, key_type, challenge, eab), "run"], env=self._env())
        return self._snapshot(names, key_type)

    def register(self, eab: tuple[str, str] | None = None) -> bool:
        return False  # lego registers inside `run`, before its first order

    def renew(self, issued: Issued, challenge: str) -> Issued:
        argv = self._argv(issued.names, issued.key_type, challenge, None)
        # lego renews only within --days of notAfter: any lifetime (Pebble's last 5 years).
        self.run([*argv, "renew", "--days", "99999", "--no-random-sleep"], env=self._env())
        return self._snapshot(issued.names, issued.key_type)

    def revoke(self, issued: Issued) -> None:
        argv = self._argv(issued.names, issued.key_type, "http-01", None)
        self.run([*argv, "revoke", "--reason", "4"], env=self._env())


class Dehydrated(Client):
    name = "dehydrated"

    def _config(self, eab: tuple[str, str] | None) -> Path:
        config = self.work / "config"
        lines = [
            f'CA="{self.ca.directory_url}"',
            f'BASEDIR="{self.work}"',
            f'WELLKNOWN="{self.work / "wellknown"}"',
            f'CONTACT_EMAIL="{EMAIL}"',
            f'CURL_OPTS="--cacert {self.ca.cafile}"',
            "KEYSIZE=2048",
        ]
        if eab:
            lines += [f'EAB_KID="{eab[0]}"', f'EAB_HMAC_KEY="{eab[1]}"']
        config.write_text("\n".join(lines) + "\n")
        (self.work / "wellknown").mkdir(exist_ok=True)
        return config

    def _snapshot(self, names: list[str], key_type: str) -> Issued:
        live = self.work / "certs" / cert_name(names)
        leaf, chain = snapshot(self.next_snapshot(), live / "cert.pem", live / "chain.pem")
        return Issued(names, key_type, leaf, chain)

    def _sign(self, names: list[str], key_type: str, challenge: str, *extra: str) -> Issued:
        hook = "dehydrated-http01.sh" if challenge == "http-01" else "dehydrated-dns01.sh"
        assert DEHYDRATED is not None
        self.run(
            [
                DEHYDRATED,
                "-f",
                str(self.work / "config"),
                "-c",
                *[arg for name in names for arg in ("-d", name)],
                "-t",
                challenge,
                "-k",
                str(self.server.hooks / hook),
                "-a",
                "rsa" if key_type == "rsa" else "prime256v1",
                "--alias",  # required when the first name is a wildcard
                cert_name(names),
                *extra,
            ]
        )
        return self._snapshot(names, key_type)

    def issue(
        self, names: list[str], key_type: str, challenge: str, *, eab: tuple[str, str] | None = None
    ) -> Issued:
        if not (self.work / "config").exists():
            self.register(eab)
        return self._sign(names, key_type, challenge)

    def register(self, eab: tuple[str, str] | None = None) -> bool:
        assert DEHYDRATED is not None
        config = self._config(eab)
        self.run([DEHYDRATED, "-f", str(config), "--register", "--accept-terms"])
        return True

    def renew(self, issued: Issued, challenge: str) -> Issued:
        return self._sign(issued.names, issued.key_type, challenge, "--force")

    def revoke(self, issued: Issued) -> None:
        # dehydrated renames the file it revoked to *-revoked: give it its own.
        cert = self.work / "certs" / cert_name(issued.names) / "cert.pem"
        assert DEHYDRATED is not None
        self.run([DEHYDRATED, "-f", str(self.work / "config"), "--revoke", str(cert)])


def _uacme_trust_available(certs: Path) -> bool:
    probe = subprocess.run(
        [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/ssl/certs && test -s /etc/ssl/certs/ca-certificates.crt',
            str(certs),
        ],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return probe.returncode == 0


class Uacme(Client):
    name = "uacme"

    def _argv(self, *args: str) -> list[str]:
        """uacme in a mount namespace of its own where /etc/ssl/certs holds only the CA's
        TLS root: libcurl-gnutls has no CA-bundle variable, and the host stays untouched."""
        assert UACME is not None
        if not _uacme_trust_available(self.server.uacme_certs):
            pytest.skip(
                "uacme reads only the system CA store; trusting the test CA needs "
                "`unshare --mount` (root) here, or the CA in the system store"
            )
        return [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/ssl/certs && exec "$@"',
            str(self.server.uacme_certs),
            UACME,
            "-v",
            "-o",  # no OCSP lookups: the AIA names the documentation host of status_base_url
            "-c",
            str(self.work / "conf"),
            "-a",
            self.ca.directory_url,
            *args,
        ]

    def _sign(self, names: list[str], key_type: str, challenge: str, *extra: str) -> Issued:
        hook = "uacme-http01.sh" if challenge == "http-01" else "uacme-dns01.sh"
        self.run(
            self._argv(
                "-h",
                str(self.server.hooks / hook),
                "-t",
                "RSA" if key_type == "rsa" else "EC",
                "-b",
                "2048" if key_type == "rsa" else "256",
                *extra,
                "issue",
                *names,
            )
        )
        leaf, chain = snapshot(
            self.next_snapshot(), self.work / "conf" / cert_name(names) / "cert.pem"
        )
        return Issued(names, key_type, leaf, chain)

    def issue(
        self, names: list[str], key_type: str, challenge: str, *, eab: tuple[str, str] | None = None
    ) -> Issued:
        if not (self.work / "conf" / "private" / "key.pem").exists():
            self.register(eab)
        return self._sign(names, key_type, challenge)

    def register(self, eab: tuple[str, str] | None = None) -> bool:
        binding = ["-e", f"{eab[0]}:{eab[1]}"] if eab else []
        self.run(self._argv("-y", "-t", "EC", *binding, "new", EMAIL))
        return True

    def renew(self, issued: Issued, challenge: str) -> Issued:
        return self._sign(issued.names, issued.key_type, challenge, "-f")

    def revoke(self, issued: Issued) -> None:
        # uacme renames the file it revokes: give it the client's own copy.
        self.run(
            self._argv(
                "-r", "4", "revoke", str(self.work / "conf" / cert_name(issued.names) / "cert.pem")
            )
        )

    def rollover_key(self) -> Path:
        return self.work / "conf" / "private" / "key.pem"

    def rollover(self) -> tuple[Path, Path]:
        private = self.work / "conf" / "private"
        old = private / "key.pem"
        old_copy = self.work / "old-account-key.pem"
        shutil.copy(old, old_copy)
        self.run(self._argv("newkey"))
        # The client goes on with the new key: it finds its account and updates it.
        self.run(self._argv("update", "rolled-over@example.test"))
        return old_copy, private / "key.pem"


CLIENT_CLASSES: dict[str, type[Client]] = {
    "certbot": Certbot,
    "lego": Lego,
    "dehydrated": Dehydrated,
    "uacme": Uacme,
}
BINARIES = {"certbot": CERTBOT, "lego": LEGO, "dehydrated": DEHYDRATED, "uacme": UACME}


def make_client(label: str, servers: Servers, tmp_path: Path, *, eab: bool = False) -> Client:
    client, kind, eab_kind = CLIENTS[label]
    binary = BINARIES[client]
    if binary is None or not Path(binary).exists():
        pytest.skip(f"{client} is not installed (scripts/bootstrap.sh test installs it)")
    return CLIENT_CLASSES[client](servers.get(eab_kind if eab else kind), tmp_path / label)


def domain(case: str, label: str) -> str:
    return f"{case}.{label}.example.com"


def names_for(shape: str, base: str) -> list[str]:
    return {
        "1name": [base],
        "3names": [base, f"www.{base}", f"api.{base}"],
        "name+wildcard": [base, f"*.{base}"],
        "wildcard": [f"*.{base}"],
    }[shape]


def cert_name(names: list[str]) -> str:
    """The name clients file a certificate under: the first name, without ``*.``."""
    return names[0].removeprefix("*.")


# ------------------------------------------------------------------------------------------
# the matrix


@pytest.mark.parametrize(("challenge", "key_type", "shape"), ISSUANCE)
@pytest.mark.parametrize("label", list(CLIENTS))
def test_issuance(
    label: str, challenge: str, key_type: str, shape: str, servers: Servers, tmp_path: Path
) -> None:
    client = make_client(label, servers, tmp_path)
    case = f"{challenge.replace('-', '')}-{key_type}"
    names = names_for(shape, domain(case, label))
    issued = client.issue(names, key_type, challenge)
    check_issued(client.server, issued)
    if shape == "1name":
        ISSUED[label] = (client, issued)
    print(f"interop {label} {case} ({', '.join(names)}): ok")


def test_alpn_lego_tls_issues_end_to_end(servers: Servers, tmp_path: Path) -> None:
    """ALPN-1..5 with a real client: ``lego --tls`` answers tls-alpn-01 itself on the CA's
    validation port (the challenge server's own listener off), the CA validates it and
    issues (RFC 8737, BR 3.2.2.4.20)."""
    client = make_client("lego", servers, tmp_path)
    names = [domain("tlsalpn01-ecdsa", "lego")]
    issued = client.issue(names, "ecdsa", "tls-alpn-01")
    check_issued(client.server, issued)
    valid = [
        e
        for e in client.server.ca.proc.events("challenge.valid")
        if e.get("identifier") == names[0]
    ]
    assert [e["type"] for e in valid] == ["tls-alpn-01"], valid


def order_profile(server: InteropServer, names: list[str]) -> str:
    """The profile of the (last) order for exactly ``names``, from the CA's order.created."""
    wanted = sorted(names)
    created = [
        e
        for e in server.ca.proc.events("order.created")
        if sorted(e.get("identifiers") or []) == wanted
    ]
    assert created, f"no order.created for {names}"
    profile: str = created[-1]["profile"]
    return profile


#: PROF-1 with certbot 4+: (flag, profile asked for, profile the CA must issue under).
CERTBOT_PROFILES = [
    pytest.param("required", "dv", "dv", id="required-dv"),
    pytest.param("required", "tlsserver", "tlsserver", id="required-tlsserver"),
    pytest.param("required", "shortlived", "shortlived", id="required-shortlived"),
    pytest.param("preferred", "tlsserver", "tlsserver", id="preferred-tlsserver"),
    pytest.param("preferred", "classic", "dv", id="preferred-unknown-falls-back-to-dv"),
]


@pytest.mark.parametrize(("flag", "asked", "issued_as"), CERTBOT_PROFILES)
def test_prof_1_certbot_profiles(
    flag: str, asked: str, issued_as: str, servers: Servers, tmp_path: Path
) -> None:
    client = make_client("certbot", servers, tmp_path)
    assert isinstance(client, Certbot)
    names = [domain(f"profile-{flag}-{asked}", "certbot")]
    issued = client.issue(names, "ecdsa", "http-01", profile=(flag, asked))
    check_issued(client.server, issued)  # pkilint DV-FINAL-CERTIFICATE: no ERROR or FATAL
    assert order_profile(client.server, names) == issued_as
    cert = issued.certificate
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if issued_as == "tlsserver":
        assert (lifetime, cn) == (timedelta(days=45), [])
    elif issued_as == "shortlived":
        assert lifetime == timedelta(hours=160) and [a.value for a in cn] == names
    else:
        assert lifetime > timedelta(days=45) and [a.value for a in cn] == names
    print(f"interop certbot --{flag}-profile {asked}: issued as {issued_as}: ok")


def test_prof_1_lego_without_profile_gets_the_default(servers: Servers, tmp_path: Path) -> None:
    client = make_client("lego", servers, tmp_path)
    names = [domain("profile-default", "lego")]
    issued = client.issue(names, "ecdsa", "http-01")
    check_issued(client.server, issued)
    assert order_profile(client.server, names) == "dv"
    print("interop lego without profile: issued as dv: ok")


#: label -> (client, certificate): test_renewal renews the http-01 ECDSA certificate of
#: test_issuance and test_revocation revokes what test_renewal renewed, which saves every
#: client two issuances (uacme sleeps 5 s per processing poll). Run on their own, they
#: issue what they need.
ISSUED: dict[str, tuple[Client, Issued]] = {}
RENEWED: dict[str, tuple[Client, Issued]] = {}


@pytest.mark.parametrize("label", list(CLIENTS))
def test_renewal(label: str, servers: Servers, tmp_path: Path) -> None:
    if label in ISSUED:
        client, first = ISSUED.pop(label)
    else:
        client = make_client(label, servers, tmp_path)
        first = client.issue([domain("renewal", label)], "ecdsa", "http-01")
        check_issued(client.server, first, lint=False)
    renewed = client.renew(first, "http-01")
    check_issued(client.server, renewed)
    assert renewed.serial != first.serial, "renewal returned the old certificate"
    RENEWED[label] = (client, renewed)
    print(f"interop {label} renewal: ok")


@pytest.mark.parametrize("label", list(CLIENTS))
def test_revocation(label: str, servers: Servers, tmp_path: Path) -> None:
    if label in RENEWED:
        client, issued = RENEWED.pop(label)
    else:  # run on its own
        client = make_client(label, servers, tmp_path)
        issued = client.issue([domain("revocation", label)], "ecdsa", "http-01")
        check_issued(client.server, issued, lint=False)
    serial = issued.serial
    client.revoke(issued)
    client.server.wait_revoked(serial)
    print(f"interop {label} revocation: ok")


async def _account_lookup(
    ca: RunningTestCa, key_file: Path, payload: dict[str, object] | None = None
) -> tuple[int, str]:
    """newAccount (by default onlyReturnExisting) signed by the key in ``key_file``: (status,
    Location or problem type). Retries badNonce, as any client must."""
    # openssl re-encodes what GnuTLS wrote: uacme's EC keys may carry a short private
    # scalar, which cryptography refuses as it stands.
    pkcs8 = subprocess.run(
        ["openssl", "pkey", "-in", str(key_file)], capture_output=True, check=True, timeout=30
    ).stdout
    key = load_pem_private_key(pkcs8, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    context = ssl.create_default_context(cafile=str(ca.cafile))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        client = JwsClient(session, ca.directory_url, key)
        await client.load_directory()
        for _ in range(10):
            reply = await client.post(
                client.directory["newAccount"],
                payload or {"onlyReturnExisting": True},
                use_jwk=True,
            )
            if reply.status == 400 and reply.body.get("type", "").endswith(":badNonce"):
                continue
            if reply.status in (200, 201):
                return reply.status, reply.headers["Location"]
            return reply.status, reply.body.get("type", "")
    pytest.fail("badNonce ten times in a row")


@pytest.mark.parametrize("label", list(CLIENTS))
def test_account_key_rollover(label: str, servers: Servers, tmp_path: Path) -> None:
    client_name = CLIENTS[label][0]
    if client_name in ROLLOVER_UNSUPPORTED:
        pytest.skip(ROLLOVER_UNSUPPORTED[client_name])
    client = make_client(label, servers, tmp_path)
    assert client.register()
    status_before, location_before = asyncio.run(_account_lookup(client.ca, client.rollover_key()))
    assert status_before == 200, location_before
    old_key, new_key = client.rollover()
    assert client.server.ca.proc.events("account.key_changed"), client.ca.proc.tails()
    status_old, old_answer = asyncio.run(_account_lookup(client.ca, old_key))
    assert (status_old, old_answer) == (400, "urn:ietf:params:acme:error:accountDoesNotExist")
    status_new, location = asyncio.run(_account_lookup(client.ca, new_key))
    assert (status_new, location) == (200, location_before), "not the same account"
    print(f"interop {label} account-key-rollover: ok")


@pytest.mark.parametrize("label", list(CLIENTS))
def test_eab_registration(label: str, servers: Servers, tmp_path: Path) -> None:
    client = make_client(label, servers, tmp_path, eab=True)
    kid, hmac_key = client.server.eab_key(f"interop {label}")
    assert not client.server.eab_bound(kid)
    if not client.register((kid, hmac_key)):
        issued = client.issue([domain("eab", label)], "ecdsa", "http-01", eab=(kid, hmac_key))
        check_issued(client.server, issued)
    assert client.server.eab_bound(kid), "the EAB key is not bound to the new account"
    print(f"interop {label} eab: ok")


def test_eab_required_refuses_registration_without_binding(
    servers: Servers, tmp_path: Path
) -> None:
    client = make_client("certbot", servers, tmp_path, eab=True)
    assert isinstance(client, Certbot)
    run = client.run(
        client._argv("register", "--agree-tos", "-m", EMAIL),
        env={"REQUESTS_CA_BUNDLE": str(client.ca.cafile)},
        ok=False,
    )
    assert run.returncode != 0, describe(run)
    assert "external account" in (run.stdout + run.stderr).lower(), describe(run)
    # Not only certbot reading meta.externalAccountRequired: the server refuses too.
    key = tmp_path / "account-key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    status, problem = asyncio.run(_account_lookup(client.ca, key, {"termsOfServiceAgreed": True}))
    assert problem == "urn:ietf:params:acme:error:externalAccountRequired", (status, problem)
    assert status in (400, 403), status
    print("interop certbot eab-required-without-binding-refused: ok")
