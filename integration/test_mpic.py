"""Multi-perspective issuance corroboration (BR 3.2.2.9) end to end: ``acme-ca serve --test``
as the primary and five ``acme-ca remote-va`` processes, each in its own network namespace.

How the network is built
------------------------
Every remote perspective gets a **network namespace holding only loopback**: ``ip netns add``
when running as root, otherwise a namespace held open by ``unshare -rn`` and entered with
``nsenter``.  Inside it run two processes:

* ``integration/mpic_netns_helper.py``: the perspective's own DNS server (127.0.0.1:8053) and
  http-01 responder (127.0.0.1:5002) -- its private view of the Internet.  Each perspective
  can be given different TXT, http-01 and CAA answers, and its DNS query log is its own;
* ``acme-ca remote-va --dns-resolver 127.0.0.1:8053`` (http-01 on port 5002): the remote VA,
  which can reach nothing but that namespace's loopback.

127.0.0.1 inside a namespace is not the main namespace's 127.0.0.1, so the primary cannot
reach a remote by address, and a remote cannot see the primary's challenge server.  The only
ways in are **two listening TCP sockets the test creates in the main namespace** before
starting the processes, handed over by fd inheritance (``pass_fds``): a socket belongs to
the namespace it was created in, whichever process holds it.

* The remote VA's listener goes in as fd 3 with ``LISTEN_FDS=1`` -- systemd socket
  activation, which ``remote-va`` supports for exactly this and for production units.  The
  primary connects to 127.0.0.1:<port> in the main namespace over mutual TLS; the process in
  the remote namespace accepts, and does its DNS and HTTP work inside its namespace.
* The helper's management API (pebble-challtestsrv verbs), by which the test sets that
  perspective's records and reads its DNS query history.

The test closes its copy of each socket once handed over, so SIGKILL on a remote VA really
closes its listener (connections are refused, as from a dead host), and a restart gets a
fresh socket on the same port.  The mutual-TLS material comes from ``acme-ca mpic-certs``;
the perspectives file places the remotes in real cities (four ARIN, one RIPE NCC) and the
primary in Tokyo, so the 500 km rules hold.

Cases: all agree (5/5, a certificate is issued); one remote sees a wrong TXT, a wrong
http-01 body or CAA for another CA (4/5, valid); tls-alpn-01 with one or two remotes served
another challenge certificate (4/5 valid, 3/5 invalid); two disagree (invalid, nothing signed) and
the retry asks every remote afresh (their DNS logs); the passing remotes all in one RIR
(invalid); the primary fails (remotes never asked); a remote SIGKILLed (non-corroboration);
a remote hung (SIGSTOP) cut off once the outcome is decided; a wrong perspective id or RIR in
a reply; clients without the primary's certificate refused; each configuration refusal.

Where namespaces cannot be created the namespace tests skip with the reason -- but as root
with ``CI=true`` that is a failure, not a skip.  The configuration refusals need no
namespace and always run.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.json_util import decode_b64jose
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.va.quorum import phase_for
from integration.netns import Namespace, create_namespace, listening_socket, require_namespaces
from integration.processes import (
    ACME_CA,
    CaProcess,
    CaProcesses,
    base_env,
    run_cli,
    tail,
)
from tests.fixtures import TEMPLATE_DB
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

HELPER = Path(__file__).with_name("mpic_netns_helper.py")
NS_DNS = "127.0.0.1:8053"
NS_HTTP01_PORT = 5002
NS_TLSALPN01_PORT = 5001
MPIC_TIMEOUT_SECONDS = 15
#: Once decided, how long the primary waits for the remotes still out: the tests read every
#: perspective's result, and on a loaded runner the fifth reply can come later than the
#: default 250 ms after the fourth (the slow-remote test still sees the cut-off).
MPIC_GRACE_MILLISECONDS = 2000
POLL_SECONDS = 25.0

# (id, RIR, latitude, longitude): four ARIN, one RIPE NCC, all >= 500 km apart and from Tokyo.
SPECS = [
    ("us-east", "ARIN", 39.0438, -77.4874),  # Ashburn
    ("us-west", "ARIN", 47.6062, -122.3321),  # Seattle
    ("us-south", "ARIN", 32.7767, -96.7970),  # Dallas
    ("us-north", "ARIN", 41.8781, -87.6298),  # Chicago
    ("eu-central", "RIPE NCC", 50.1109, 8.6821),  # Frankfurt
]
PRIMARY_AT = (35.6762, 139.6503)  # Tokyo
# Every method the registry has: the defaults plus the opt-in account-bound DNS methods.
CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01", "dns-persist-01", "dns-account-01")


# ------------------------------------------------------------------------------------------
# the world: five perspectives and the primary


def mgmt_post(url: str, body: dict[str, Any]) -> bytes:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, (url, body, response.status)
        data: bytes = response.read()
        return data


@dataclass
class Remote:
    """One remote perspective: its namespace, helper, remote VA and the two ports."""

    id: str
    rir: str
    ns: Namespace
    logs: Path
    mtls: Path
    mgmt_port: int = 0
    va_port: int = 0
    helper: subprocess.Popen[bytes] | None = None
    va: CaProcess | None = None
    starts: int = 0
    files: list[IO[bytes]] = field(default_factory=list)
    _helper_out: Path = field(init=False)
    _helper_err: Path = field(init=False)
    _va_identity: str = field(init=False)

    @property
    def mgmt_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    def mgmt(self, path: str, body: dict[str, Any]) -> bytes:
        return mgmt_post(self.mgmt_url + path, body)

    def dns_queries(self, name: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.mgmt("/dns-request-history", {"host": name}))
        return events

    def _open(self, stem: str) -> tuple[IO[bytes], IO[bytes], Path, Path]:
        out_path, err_path = self.logs / f"{stem}.stdout", self.logs / f"{stem}.stderr"
        out, err = out_path.open("wb"), err_path.open("wb")
        self.files += [out, err]
        return out, err, out_path, err_path

    def spawn_helper(self) -> None:
        """Start the helper; :meth:`wait_helper` waits for it (the five start side by side)."""
        sock = listening_socket()
        self.mgmt_port = sock.getsockname()[1]
        out, err, self._helper_out, self._helper_err = self._open(f"{self.id}-helper")
        self.helper = subprocess.Popen(
            [*self.ns.prefix, sys.executable, str(HELPER), "--mgmt-fd", str(sock.fileno())],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=base_env(),
            pass_fds=(sock.fileno(),),
        )
        sock.close()

    def wait_helper(self) -> None:
        assert self.helper is not None
        deadline = time.monotonic() + 20
        while "netns-helper ready" not in self._helper_out.read_text(errors="replace"):
            if self.helper.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.id} helper did not start\n{tail(self._helper_err)}")
            time.sleep(0.05)

    def start_va(self, *, perspective_id: str | None = None, rir: str | None = None) -> None:
        """``acme-ca remote-va`` in the namespace, its listener passed as fd 3."""
        self.spawn_va(perspective_id=perspective_id, rir=rir)
        self.wait_va()

    def spawn_va(self, *, perspective_id: str | None = None, rir: str | None = None) -> None:
        """Start the remote VA; :meth:`wait_va` waits for it and checks what it says."""
        self._va_identity = perspective_id or self.id
        sock = listening_socket(self.va_port)
        self.va_port = sock.getsockname()[1]
        fd = sock.fileno()
        moves = "" if fd == 3 else f" 3<&{fd} {fd}<&-"
        # bash, not sh: dash cannot redirect file descriptors above 9
        script = 'export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"' + moves
        argv = [
            ACME_CA,
            "remote-va",
            "--listen",
            "127.0.0.1:14443",
            "--perspective",
            perspective_id or self.id,
            "--rir",
            rir or self.rir,
            "--dns-resolver",
            NS_DNS,
            "--tls-cert",
            str(self.mtls / f"{self.id}.pem"),
            "--tls-key",
            str(self.mtls / f"{self.id}.key"),
            "--client-ca",
            str(self.mtls / "ca.pem"),
        ]
        env = base_env(
            ACME_CA_HOME=str(self.logs / f"{self.id}-home"),
            ACME_CA_DNSSEC="off",
            ACME_CA_HTTP01_PORT=str(NS_HTTP01_PORT),
            ACME_CA_TLSALPN01_PORT=str(NS_TLSALPN01_PORT),
            ACME_CA_ALLOW_LOOPBACK_VALIDATION="true",
        )
        self.starts += 1
        out, err, out_path, err_path = self._open(f"{self.id}-va-{self.starts}")
        proc = subprocess.Popen(
            [*self.ns.prefix, "bash", "-c", script, "bash", *argv],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=(fd,),
        )
        sock.close()  # the remote VA holds the only copy: its death closes the listener
        self.va = CaProcess(f"{self.id}-va-{self.starts}", proc, out_path, err_path)

    def wait_va(self) -> None:
        assert self.va is not None
        ready = self.va.wait_event("remote_va.ready")
        assert ready["perspective"] == self._va_identity
        assert ready["listen"].startswith("fd:3 (127.0.0.1:"), ready
        # ip netns exec / nsenter and sh exec: the Popen pid is the remote VA itself
        cmdline = Path(f"/proc/{self.va.proc.pid}/cmdline").read_bytes()
        assert b"remote-va" in cmdline, cmdline

    def kill_va(self, sig: int = signal.SIGKILL) -> None:
        assert self.va is not None
        os.kill(self.va.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.va.proc.wait(timeout=10)

    def restart_va(self, **identity: str) -> None:
        self.respawn_va(**identity)
        self.wait_va()

    def respawn_va(self, **identity: str) -> None:
        """SIGTERM the running remote VA (waited for) and start it again, not waiting."""
        if self.va is not None and self.va.proc.poll() is None:
            self.kill_va(signal.SIGTERM)
        self.spawn_va(**identity)

    def va_events(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for path in sorted(self.logs.glob(f"{self.id}-va-*.stdout")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    def close(self) -> None:
        for proc in (self.va.proc if self.va else None, self.helper):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for fh in self.files:
            fh.close()
        self.ns.close()


@dataclass
class Attempt:
    """One order for one name, validated with one challenge."""

    name: str
    order: messages.OrderResource
    challb: messages.ChallengeBody
    status: str
    challenge: dict[str, Any]
    seconds: float

    @property
    def records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.challenge.get("validationRecord", [])
        return records

    @property
    def quorum(self) -> str | None:
        found = [r["quorum"] for r in self.records if "quorum" in r]
        return found[-1] if found else None

    def summary(self, perspective: str) -> dict[str, Any]:
        found = [
            r for r in self.records if r.get("perspective") == perspective and "corroborated" in r
        ]
        assert found, f"no summary record for {perspective}: {self.records}"
        return found[-1]


@dataclass
class World:
    remotes: dict[str, Remote]
    primary: CaProcess
    primary_mgmt: str
    cafile: Path
    mtls: Path
    acme: client.ClientV2
    key: JWK

    def publish(
        self,
        name: str,
        challb: messages.ChallengeBody,
        validation: str,
        *,
        primary: bool = True,
        remote_values: dict[str, str] | None = None,
    ) -> None:
        """The challenge response at the primary's challenge server and every perspective's;
        ``remote_values`` overrides what a perspective sees."""
        values = remote_values or {}
        if isinstance(challb.chall, challenges.DNS01):
            host = f"_acme-challenge.{name}."
            if primary:
                mgmt_post(self.primary_mgmt + "/set-txt", {"host": host, "value": validation})
            for rid, remote in self.remotes.items():
                remote.mgmt("/set-txt", {"host": host, "value": values.get(rid, validation)})
        else:
            token = challb.chall.encode("token")
            if primary:
                mgmt_post(
                    self.primary_mgmt + "/add-http01", {"token": token, "content": validation}
                )
            for rid, remote in self.remotes.items():
                remote.mgmt("/add-http01", {"token": token, "content": values.get(rid, validation)})

    def attempt(
        self,
        name: str,
        kind: type[challenges.Challenge] = challenges.DNS01,
        *,
        prepare: Callable[[messages.ChallengeBody, str], None] | None = None,
    ) -> Attempt:
        """newOrder for ``name``, publish (``prepare``, default everywhere), answer, poll."""
        order = self.acme.new_order(_csr(name))
        authz = order.authorizations[0]
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, kind))
        response, validation = challb.chall.response_and_validation(self.key)
        if prepare is None:
            self.publish(name, challb, validation)
        else:
            prepare(challb, validation)
        return self.answered(name, order, challb, response)

    def answered(
        self,
        name: str,
        order: messages.OrderResource,
        challb: messages.ChallengeBody,
        response: challenges.ChallengeResponse,
    ) -> Attempt:
        """Answer the order's (only) authorization's challenge and poll until it is decided."""
        authz = order.authorizations[0]
        started = time.monotonic()
        self.acme.answer_challenge(challb, response)
        deadline = started + POLL_SECONDS
        while True:
            current, _ = self.acme.poll(authz)
            status = current.body.status.name
            if status not in ("pending", "processing") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        seconds = time.monotonic() - started
        challenge = self.acme._post_as_get(challb.uri).json()
        return Attempt(name, order, challb, status, challenge, seconds)

    def quorum_event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.primary.events("va.mpic.quorum") if e["identifier"] == name]
        assert found, f"no va.mpic.quorum event for {name}\n{self.primary.tails()}"
        return found[-1]


def _csr(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return crypto_util.make_csr(pem, [name])


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}.mpic.example.com"


def perspectives_toml(mtls_ports: dict[str, int]) -> str:
    lines = ["[primary]", f"latitude = {PRIMARY_AT[0]}", f"longitude = {PRIMARY_AT[1]}", ""]
    for pid, rir, lat, lon in SPECS:
        lines += [
            "[[perspectives]]",
            f'id = "{pid}"',
            f'rir = "{rir}"',
            f'url = "https://127.0.0.1:{mtls_ports[pid]}"',
            f"latitude = {lat}",
            f"longitude = {lon}",
            "",
        ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, postgres: EmbeddedPostgres, template_dsn: str
) -> Iterator[World]:
    require_namespaces()
    tmp = tmp_path_factory.mktemp("mpic")
    mtls = tmp / "mtls"
    made = run_cli(
        "mpic-certs",
        "--out",
        str(mtls),
        "--perspectives",
        ",".join(s[0] for s in SPECS),
        env=base_env(),
    )
    assert made.returncode == 0, made.stderr
    logs = tmp / "logs"
    logs.mkdir()
    remotes: dict[str, Remote] = {}
    processes = CaProcesses(logs)
    try:
        # Every process starts at once and is waited for after (the remote VAs' listeners
        # exist before they do, so the primary may connect early): each takes seconds of
        # imports, which one after another made the module's longest wait.
        for index, (pid, rir, _, _) in enumerate(SPECS):
            ns = create_namespace(f"acme-mpic-{os.getpid()}-{index}")
            remotes[pid] = Remote(pid, rir, ns, logs, mtls)
            remotes[pid].spawn_helper()
            remotes[pid].spawn_va()
        perspectives = tmp / "perspectives.toml"
        perspectives.write_text(perspectives_toml({r.id: r.va_port for r in remotes.values()}))
        home = tmp / "primary-home"
        listen, dns, mgmt, http01 = free_port(), free_port(), free_port(), free_port()
        dsn = postgres.create_database(f"mpic_{uuid.uuid4().hex[:12]}", template=TEMPLATE_DB)
        env = base_env(
            ACME_CA_HOME=str(home),
            ACME_CA_DATABASE_URL=dsn,
            ACME_CA_CHALLSRV_DNS=f"127.0.0.1:{dns}",
            ACME_CA_CHALLSRV_MANAGEMENT=f"127.0.0.1:{mgmt}",
            ACME_CA_MPIC_PERSPECTIVES_FILE=str(perspectives),
            ACME_CA_MPIC_CLIENT_CERT=str(mtls / "primary.pem"),
            ACME_CA_MPIC_CLIENT_KEY=str(mtls / "primary.key"),
            ACME_CA_MPIC_SERVER_CA=str(mtls / "ca.pem"),
            ACME_CA_MPIC_TIMEOUT_SECONDS=str(MPIC_TIMEOUT_SECONDS),
            ACME_CA_MPIC_GRACE_MILLISECONDS=str(MPIC_GRACE_MILLISECONDS),
            ACME_CA_CHALLENGE_TYPES=",".join(CHALLENGE_TYPES),
            # not Pebble's fixed 5003: other suites' servers may hold it
            ACME_CA_CHALLSRV_HTTPS01=f"127.0.0.1:{free_port()}",
            ACME_CA_CHALLSRV_TLSALPN01=f"127.0.0.1:{free_port()}",
            # nor Pebble's management 15000, as integration/testmode_server.py does
            ACME_CA_MANAGEMENT_LISTEN=f"127.0.0.1:{free_port()}",
        )
        primary = processes.serve(
            "primary",
            "--test",
            "--listen",
            f"127.0.0.1:{listen}",
            "--challsrv-http01",
            f"127.0.0.1:{http01}",
            "--http01-port",
            str(http01),
            env=env,
            base_url=f"https://127.0.0.1:{listen}",
        )
        for remote in remotes.values():
            remote.wait_helper()
            remote.wait_va()
        cafile = home / "tls" / "ca.pem"
        primary.wait_ready(cafile=cafile, timeout=60)
        key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = client.ClientNetwork(
            key,
            alg=ES256,
            user_agent="acme-ca-mpic-test",
            # acme.client types verify_ssl as bool; requests also takes a CA bundle path.
            verify_ssl=str(cafile),  # type: ignore[arg-type]
        )
        acme = client.ClientV2(client.ClientV2.get_directory(primary.directory_url, net), net)
        acme.new_account(
            messages.NewRegistration.from_data(
                email="mpic@example.com", terms_of_service_agreed=True
            )
        )
        yield World(remotes, primary, f"http://127.0.0.1:{mgmt}", cafile, mtls, acme, key)
    finally:
        processes.close()
        for remote in remotes.values():
            remote.close()


@pytest.fixture
def fresh(world: World) -> Iterator[World]:
    """Every remote VA running as configured before and after the test."""
    for remote in world.remotes.values():
        if remote.va is None or remote.va.proc.poll() is not None:
            remote.start_va()
    yield world
    for remote in world.remotes.values():
        if remote.va is not None and remote.va.proc.poll() is None:
            os.kill(remote.va.proc.pid, signal.SIGCONT)


# ------------------------------------------------------------------------------------------
# the cases


def test_start_up_names_every_perspective(fresh: World) -> None:
    enabled = fresh.primary.wait_event("va.mpic_enabled")
    assert [(p["id"], p["rir"]) for p in enabled["perspectives"]] == [
        (pid, rir) for pid, rir, _, _ in SPECS
    ]
    ready = fresh.primary.wait_event("server.ready")
    assert ready["corroboration"] == "5 remote perspective(s)"


def test_all_agree_valid_5_of_5_and_issued(fresh: World) -> None:
    name = unique("all")
    attempt = fresh.attempt(name)
    assert attempt.status == "valid", attempt.challenge
    assert attempt.quorum == "5/5"
    for pid, rir, _, _ in SPECS:
        summary = attempt.summary(pid)
        assert (summary["corroborated"], summary["rir"]) == (True, rir)
        # each perspective's own DNS answered its own check
        assert any(
            r["perspective"] == pid and r["method"] == "dns-01" and "server" in r
            for r in attempt.records
        )
    event = fresh.quorum_event(name)
    assert event["quorum"] == "5/5" and event["ok"] is True
    assert {(p["id"], p["rir"], p["result"]) for p in event["perspectives"]} == {
        (pid, rir, "corroborated") for pid, rir, _, _ in SPECS
    }
    for remote in fresh.remotes.values():
        assert any(
            e["identifier"] == name and e["ok"] for e in remote.va_events("remote_va.checked")
        ), remote.id
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    done = fresh.acme.finalize_order(attempt.order, deadline)
    assert "BEGIN CERTIFICATE" in done.fullchain_pem


@pytest.mark.parametrize(
    ("label", "kind", "who", "how", "reason"),
    [
        ("txt", challenges.DNS01, "us-east", "value", "incorrectResponse"),
        ("http", challenges.HTTP01, "us-west", "value", "incorrectResponse"),
        ("caa", challenges.DNS01, "us-south", "caa", "caa:"),
    ],
    ids=["wrong-txt", "wrong-http01-body", "caa-for-another-ca"],
)
def test_one_remote_disagrees_still_valid_4_of_5(
    fresh: World,
    label: str,
    kind: type[challenges.Challenge],
    who: str,
    how: str,
    reason: str,
) -> None:
    name = unique(label)

    def prepare(challb: messages.ChallengeBody, validation: str) -> None:
        if how == "value":
            fresh.publish(name, challb, validation, remote_values={who: "not-" + validation})
        else:
            fresh.publish(name, challb, validation)
            fresh.remotes[who].mgmt(
                "/add-caa",
                {"host": name, "policies": [{"tag": "issue", "value": "other-ca.example"}]},
            )

    attempt = fresh.attempt(name, kind, prepare=prepare)
    assert attempt.status == "valid", attempt.challenge
    assert attempt.quorum == "4/5"
    summary = attempt.summary(who)
    assert summary["corroborated"] is False and reason in summary["error"], summary
    assert all(attempt.summary(pid)["corroborated"] for pid, *_ in SPECS if pid != who)


def test_two_disagree_invalid_nothing_signed_and_retry_asks_everyone_afresh(
    fresh: World,
) -> None:
    name = unique("two")
    challenge_host = f"_acme-challenge.{name}"

    def two_wrong(challb: messages.ChallengeBody, validation: str) -> None:
        fresh.publish(
            name, challb, validation, remote_values={"us-east": "wrong-1", "us-west": "wrong-2"}
        )

    first = fresh.attempt(name, prepare=two_wrong)
    assert first.status == "invalid", first.challenge
    error = first.challenge["error"]
    assert "multi-perspective corroboration failed" in error["detail"]
    assert first.quorum is not None and first.quorum.endswith("/5")
    order = fresh.acme._post_as_get(first.order.uri).json()
    assert order["status"] == "invalid" and "certificate" not in order
    with pytest.raises(errors.Error):  # nothing to sign: the order never became ready
        fresh.acme.finalize_order(first.order, dt.datetime.now() + dt.timedelta(seconds=5))

    before = {rid: len(r.dns_queries(challenge_host)) for rid, r in fresh.remotes.items()}
    second = fresh.attempt(name)  # a new order and authorization for the same name
    assert second.status == "valid", second.challenge
    assert second.quorum == "5/5"
    # every remote looked again, through its own resolver: nothing from the first attempt
    # (not even a remote that had corroborated then) was reused
    deadline = time.monotonic() + 5
    while True:
        after = {rid: len(r.dns_queries(challenge_host)) for rid, r in fresh.remotes.items()}
        if all(after[rid] > before[rid] for rid in after) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(after[rid] > before[rid] for rid in after), (before, after)
    nonces = [
        e["nonce"]
        for r in fresh.remotes.values()
        for e in r.va_events("remote_va.checked")
        if e["identifier"] == name
    ]
    assert len(set(nonces)) == 2, nonces  # one fresh nonce per attempt


def test_passing_remotes_all_in_one_rir_invalid(fresh: World) -> None:
    name = unique("rir")

    def ripe_wrong(challb: messages.ChallengeBody, validation: str) -> None:
        fresh.publish(name, challb, validation, remote_values={"eu-central": "wrong"})

    attempt = fresh.attempt(name, prepare=ripe_wrong)
    assert attempt.status == "invalid", attempt.challenge
    assert attempt.quorum == "4/5"
    assert "span 1 RIR(s) (ARIN)" in attempt.challenge["error"]["detail"]


# ------------------------------------------------------------------------------------------
# dns-persist-01 and dns-account-01 (BR 3.2.2.4.21-22, PERSIST-2): every remote repeats the
# record lookup (the ADN walk) through its own resolver and must see the same record


def account_bound_record(world: World, name: str, challenge: dict[str, Any]) -> tuple[str, str]:
    """Where a client publishes a dns-persist-01 or dns-account-01 record, and what."""
    if challenge["type"] == "dns-persist-01":
        issuer = challenge["issuer-domain-names"][0]
        return f"_validation-persist.{name}.", f"{issuer}; accounturi={challenge['accounturi']}"
    registration = world.acme.net.account
    assert registration is not None  # the world registered its account
    account: str = registration.uri
    label = base64.b32encode(hashlib.sha256(account.encode()).digest()[:10]).decode().lower()
    dns01 = challenges.DNS01(token=decode_b64jose(challenge["token"]))
    return f"_{label}._acme-challenge.{name}.", dns01.validation(world.key)


def attempt_account_bound(
    world: World, name: str, typ: str, remote_values: Callable[[str], dict[str, str]]
) -> Attempt:
    """newOrder, publish the ``typ`` record at the primary and every perspective (except what
    ``remote_values`` of the good value overrides), answer, poll."""
    order = world.acme.new_order(_csr(name))
    challb = next(
        c
        for c in order.authorizations[0].body.challenges
        if isinstance(c.chall, challenges.UnrecognizedChallenge) and c.chall.jobj["type"] == typ
    )
    host, value = account_bound_record(world, name, challb.chall.jobj)
    mgmt_post(world.primary_mgmt + "/set-txt", {"host": host, "value": value})
    overrides = remote_values(value)
    for rid, remote in world.remotes.items():
        remote.mgmt("/set-txt", {"host": host, "value": overrides.get(rid, value)})
    # The response to both is an empty object, as to dns-01 (RFC 8555 §7.5.1).
    return world.answered(name, order, challb, challenges.DNS01Response())


def another_record(typ: str, value: str) -> str:
    """What a perspective under attack sees: the record of another account (dns-persist-01)
    or another digest (dns-account-01)."""
    return value + "0" if typ == "dns-persist-01" else "not-" + value


@pytest.mark.parametrize("typ", ["dns-persist-01", "dns-account-01"])
def test_persist_2_account_bound_method_one_remote_sees_another_record_4_of_5(
    fresh: World, typ: str
) -> None:
    name = unique(typ.split("-")[1])
    attempt = attempt_account_bound(
        fresh, name, typ, lambda value: {"us-east": another_record(typ, value)}
    )
    assert attempt.status == "valid", attempt.challenge
    assert attempt.quorum == "4/5"
    summary = attempt.summary("us-east")
    assert summary["corroborated"] is False and summary["result"] == "fail", summary
    assert summary["brMethod"] == ("3.2.2.4.22" if typ == "dns-persist-01" else "3.2.2.4.21")
    assert all(attempt.summary(pid)["corroborated"] for pid, *_ in SPECS if pid != "us-east")
    # each remote's own lookup, under the method's name, naming the ADN it looked at
    for pid, *_ in SPECS:
        assert any(
            r["perspective"] == pid and r["method"] == typ and r.get("adn") == name
            for r in attempt.records
        ), pid


@pytest.mark.parametrize("typ", ["dns-persist-01", "dns-account-01"])
def test_persist_2_account_bound_method_two_remotes_disagree_invalid(
    fresh: World, typ: str
) -> None:
    name = unique(typ.split("-")[1] + "-two")
    attempt = attempt_account_bound(
        fresh,
        name,
        typ,
        lambda value: {who: another_record(typ, value) for who in ("us-west", "us-south")},
    )
    assert attempt.status == "invalid", attempt.challenge
    assert "multi-perspective corroboration failed" in attempt.challenge["error"]["detail"]
    assert attempt.quorum is not None and attempt.quorum.endswith("/5")


# ------------------------------------------------------------------------------------------
# tls-alpn-01 (RFC 8737, BR 3.2.2.4.20): every remote repeats the handshake with its own view
# of the name (its helper's tls-alpn-01 listener) and must see the same acmeIdentifier


def attempt_tlsalpn01(world: World, name: str, wrong: tuple[str, ...]) -> Attempt:
    """newOrder; the primary's and every perspective's tls-alpn-01 listener serve the
    challenge certificate for ``name``, those in ``wrong`` one for another key authorization;
    answer, poll."""
    order = world.acme.new_order(_csr(name))
    challb = next(
        c
        for c in order.authorizations[0].body.challenges
        if isinstance(c.chall, challenges.UnrecognizedChallenge)
        and c.chall.jobj["type"] == "tls-alpn-01"
    )
    token = decode_b64jose(challb.chall.jobj["token"])
    key_authorization = challenges.DNS01(token=token).key_authorization(world.key)
    mgmt_post(world.primary_mgmt + "/add-tlsalpn01", {"host": name, "content": key_authorization})
    for rid, remote in world.remotes.items():
        content = "other." + key_authorization if rid in wrong else key_authorization
        remote.mgmt("/add-tlsalpn01", {"host": name, "content": content})
    # The response is an empty object (RFC 8737 §3, RFC 8555 §7.5.1).
    return world.answered(name, order, challb, challenges.DNS01Response())


@pytest.mark.parametrize(
    ("wrong", "status", "quorum"),
    [(("us-east",), "valid", "4/5"), (("us-east", "eu-central"), "invalid", "3/5")],
    ids=["one-remote-sees-another-certificate", "two-remotes-see-another-certificate"],
)
def test_alpn_mpic_remotes_repeat_the_handshake_and_the_quorum_decides(
    fresh: World, wrong: tuple[str, ...], status: str, quorum: str
) -> None:
    name = unique("alpn")
    attempt = attempt_tlsalpn01(fresh, name, wrong)
    assert attempt.status == status, attempt.challenge
    assert attempt.quorum == quorum
    for pid, *_ in SPECS:
        summary = attempt.summary(pid)
        assert summary["corroborated"] is (pid not in wrong), summary
        # the remote's own handshake, inside its namespace, on its own port
        own = [
            r
            for r in attempt.records
            if r["perspective"] == pid
            and r["method"] == "tls-alpn-01"
            and "corroborated" not in r  # not the primary's summary of this remote
        ]
        assert own and own[-1]["server"] == f"127.0.0.1:{NS_TLSALPN01_PORT}", own
        assert own[-1]["brMethod"] == "3.2.2.4.20" and own[-1]["adn"] == name
        if pid in wrong:
            assert "acmeIdentifier" in summary["error"], summary
    if status == "invalid":
        assert attempt.challenge["error"]["type"] == "urn:ietf:params:acme:error:unauthorized"


def test_primary_failure_never_asks_the_remotes(fresh: World) -> None:
    name = unique("primary")

    def remotes_only(challb: messages.ChallengeBody, validation: str) -> None:
        fresh.publish(name, challb, validation, primary=False)

    attempt = fresh.attempt(name, prepare=remotes_only)
    assert attempt.status == "invalid"
    assert attempt.quorum is None
    assert all(r.get("perspective") == "primary" for r in attempt.records)
    time.sleep(0.5)
    for remote in fresh.remotes.values():
        assert remote.dns_queries(f"_acme-challenge.{name}") == [], remote.id
        assert not [e for e in remote.va_events("remote_va.checked") if e["identifier"] == name]
    not_asked = [
        e for e in fresh.primary.events("va.mpic.remotes_not_asked") if e["identifier"] == name
    ]
    assert not_asked and not_asked[0]["reason"] == "the primary's check failed"


def test_killed_remote_is_a_non_corroboration(fresh: World) -> None:
    fresh.remotes["us-north"].kill_va(signal.SIGKILL)
    name = unique("killed")
    attempt = fresh.attempt(name)
    assert attempt.status == "valid", attempt.challenge
    assert attempt.quorum == "4/5"
    summary = attempt.summary("us-north")
    assert summary["corroborated"] is False
    assert summary["error"].startswith("unavailable:"), summary


def test_slow_remote_is_cut_off_once_the_outcome_is_decided(fresh: World) -> None:
    fresh.remotes["us-south"].kill_va(signal.SIGSTOP)  # accepts connections, never answers
    name = unique("slow")
    attempt = fresh.attempt(name)
    assert attempt.status == "valid", attempt.challenge
    assert attempt.quorum == "4/5"
    assert attempt.summary("us-south")["error"].startswith("not awaited"), attempt.records
    event = fresh.quorum_event(name)
    # decided, then the grace, then cut off: far from the per-remote timeout
    assert MPIC_GRACE_MILLISECONDS - 50 <= event["elapsed_ms"] < MPIC_TIMEOUT_SECONDS * 1000 - 5000
    assert attempt.seconds < MPIC_TIMEOUT_SECONDS


def test_wrong_perspective_id_or_rir_in_a_reply_fails(fresh: World) -> None:
    fresh.remotes["us-west"].respawn_va(perspective_id="imposter")
    fresh.remotes["us-south"].respawn_va(rir="APNIC")
    fresh.remotes["us-west"].wait_va()
    fresh.remotes["us-south"].wait_va()
    try:
        name = unique("identity")
        attempt = fresh.attempt(name)
        assert attempt.status == "invalid", attempt.challenge
        assert attempt.quorum is not None and attempt.quorum.endswith("/5")
        assert (
            "reply names perspective 'imposter', configured 'us-west'"
            in (attempt.summary("us-west")["error"])
        )
        assert (
            "reply names RIR 'APNIC', configured 'ARIN'" in (attempt.summary("us-south")["error"])
        )
    finally:
        fresh.remotes["us-west"].respawn_va()
        fresh.remotes["us-south"].respawn_va()
        fresh.remotes["us-west"].wait_va()
        fresh.remotes["us-south"].wait_va()


@pytest.fixture(scope="module")
def other_mtls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mutual-TLS material of another CA than the world's (``acme-ca mpic-certs`` run
    again): the rogue client's, and the files the refused configurations name."""
    mtls = tmp_path_factory.mktemp("other-mtls")
    made = run_cli("mpic-certs", "--out", str(mtls), "--perspectives", "x", env=base_env())
    assert made.returncode == 0, made.stderr
    return mtls


