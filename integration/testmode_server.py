"""One `acme-ca serve --test` subprocess on free ports, and what the interop tests read from it."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from integration.processes import (
    CaProcess,
    CaProcesses,
    base_env,
)
from tests.support.ports import free_port

PEM_CHAIN = "application/pem-certificate-chain"


@dataclass
class RunningTestCa:
    """One ``acme-ca serve --test`` subprocess and the ports it was given."""

    proc: CaProcess
    home: Path
    env: dict[str, str]
    listen_port: int
    status_port: int
    dns_port: int
    management_port: int
    challsrv_http01: str
    """``HOST:PORT`` of the challenge server's own http-01 listener, or ``off``."""
    http01_port: int
    """The port the CA's http-01 validation connects to (``--http01-port``)."""
    challsrv_tlsalpn01: str = "off"
    """``HOST:PORT`` of the challenge server's own tls-alpn-01 listener, or ``off``."""
    tlsalpn01_port: int = 0
    """The port the CA's tls-alpn-01 validation connects to (``--tlsalpn01-port``)."""
    startup_seconds: float = 0.0
    _root: Path | None = field(default=None, repr=False)

    @property
    def directory_url(self) -> str:
        return self.proc.directory_url

    @property
    def cafile(self) -> Path:
        """The generated local CA the HTTPS listener's certificate chains to."""
        return self.home / "tls" / "ca.pem"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def mgmt(self, path: str, body: dict[str, Any]) -> None:
        """A management verb that must succeed (200)."""
        status, text = mgmt_post(self.management_url + path, body)
        assert status == 200, f"POST {path} {body}: {status} {text!r}"

    def set_txt(self, name: str, value: str) -> None:
        """Pebble's /set-txt for ``name`` (absolute; appends to the name's values)."""
        self.mgmt("/set-txt", {"host": name.rstrip(".") + ".", "value": value})

    def root_pem(self, directory: Path) -> Path:
        """The CA's root, fetched from ``/roots/0`` as a harness would (once per server)."""
        if self._root is None:
            status, ctype, body = http_get(self.management_url + "/roots/0")
            assert status == 200, (status, body)
            assert ctype == PEM_CHAIN, ctype
            directory.mkdir(parents=True, exist_ok=True)
            self._root = directory / f"root-{self.management_port}.pem"
            self._root.write_bytes(body)
        return self._root

    def stop(self) -> None:
        """SIGTERM: the server stops its worker, listeners and any embedded PostgreSQL."""
        code = self.proc.terminate()
        assert code == 0, f"exit {code}\n{self.proc.tails()}"


def start_test_mode(
    processes: CaProcesses,
    name: str,
    home: Path,
    *,
    dsn: str | None = None,
    challsrv_http01: str = "on",
    http01_port: int | None = None,
    challsrv_tlsalpn01: str = "on",
    tlsalpn01_port: int | None = None,
    args: tuple[str, ...] = (),
    timeout: float = 40.0,
    env: dict[str, str] | None = None,
) -> RunningTestCa:
    """``acme-ca serve --test`` on free ports, waited for until the directory answers.

    ``challsrv_http01="on"`` puts the challenge server's http-01 listener on a free port and
    points the CA's http-01 validation there (Pebble's 5002 arrangement); ``"off"`` turns the
    listener off and validation goes to ``http01_port`` (free if not given), where a
    standalone client binds; ``challsrv_tlsalpn01`` and ``tlsalpn01_port`` likewise for
    tls-alpn-01 (free ports, not Pebble's 5001: several servers run at once).  The https-01
    listener gets a free port too.  ``dsn`` None runs the embedded PostgreSQL under ``home``.
    ``env`` adds variables (knobs, Pebble's names) to the server's environment.
    """
    listen, status, dns_port, management = free_port(), free_port(), free_port(), free_port()
    if challsrv_http01 == "on":
        http01_port = http01_port or free_port()
        challsrv = f"127.0.0.1:{http01_port}"
    else:
        challsrv = challsrv_http01
        http01_port = http01_port or free_port()
    tlsalpn01_port = tlsalpn01_port or free_port()
    if challsrv_tlsalpn01 == "on":
        challsrv_tlsalpn01 = f"127.0.0.1:{tlsalpn01_port}"
    server_env = base_env(
        ACME_CA_HOME=str(home),
        ACME_CA_STATUS_LISTEN=f"127.0.0.1:{status}",
        ACME_CA_CHALLSRV_DNS=f"127.0.0.1:{dns_port}",
        ACME_CA_CHALLSRV_MANAGEMENT=f"127.0.0.1:{management}",
        # Pebble's management listener (15000 by default): a free port, so servers run side
        # by side
        ACME_CA_MANAGEMENT_LISTEN=f"127.0.0.1:{free_port()}",
        **{"ACME_CA_CHALLSRV_HTTPS01": f"127.0.0.1:{free_port()}", **(env or {})},
    )
    if dsn is not None:
        server_env["ACME_CA_DATABASE_URL"] = dsn
    started = time.monotonic()
    proc = processes.serve(
        name,
        "--test",
        "--listen",
        f"127.0.0.1:{listen}",
        "--challsrv-http01",
        challsrv,
        "--http01-port",
        str(http01_port),
        "--challsrv-tlsalpn01",
        challsrv_tlsalpn01,
        "--tlsalpn01-port",
        str(tlsalpn01_port),
        *args,
        env=server_env,
        base_url=f"https://127.0.0.1:{listen}",
    )
    ca = RunningTestCa(
        proc=proc,
        home=home,
        env=server_env,
        listen_port=listen,
        status_port=status,
        dns_port=dns_port,
        management_port=management,
        challsrv_http01=challsrv,
        http01_port=http01_port,
        challsrv_tlsalpn01=challsrv_tlsalpn01,
        tlsalpn01_port=tlsalpn01_port,
    )
    proc.wait_ready(cafile=ca.cafile, timeout=timeout)
    ca.startup_seconds = time.monotonic() - started
    proc.wait_event("testmode.ready", timeout=5)
    return ca


class QuietProcesses(CaProcesses):
    """:class:`CaProcesses` that prints the servers' log tails only when a test failed
    (``-s`` would otherwise show every tail of every passing test)."""

    def __init__(self, log_dir: Path, session: pytest.Session) -> None:
        super().__init__(log_dir)
        self._session = session
        self._failed_before = session.testsfailed

    def close(self) -> None:
        failed = self._session.testsfailed > self._failed_before
        for ca in self.started:
            ca.kill()
            ca.close_files()
            if failed:
                print(ca.tails())


def mgmt_post(url: str, body: object) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def write_pem(path: Path, certs: list[x509.Certificate]) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding

    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    return path
