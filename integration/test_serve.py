"""The real ``acme-ca`` console script, run as subprocesses: ``serve`` (embedded PostgreSQL and
local TLS by default, or ``--plain-http`` against a given database), ``eab`` and ``db migrate``,
exercised with certbot, the ``acme`` library and the low-level test JWS client."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import josepy as jose
import pytest
from acme import client as acme_client
from acme import messages as acme_messages
from cryptography.hazmat.primitives.asymmetric import ec

from tests.jws_client import JwsClient

pytestmark = pytest.mark.integration


def _acme_ca_exe() -> str:
    beside = Path(sys.executable).parent / "acme-ca"
    if beside.is_file():
        return str(beside)
    found = shutil.which("acme-ca")
    if found is None:
        pytest.fail("the acme-ca console script is not installed (pip install -e .)")
    return found


ACME_CA = _acme_ca_exe()
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0
TAIL_LINES = 40


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _base_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any ACME_CA_* setting that would leak into the CA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACME_CA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").rstrip()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) if text else "(empty)"


@dataclass
class CaProcess:
    """One ``acme-ca`` subprocess whose stdout/stderr go to files."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    base_url: str
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def directory_url(self) -> str:
        return self.base_url + "/directory"

    def tails(self) -> str:
        return (
            f"--- {self.name} (pid {self.proc.pid}, exit {self.proc.poll()}) stdout tail ---\n"
            f"{_tail(self.stdout_path)}\n"
            f"--- {self.name} stderr tail ---\n{_tail(self.stderr_path)}"
        )

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                events.append(obj)
        return events

    def wait_ready(self, *, cafile: Path | None = None, timeout: float = READY_TIMEOUT) -> None:
        """Poll the directory until it answers 200 (over TLS trusting ``cafile`` if given)."""
        deadline = time.monotonic() + timeout
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}\n{self.tails()}")
            context = None
            if cafile is not None:
                if not cafile.exists():
                    time.sleep(0.1)
                    continue
                context = ssl.create_default_context(cafile=str(cafile))
            try:
                with urllib.request.urlopen(self.directory_url, timeout=2, context=context) as r:
                    if r.status == 200:
                        json.loads(r.read())
                        return
                    last_error = f"HTTP {r.status}"
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last_error = exc
            time.sleep(0.1)
        pytest.fail(
            f"{self.name}: {self.directory_url} not ready within {timeout:.0f} s "
            f"(last error: {last_error!r})\n{self.tails()}"
        )

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; fails the test (after killing) if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} ignored SIGTERM for {timeout:.0f} s\n{self.tails()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close_files(self) -> None:
        for fh in self._files:
            fh.close()


class CaProcesses:
    """Starts ``acme-ca`` subprocesses; teardown kills whatever is left and prints log tails."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[CaProcess] = []

    def serve(self, name: str, *args: str, env: dict[str, str], base_url: str) -> CaProcess:
        stdout_path = self._log_dir / f"{name}.stdout"
        stderr_path = self._log_dir / f"{name}.stderr"
        out = stdout_path.open("wb")
        err = stderr_path.open("wb")
        proc = subprocess.Popen(
            [ACME_CA, "serve", *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        ca = CaProcess(name, proc, stdout_path, stderr_path, base_url, [out, err])
        self.started.append(ca)
        return ca

    def serve_plain(self, name: str, database_url: str, home: Path, **env: str) -> CaProcess:
        port = _free_port()
        return self.serve(
            name,
            "--plain-http",
            "--listen",
            f"127.0.0.1:{port}",
            env=_base_env(ACME_CA_DATABASE_URL=database_url, ACME_CA_HOME=str(home), **env),
            base_url=f"http://127.0.0.1:{port}",
        )

    def close(self) -> None:
        for ca in self.started:
            ca.kill()
            ca.close_files()
            # Shown by pytest only when the test failed.
            print(ca.tails())


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[CaProcesses]:
    procs = CaProcesses(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.close()


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ACME_CA, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


# ------------------------------------------------------------------------------------------
# serve with every default: embedded PostgreSQL, generated TLS; certbot registers


def _stop_leftover_postmaster(cluster: Path) -> None:
    """Teardown only: a postmaster our server started but did not stop (the test has failed)."""
    try:
        pid = int((cluster / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while (cluster / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_serve_embedded_defaults_https_and_certbot_register(
    tmp_path: Path, processes: CaProcesses
) -> None:
    home = tmp_path / "ca-home"
    cluster_link = home / "pg" / "cluster"
    port = _free_port()
    base_url = f"https://127.0.0.1:{port}"
    ca = processes.serve(
        "embedded",
        "--listen",
        f"127.0.0.1:{port}",
        env=_base_env(ACME_CA_HOME=str(home)),
        base_url=base_url,
    )
    real_cluster: Path | None = None
    try:
        cafile = home / "tls" / "ca.pem"
        ca.wait_ready(cafile=cafile)
        real_cluster = cluster_link.resolve()

        ready = [e for e in ca.log_events() if e.get("event") == "server.ready"]
        assert len(ready) == 1, ca.tails()
        assert ready[0]["directory"] == ca.directory_url
        assert ready[0]["tls"] == "on"
        assert ready[0]["tls_ca"] == str(cafile.resolve())

        certbot_dir = tmp_path / "certbot"
        certbot = shutil.which("certbot") or str(Path(sys.executable).parent / "certbot")
        reg = subprocess.run(
            [
                certbot,
                "register",
                "--server",
                ca.directory_url,
                "--agree-tos",
                "-m",
                "ops@example.test",
                "-n",
                "--config-dir",
                str(certbot_dir / "config"),
                "--work-dir",
                str(certbot_dir / "work"),
                "--logs-dir",
                str(certbot_dir / "logs"),
            ],
            capture_output=True,
            text=True,
            env=_base_env(REQUESTS_CA_BUNDLE=str(cafile)),
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert reg.returncode == 0, f"certbot register: {_describe(reg)}\n{ca.tails()}"
        assert "Account registered" in reg.stdout + reg.stderr, _describe(reg)

        assert ca.terminate() == 0, ca.tails()
        assert not (cluster_link / "postmaster.pid").exists(), (
            f"embedded PostgreSQL still running after serve exited\n{ca.tails()}"
        )
        events = [e.get("event") for e in ca.log_events()]
        assert "server.stopping" in events
        assert "embedded_postgres.stopped" in events, ca.tails()
    finally:
        ca.kill()
        if real_cluster is not None:
            _stop_leftover_postmaster(real_cluster)
            # As root the cluster lives outside tmp_path (/var/lib/acme-ca/pg-<hash>).
            if not real_cluster.is_relative_to(tmp_path):
                shutil.rmtree(real_cluster, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# two processes, one database: nonces are shared state


async def test_acme_nonce_1_nonce_redeemed_across_processes(
    dsn: str, tmp_path: Path, processes: CaProcesses
) -> None:
    a = processes.serve_plain("ca-a", dsn, tmp_path / "home-a")
    b = processes.serve_plain("ca-b", dsn, tmp_path / "home-b")
    a.wait_ready()
    b.wait_ready()

    async with aiohttp.ClientSession() as session:
        client_a = JwsClient(session, a.directory_url, ec.generate_private_key(ec.SECP256R1()))
        client_b = JwsClient(session, b.directory_url, ec.generate_private_key(ec.SECP256R1()))
        await client_a.load_directory()
        await client_b.load_directory()
        assert client_a.directory["newAccount"].startswith(a.base_url)
        assert client_b.directory["newAccount"].startswith(b.base_url)

        nonce = await client_a.nonce()

        # Issued by A, redeemed at B (signed for B's own URL).
        created = await client_b.post(
            client_b.directory["newAccount"],
            {"termsOfServiceAgreed": True},
            nonce=nonce,
            use_jwk=True,
        )
        assert created.status == 201, (created.body, a.tails(), b.tails())
        assert created.headers["Location"].startswith(b.base_url)

        # The same nonce again, back at A: already used.
        replay = await client_a.post(
            client_a.directory["newAccount"],
            {"termsOfServiceAgreed": True},
            nonce=nonce,
            use_jwk=True,
        )
        assert replay.status == 400, replay.body
        assert replay.content_type == "application/problem+json"
        assert replay.body["type"] == "urn:ietf:params:acme:error:badNonce"
        fresh = replay.headers.get("Replay-Nonce")
        assert fresh
        assert fresh != nonce


# ------------------------------------------------------------------------------------------
# EAB keys made with the CLI, used by the acme library


def _acme_client(directory_url: str) -> acme_client.ClientV2:
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = acme_client.ClientNetwork(key, alg=jose.ES256, user_agent="acme-ca-integration")
    directory = acme_client.ClientV2.get_directory(directory_url, net)
    return acme_client.ClientV2(directory, net)


def _eab_registration(
    acme: acme_client.ClientV2, kid: str, hmac_key: str
) -> acme_messages.NewRegistration:
    eab = acme_messages.ExternalAccountBinding.from_data(
        account_public_key=acme.net.key.public_key(),
        kid=kid,
        hmac_key=hmac_key,
        directory=acme.directory,
    )
    return acme_messages.NewRegistration.from_data(
        email="ops@example.test",
        terms_of_service_agreed=True,
        external_account_binding=eab,
    )


def test_eab_cli_create_then_register(dsn: str, tmp_path: Path, processes: CaProcesses) -> None:
    cli_env = _base_env(ACME_CA_DATABASE_URL=dsn, ACME_CA_HOME=str(tmp_path / "home"))
    created = run_cli("eab", "create", "--comment", "test", env=cli_env)
    assert created.returncode == 0, _describe(created)
    kid_match = re.search(r"^kid: (\S+)$", created.stdout, re.MULTILINE)
    key_match = re.search(r"^hmac_key: (\S+)$", created.stdout, re.MULTILINE)
    assert kid_match and key_match, _describe(created)
    kid, hmac_key = kid_match[1], key_match[1]

    listed = run_cli("eab", "list", env=cli_env)
    assert listed.returncode == 0, _describe(listed)
    assert re.search(rf"^{re.escape(kid)}\tunused\t.*\ttest$", listed.stdout, re.MULTILINE), (
        _describe(listed)
    )

    ca = processes.serve_plain(
        "ca-eab", dsn, tmp_path / "home", ACME_CA_EXTERNAL_ACCOUNT_REQUIRED="true"
    )
    ca.wait_ready()

    first = _acme_client(ca.directory_url)
    assert first.directory.meta.external_account_required is True
    regr = first.new_account(_eab_registration(first, kid, hmac_key))
    assert regr.uri and regr.uri.startswith(ca.base_url)
    assert regr.body.status == "valid"
    assert regr.body.external_account_binding is not None

    listed = run_cli("eab", "list", env=cli_env)
    assert listed.returncode == 0, _describe(listed)
    assert re.search(rf"^{re.escape(kid)}\tbound to account \S+\t", listed.stdout, re.MULTILINE), (
        _describe(listed)
    )

    # The key is spent: a second account cannot bind it.
    second = _acme_client(ca.directory_url)
    with pytest.raises(acme_messages.Error) as reused:
        second.new_account(_eab_registration(second, kid, hmac_key))
    assert reused.value.typ == "urn:ietf:params:acme:error:unauthorized", reused.value

    # No binding at all while the CA requires one.
    third = _acme_client(ca.directory_url)
    with pytest.raises(acme_messages.Error) as missing:
        third.new_account(
            acme_messages.NewRegistration.from_data(
                email="ops@example.test", terms_of_service_agreed=True
            )
        )
    assert missing.value.typ == "urn:ietf:params:acme:error:externalAccountRequired"


# ------------------------------------------------------------------------------------------
# db migrate


def test_db_migrate_is_idempotent(dsn: str, tmp_path: Path) -> None:
    env = _base_env(ACME_CA_DATABASE_URL=dsn, ACME_CA_HOME=str(tmp_path / "home"))
    for _ in range(2):
        migrated = run_cli("db", "migrate", env=env)
        assert migrated.returncode == 0, _describe(migrated)
        assert "schema is current" in migrated.stdout, _describe(migrated)