def _post_check(port: int, context: ssl.SSLContext) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        body = json.dumps(
            {
                "kind": "caa",
                "identifier": "probe.mpic.example.com",
                "wildcard": False,
                "account_uri": "https://ca/acct/1",
                "method": "dns-01",
                "nonce": "probe",
            }
        )
        conn.request(
            "POST",
            "/acme-ca/mpic/v1/check",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    "who", ["primary", "no-certificate", "another-ca", "a-remote's-certificate"]
)
def test_only_the_primary_certificate_gets_in(fresh: World, other_mtls: Path, who: str) -> None:
    mtls = fresh.mtls
    context = ssl.create_default_context(cafile=str(mtls / "ca.pem"))
    context.check_hostname = False
    if who == "primary":
        context.load_cert_chain(mtls / "primary.pem", mtls / "primary.key")
    elif who == "another-ca":
        context.load_cert_chain(other_mtls / "primary.pem", other_mtls / "primary.key")
    elif who == "a-remote's-certificate":
        context.load_cert_chain(mtls / "us-west.pem", mtls / "us-west.key")
    remote = fresh.remotes["us-east"]
    if who == "primary":
        status, reply = _post_check(remote.va_port, context)
        assert status == 200
        assert (reply["perspective"], reply["rir"], reply["nonce"]) == ("us-east", "ARIN", "probe")
        return
    with pytest.raises((OSError, http.client.HTTPException)):
        _post_check(remote.va_port, context)
    assert not [
        e
        for e in remote.va_events("remote_va.checked")
        if e["nonce"] == "probe" and e.get("client") != "primary"
    ]


