"""What the interop suite (``integration/test_interop.py``) and its wall-time benchmark
(``python -m integration.bench interop``) share: the real ACME clients (certbot, lego,
dehydrated, uacme) driven one case at a time, the test-mode servers they run against, and the
checks every issued certificate must pass. Kept out of the test module so that neither imports
a test module (issue 18, tests/test_layout.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from acme_ca.embedded_pg import EmbeddedPostgres
from integration.clients import (
    CERTBOT,
    blocking_findings,
    certbot_dirs,
    openssl_verify,
    write_hooks,
)
from integration.processes import STOP_TIMEOUT, CaProcesses, base_env, describe, run_cli, tail
from integration.testmode_server import RunningTestCa, start_test_mode, write_pem
from tests.fixtures import TEMPLATE_DB
from tests.support.requirements import unavailable

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

    def wait_issued(self, serial: str) -> None:
        """Until the CA logged ``certificate.issued`` for ``serial`` (logged just after the
        commit a client may already have seen)."""
        self.ca.proc.wait_events("certificate.issued", where=lambda e: e["serial"] == serial)

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
    server.wait_issued(issued.serial)


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
            unavailable(
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
        unavailable(f"{client} is not installed (scripts/bootstrap.sh test installs it)")
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