# ------------------------------------------------------------------------------------------
# configuration refusals: production (no --test, DNSSEC required), before anything starts

FAR = [
    ("iad", "ARIN", 39.0438, -77.4874),
    ("sea", "ARIN", 47.6062, -122.3321),
    ("fra", "RIPE NCC", 50.1109, 8.6821),
    ("gru", "LACNIC", -23.5505, -46.6333),
    ("jnb", "AFRINIC", -26.2041, 28.0473),
    ("syd", "APNIC", -33.8688, 151.2093),
]


def _file(entries: list[tuple[str, str, float, float]], extra: str = "") -> str:
    lines = ["[primary]", f"latitude = {PRIMARY_AT[0]}", f"longitude = {PRIMARY_AT[1]}", ""]
    for pid, rir, lat, lon in entries:
        lines += [
            "[[perspectives]]",
            f'id = "{pid}"',
            f'rir = "{rir}"',
            f'url = "https://{pid}.va.example:14443"',
            f"latitude = {lat}",
            f"longitude = {lon}",
            extra if pid == entries[0][0] else "",
            "",
        ]
    return "\n".join(lines)


def _required_now() -> int:
    return max(phase_for(dt.datetime.now(dt.UTC)).min_remotes, 1)


REFUSALS = [
    (
        "too-few-for-the-date",
        lambda: _file(FAR[: _required_now() - 1]),
        "remote perspective(s) configured; BR 3.2.2.9 requires at least",
    ),
    (
        "two-perspectives-too-close",
        lambda: _file([*FAR[:4], ("ams", "RIPE NCC", 52.3676, 4.9041)]),
        "perspectives fra and ams are 363 km apart",
    ),
    (
        "resolvers-too-close",
        lambda: _file(FAR[:5], extra="resolver_latitude = 50.0\nresolver_longitude = 8.6"),
        "resolvers of iad and of fra are",
    ),
    (
        "perspective-too-close-to-the-primary",
        lambda: _file([*FAR[:4], ("osa", "APNIC", 34.6937, 135.5023)]),
        "perspective osa and the primary are 392 km apart",
    ),
    ("unknown-rir", lambda: _file([*FAR[:4], ("xyz", "IANA", 0.0, 0.0)]), "unknown RIR 'IANA'"),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in REFUSALS], ids=[i for i, _, _ in REFUSALS]
)
def test_production_configuration_refusals(
    tmp_path: Path, other_mtls: Path, text: Callable[[], str], message: str
) -> None:
    path = tmp_path / "perspectives.toml"
    path.write_text(text())
    env = base_env(
        ACME_CA_HOME=str(tmp_path / "home"),
        ACME_CA_STATUS_LISTEN=f"127.0.0.1:{free_port()}",
        ACME_CA_MPIC_PERSPECTIVES_FILE=str(path),
        ACME_CA_MPIC_CLIENT_CERT=str(other_mtls / "primary.pem"),
        ACME_CA_MPIC_CLIENT_KEY=str(other_mtls / "primary.key"),
        ACME_CA_MPIC_SERVER_CA=str(other_mtls / "ca.pem"),
    )
    refused = run_cli("serve", "--listen", f"127.0.0.1:{free_port()}", env=env, timeout=30)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "acme-ca: configuration error:" in refused.stderr
    assert message in refused.stderr, refused.stderr
    assert not (tmp_path / "home" / "pg").exists()  # refused before the database started


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--perspectives", "3"], "needs test mode (--test)"),
        (["remote-va", "--perspective", "us-east", "--rir", "IANA"], "unknown RIR 'IANA'"),
        (["remote-va", "--rir", "ARIN"], "perspective_id (--perspective) '' must be"),
        (
            ["remote-va", "--perspective", "us-east", "--rir", "ARIN"],
            "remote_va_client_ca (--client-ca) is required",
        ),
    ],
    ids=["perspectives-without-test", "remote-unknown-rir", "remote-no-id", "remote-no-mtls"],
)
def test_command_line_refusals(tmp_path: Path, argv: list[str], message: str) -> None:
    env = base_env(
        ACME_CA_HOME=str(tmp_path / "home"), ACME_CA_STATUS_LISTEN=f"127.0.0.1:{free_port()}"
    )
    refused = run_cli(*argv, env=env, timeout=30)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert message in refused.stderr, refused.stderr
