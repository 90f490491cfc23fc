"""The benchmark targets, each started in the shape it is meant to run in, as context
managers yielding a :class:`Target`.

* Pebble: the Debian package, over HTTPS with a throwaway TLS certificate, its validation
  sleep off (``PEBBLE_VA_NOSLEEP``), no nonce rejection, authorization reuse at Pebble's
  default; names resolve through a ``pebble-challtestsrv`` DNS answering 127.0.0.1.
* acme_ca in production shape: a PostgreSQL server of its own, the CA keys in a SoftHSM2
  token, ``acme-ca serve`` (HTTPS, no in-process worker) beside one ``acme-ca worker``
  process, logging at info as production does, pre-issuance linting (always on), CT logs
  reached over HTTP in a helper process (production's logs are remote, so their CPU is not
  the CA's), and the same ``pebble-challtestsrv`` DNS as Pebble's resolver.
* acme_ca-limits: the same with the rate limits on (``rate_limits = true``, as production
  has them), every bucket the load generator draws from overridden high enough that it is
  never refused (:func:`override_limits`), so the row measures what the checks cost (issue
  16: at most 5% below the row without them).
* acme_ca-mpic: the production shape with five ``acme-ca remote-va`` processes (one per RIR,
  on loopback, each with its mTLS certificate from ``acme-ca mpic-certs``) corroborating every
  validation and CAA check, what each issuance costs from 2026-12-15 (BR 3.2.2.9); their CPU
  is counted with the CA's.
* acme_ca-test: ``acme-ca serve --test`` with its embedded PostgreSQL, its built-in challenge
  DNS, and its worker and CT test logs in its child process, as a client's CI runs it.
* acme_ca-readme: the README's shape, ``acme-ca serve`` on its embedded defaults (embedded
  PostgreSQL, file keys, worker and CT test logs in serve's child process), pointed at the
  benchmark's DNS.

CPU counted for a target is its own work: the pebble process; acme_ca's serve, worker,
remote VA and PostgreSQL trees.  The DNS server and the CT logs are reported beside it, not counted.

Every subprocess runs in a session of its own (a Ctrl-C at the terminal reaches only the
benchmark, which then stops them in order) and is killed by the kernel should the benchmark
die without cleaning up (``PR_SET_PDEATHSIG``).  Output goes to files in the work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from cryptography.x509.oid import ExtendedKeyUsageOID

from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.localca import LocalCa, cert_pem, local_name
from integration.bench import counts
from integration.processes import (
    LoggedProcess,
    acme_ca_exe,
    base_env,
    free_test_mode_ports,
)
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
#: Label of the benchmark's SoftHSM2 token.
TOKEN_LABEL = "acme-ca-bench"


class BenchSetupError(RuntimeError):
    """A target could not be started; the message carries the relevant log tails."""


@dataclass
class Target:
    """A running server under test and how to measure it."""

    name: str
    directory_url: str
    cafile: Path | None
    #: The port the target's http-01 validation connects to (the load generator binds it).
    http01_port: int
    #: Every process whose CPU is charged to the target (descendants are found by procstat).
    cpu_pids: Callable[[], list[int]]
    alive: Callable[[], bool]
    #: Versions, processes and settings: what exactly was measured.
    details: dict[str, Any] = field(default_factory=dict)
    #: ``cpu_pids`` by part (acme_ca: serve / worker / postgres), for the split in the report.
    cpu_split: dict[str, list[int]] = field(default_factory=dict)
    #: Shared infrastructure whose CPU is reported but not charged (DNS, CT logs).
    infra_split: dict[str, list[int]] = field(default_factory=dict)
    #: Reads the work counters (counts.COUNTS) the report divides by issuances, if any.
    counters: Callable[[], dict[str, float]] | None = None
    #: The address the load generator's http-01 responder binds (step-ca: a loopback
    #: address of its own, since step-ca 0.19 validates on port 80 only).
    http01_host: str = "127.0.0.1"


# ------------------------------------------------------------------------------ processes

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGKILLs the child when the benchmark dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Service(LoggedProcess):
    """One benchmark subprocess; fails the set-up (not a test) when it has exited."""

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchSetupError(f"{self.name} exited with {self.proc.returncode}\n{self.tails()}")


def start_service(
    stack: contextlib.ExitStack,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
) -> Service:
    """Start ``argv`` in the background; ``stack`` stops it on exit (also on errors)."""
    service = Service.spawn(
        name,
        argv,
        log_dir=log_dir,
        env=env,
        cwd=REPO,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # safe: no threads run while we spawn
    )
    stack.callback(service.stop, STOP_TIMEOUT)
    return service


def _wait(
    what: str, ready: Callable[[], bool], services: Sequence[Service], timeout: float
) -> None:
    """Poll ``ready`` until true; fail early if one of ``services`` exits."""
    deadline = time.monotonic() + timeout
    while not ready():
        for service in services:
            service.check_alive()
        if time.monotonic() > deadline:
            raise BenchSetupError(
                f"{what}: not ready within {timeout:.0f} s\n"
                + "\n".join(s.tails() for s in services)
            )
        time.sleep(0.1)


def _directory_answers(url: str, cafile: Path | None) -> Callable[[], bool]:
    def ready() -> bool:
        if cafile is not None and not cafile.exists():
            return False
        try:
            # Inside the try: serve may be half-way through writing the file (ssl.SSLError).
            context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return response.status == 200 and "newOrder" in json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False

    return ready


def _json_event(path: Path, name: str) -> Callable[[], bool]:
    def seen() -> bool:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("event") == name:
                        return True
        return False

    return seen


def _command_output(*argv: str) -> str | None:
    """First line of a version command's output, or None when it cannot run."""
    try:
        run = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (run.stdout or run.stderr).strip()
    return text.splitlines()[0] if run.returncode == 0 and text else None


def pg_version(text: str) -> str:
    """``15.18`` out of ``pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)``."""
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", text)
    return match[1] if match else text


def deb_version(package: str) -> str | None:
    return _command_output("dpkg-query", "-W", "-f=${Version}", package)


# ------------------------------------------------------------------------------ DNS


@dataclass(frozen=True)
class Dns:
    """A pebble-challtestsrv answering every A query with one address (127.0.0.1 unless
    asked otherwise) and no AAAA."""

    service: Service
    address: str  # host:port


def _dns_answers(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        query = dns.message.make_query("ready.bench.example.com", dns.rdatatype.A)
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
        except (OSError, dns.exception.DNSException):
            return False
        return bool(reply.answer)

    return ready


def start_dns(stack: contextlib.ExitStack, log_dir: Path, answer: str = "127.0.0.1") -> Dns:
    """pebble-challtestsrv as a plain DNS server: every challenge listener off, A queries
    answered ``answer``, AAAA queries answered empty (``-defaultIPv6 ""``) so validators
    connect to the IPv4 loopback address the load generator listens on."""
    port = free_port()
    service = start_service(
        stack,
        "dns",
        [
            CHALLTESTSRV,
            "-dns01",
            f"127.0.0.1:{port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"127.0.0.1:{free_port()}",
            "-defaultIPv4",
            answer,
            "-defaultIPv6",
            "",
        ],
        env=base_env(),
        log_dir=log_dir,
    )
    _wait("pebble-challtestsrv DNS", _dns_answers(port), [service], READY_TIMEOUT)
    return Dns(service, f"127.0.0.1:{port}")


# ------------------------------------------------------------------------------ Pebble


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1 signed by it; returns
    (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    lifetime = dt.timedelta(days=30)
    ca = LocalCa.create(local_name("acme_ca benchmark TLS CA"), now=now, lifetime=lifetime)
    cert, key = ca.issue(
        local_name("localhost"),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        names=("localhost", "127.0.0.1"),
        now=now,
        lifetime=lifetime,
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    ca_path.write_bytes(cert_pem(ca.cert))
    ca.write_leaf(cert_path, key_path, cert, key)
    return ca_path, cert_path, key_path


def pebble_missing() -> str | None:
    """Why Pebble cannot be benchmarked here, or None."""
    for exe in (PEBBLE, CHALLTESTSRV):
        if not Path(exe).is_file():
            return f"{exe} is not installed (apt-get install pebble)"
    return None


def pebble_config(
    base: Path, port: int, management_port: int, http01_port: int
) -> tuple[Path, Path, dict[str, Any]]:
    """Pebble's JSON config under ``base`` (TLS material made for it, no OCSP, no EAB), with the
    ACME API on ``port``; returns the CA certificate its TLS chains to, the config's path and
    the config."""
    ca_path, cert_path, key_path = make_tls(base / "tls")
    config: dict[str, Any] = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(cert_path),
            "privateKey": str(key_path),
            "httpPort": http01_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config_path = base / "pebble-config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return ca_path, config_path, config


@contextlib.contextmanager
def pebble(workdir: Path) -> Iterator[Target]:
    """Pebble over HTTPS with its DNS; stopped on exit."""
    problem = pebble_missing()
    if problem is not None:
        raise BenchSetupError(problem)
    base = workdir / "pebble"
    logs = base / "logs"
    with contextlib.ExitStack() as stack:
        dns_server = start_dns(stack, logs)
        port, http01_port = free_port(), free_port()
        ca_path, config_path, config = pebble_config(base, port, free_port(), http01_port)
        knobs = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        server = start_service(
            stack,
            "pebble",
            [PEBBLE, "-config", str(config_path), "-dnsserver", dns_server.address],
            env=base_env(**knobs),
            log_dir=logs,
        )
        directory_url = f"https://127.0.0.1:{port}/dir"
        _wait(
            "pebble",
            _directory_answers(directory_url, ca_path),
            [server, dns_server.service],
            READY_TIMEOUT,
        )
        yield Target(
            name="pebble",
            directory_url=directory_url,
            cafile=ca_path,
            http01_port=http01_port,
            cpu_pids=lambda: [server.pid],
            alive=server.alive,
            details={
                "version": deb_version("pebble"),
                "shape": "Debian's pebble, one process, HTTPS; pebble-challtestsrv as DNS",
                "processes": {"pebble": server.pid, "dns": dns_server.service.pid},
                "environment": {**knobs, "PEBBLE_AUTHZREUSE": "(unset: Pebble's default)"},
                "config": config["pebble"],
                "dns": dns_server.address,
                "cpu_counted": ["pebble"],
                "logs": str(logs),
            },
            cpu_split={"pebble": [server.pid]},
            infra_split={"dns": [dns_server.service.pid]},
        )


# ------------------------------------------------------------------------------ acme_ca


class _FileLog:
    """EmbeddedPostgres's logger: one JSON line per event into the target's log directory,
    keeping the benchmark's own output to the report."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _write(self, level: str, event: str, **kw: Any) -> None:
        line = {"event": event, "level": level, **kw}
        with self._path.open("a") as fh:
            fh.write(json.dumps(line, default=str) + "\n")

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self._write("info", event, **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self._write("warning", event, **kw)


def _postmaster_pid(postgres: EmbeddedPostgres) -> int:
    """The postmaster's pid, from postmaster.pid of the cluster we started."""
    cluster = postgres.cluster_dir
    if cluster is None:
        raise BenchSetupError("PostgreSQL has no cluster directory after start")
    return int((cluster / "postmaster.pid").read_text().splitlines()[0])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's (the postgres user when we are root)
    return True


#: The limits-on row's overrides: far more per second than two cores can issue.
LIMIT_OVERRIDE_COUNT = 1_000_000
LIMIT_OVERRIDE_PERIOD = "1s"
#: Accounts 1..N get a ``new_orders_per_account`` override before the first level (ids are
#: assigned in order in the target's fresh database; the default levels register about 760
#: accounts, probes included).  More accounts than this would meet the default, 300 per 3
#: hours, and a refusal would show as a 429 in the report's shed row.
LIMIT_OVERRIDE_ACCOUNTS = 2000


def override_limits(
    exe: str,
    env: Mapping[str, str],
    log_dir: Path,
    dsn: str,
    accounts: int = LIMIT_OVERRIDE_ACCOUNTS,
) -> None:
    """Raise every limit the load generator meets, as an operator would for a known heavy
    client: ``acme-ca admin limits set`` for the address range (all its accounts come from
    127.0.0.1) and for the registered domain (every name is under example.com), then the same
    override, through the repository the command uses, for account ids 1..``accounts``."""
    count = str(LIMIT_OVERRIDE_COUNT)
    for limit, key in (
        ("new_accounts_per_ip_range", "127.0.0.1"),
        ("certificates_per_domain", "example.com"),
    ):
        argv = [exe, "admin", "limits", "set", limit, key, "--count", count]
        argv += ["--period", LIMIT_OVERRIDE_PERIOD, "--comment", "benchmark load generator"]
        run = subprocess.run(
            argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )
        with (log_dir / "limits.log").open("a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{run.stdout}{run.stderr}")
        if run.returncode != 0:
            raise BenchSetupError(f"acme-ca admin limits set failed:\n{run.stdout}{run.stderr}")
    asyncio.run(_override_accounts(dsn, accounts))


async def _override_accounts(dsn: str, accounts: int) -> None:
    from acme_ca.cli_limits import parse_period
    from acme_ca.db.pool import create_pool
    from acme_ca.db.ratelimits import Override, RateLimitRepository

    seconds = int(parse_period(LIMIT_OVERRIDE_PERIOD).total_seconds())
    now = dt.datetime.now(dt.UTC)
    pool = await create_pool(dsn, max_size=1)
    try:
        repo = RateLimitRepository(pool)
        for account in range(1, accounts + 1):
            await repo.set_override(
                Override(
                    "new_orders_per_account",
                    str(account),
                    LIMIT_OVERRIDE_COUNT,
                    seconds,
                    "benchmark load generator",
                    "bench",
                    now,
                )
            )
    finally:
        await pool.close()


@contextlib.contextmanager
def acme_ca(workdir: Path) -> Iterator[Target]:
    """acme_ca in production shape (see the module docstring); stopped on exit."""
    with _acme_ca(workdir, name="acme_ca", rate_limits=False) as target:
        yield target


@contextlib.contextmanager
def acme_ca_limits(workdir: Path) -> Iterator[Target]:
    """acme_ca in production shape with the rate limits on and overridden (module
    docstring); stopped on exit."""
    with _acme_ca(workdir, name="acme_ca-limits", rate_limits=True) as target:
        yield target


@contextlib.contextmanager
def _acme_ca(
    workdir: Path, *, name: str, rate_limits: bool, remote_vas: bool = False
) -> Iterator[Target]:
    # Imported here: the benchmark of Pebble alone needs neither SoftHSM2 nor its helper.
    from tests.support.softhsm import SoftHsmToken, softhsm_available

    if not softhsm_available():
        raise BenchSetupError("SoftHSM2 is not installed (apt-get install softhsm2)")
    base = workdir / name
    logs = base / "logs"
    home = base / "home"
    try:
        exe = acme_ca_exe()
    except FileNotFoundError as e:
        raise BenchSetupError(str(e)) from e
    with contextlib.ExitStack() as stack:
        dns_server = start_dns(stack, logs)

        logs.mkdir(parents=True, exist_ok=True)
        postgres = EmbeddedPostgres(base / "pg", log=_FileLog(logs / "embedded_postgres.log"))
        dsn = postgres.start()
        stack.callback(postgres.stop)
        # Statements counted per issuance (counts.py): pg_stat_statements needs a restart.
        counts.enable_statement_counting(dsn)
        postgres.stop()
        postgres.start()
        # The CA's processes connect over the cluster's Unix socket, as on embedded defaults.
        dsn = postgres.local_dsn
        counts.create_extension(dsn)
        postmaster = _postmaster_pid(postgres)

        token = SoftHsmToken.create(base / "softhsm", label=TOKEN_LABEL, activate=False)
        log_list = home / "ct" / "log_list.json"  # where acme_ca.testsrv.ct_logs_runner writes it
        env = base_env(
            ACME_CA_HOME=str(home),
            ACME_CA_DATABASE_URL=dsn,
            ACME_CA_PKCS11_MODULE=token.module,
            ACME_CA_PKCS11_TOKEN_LABEL=token.label,
            ACME_CA_PKCS11_PIN=token.pin,
            ACME_CA_SERVE_WORKER="false",
            ACME_CA_STATUS_LISTEN=f"127.0.0.1:{free_port()}",
            ACME_CA_CT_LOG_LIST=str(log_list),
            ACME_CA_RATE_LIMITS="true" if rate_limits else "false",
            **token.env(),
        )

        init = subprocess.run(
            [exe, "init"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        (logs / "init.stdout").write_text(init.stdout)
        (logs / "init.stderr").write_text(init.stderr)
        if init.returncode != 0:
            raise BenchSetupError(
                f"acme-ca init failed (exit {init.returncode}):\n{init.stdout}\n{init.stderr}"
            )

        ct_logs = start_service(
            stack,
            "ct-logs",
            [sys.executable, "-m", "integration.bench.ctlogs", "--home", str(home)],
            env=base_env(),
            log_dir=logs,
        )
        _wait("CT test logs", log_list.exists, [ct_logs], READY_TIMEOUT)

        port, http01_port = free_port(), free_port()
        remotes: dict[str, Service] = {}
        if remote_vas:
            remotes = start_remote_vas(stack, exe, base, logs, dns_server, http01_port)
            env |= mpic_env(base)
        serve_metrics, worker_metrics = free_port(), free_port()
        serve = start_service(
            stack,
            "serve",
            [
                exe,
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--dns-resolver",
                dns_server.address,
                "--dnssec",
                "off",
                "--http01-port",
                str(http01_port),
                "--allow-loopback-validation",
                "--metrics-listen",
                f"127.0.0.1:{serve_metrics}",
            ],
            env=env,
            log_dir=logs,
        )
        cafile = home / "tls" / "ca.pem"
        directory_url = f"https://127.0.0.1:{port}/directory"
        _wait("acme-ca serve", _directory_answers(directory_url, cafile), [serve], READY_TIMEOUT)
        if rate_limits:
            override_limits(exe, env, logs, dsn)
        # After serve: serve has applied the schema, so the worker's migrate is a no-op.
        worker = start_service(
            stack,
            "worker",
            [exe, "worker", "--metrics-listen", f"127.0.0.1:{worker_metrics}"],
            env=env,
            log_dir=logs,
        )
        _wait(
            "acme-ca worker",
            _json_event(worker.stdout_path, "worker.started"),
            [worker],
            READY_TIMEOUT,
        )

        binaries = postgres.binaries
        counted = {"serve": [serve.pid], "worker": [worker.pid], "postgres": [postmaster]}
        if remotes:
            counted["remote_vas"] = [va.pid for va in remotes.values()]
        yield Target(
            name=name,
            directory_url=directory_url,
            cafile=cafile,
            http01_port=http01_port,
            cpu_pids=lambda: [pid for pids in counted.values() for pid in pids],
            alive=lambda: (
                serve.alive()
                and worker.alive()
                and _pid_alive(postmaster)
                and all(va.alive() for va in remotes.values())
            ),
            details={
                "version": _command_output(
                    "git", "-C", str(REPO), "describe", "--always", "--dirty"
                ),
                "shape": "acme-ca serve (HTTPS, no in-process worker) + 1 acme-ca worker "
                "process + own PostgreSQL server; CA keys in SoftHSM2; pre-issuance linting "
                "on; CT test logs in a separate process (remote in production, not counted); "
                "logging at info, JSON, to files; pebble-challtestsrv as DNS (dnssec off); "
                + (
                    f"rate limits ON, the load generator's buckets overridden to "
                    f"{LIMIT_OVERRIDE_COUNT} per {LIMIT_OVERRIDE_PERIOD} (address range, "
                    f"registered domain, accounts 1-{LIMIT_OVERRIDE_ACCOUNTS})"
                    if rate_limits
                    else "rate limits off"
                )
                + (
                    f"; {len(remotes)} acme-ca remote-va processes (one per RIR, loopback, "
                    "mTLS) corroborating every validation and CAA check, their CPU counted"
                    if remotes
                    else ""
                ),
                "processes": {
                    "serve": serve.pid,
                    "worker": worker.pid,
                    "postgres": postmaster,
                    "ct_logs": ct_logs.pid,
                    "dns": dns_server.service.pid,
                    **{f"remote_va_{p}": va.pid for p, va in remotes.items()},
                },
                "postgresql": pg_version(binaries.version) if binaries else None,
                "postgresql_binaries": str(binaries.bin_dir) if binaries else None,
                "softhsm2": deb_version("softhsm2"),
                "environment": {
                    k: ("***" if k in ("ACME_CA_PKCS11_PIN", "ACME_CA_DATABASE_URL") else v)
                    for k, v in env.items()
                    if k.startswith("ACME_CA_")
                },
                "dns": dns_server.address,
                "cpu_counted": list(counted),
                "logs": str(logs),
            },
            cpu_split=counted,
            infra_split={"dns": [dns_server.service.pid], "ct_logs": [ct_logs.pid]},
            counters=counts.acme_ca_counter(
                dsn,
                [f"http://127.0.0.1:{p}/metrics" for p in (serve_metrics, worker_metrics)],
            ),
        )


@contextlib.contextmanager
def acme_ca_mpic(workdir: Path) -> Iterator[Target]:
    """The production shape with five remote VAs (module docstring); stopped on exit."""
    with _acme_ca(workdir, name="acme_ca-mpic", rate_limits=False, remote_vas=True) as target:
        yield target


def _port_open(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        return False

    return ready


def start_remote_vas(
    stack: contextlib.ExitStack,
    exe: str,
    base: Path,
    logs: Path,
    dns_server: Dns,
    http01_port: int,
) -> dict[str, Service]:
    """``acme-ca mpic-certs`` then one ``acme-ca remote-va`` per perspective of
    :data:`integration.production_env.PERSPECTIVES`, on loopback ports, resolving through the
    benchmark's DNS and fetching http-01 from the load generator's port; writes the primary's
    perspectives file (:func:`mpic_env` points the CA at it)."""
    from integration.production_env import PERSPECTIVES, PRIMARY_AT

    mtls = base / "mtls"
    made = subprocess.run(
        [
            exe,
            "mpic-certs",
            "--out",
            str(mtls),
            "--perspectives",
            ",".join(p[0] for p in PERSPECTIVES),
        ],
        env=base_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        raise BenchSetupError(f"acme-ca mpic-certs failed:\n{made.stdout}{made.stderr}")
    remotes: dict[str, Service] = {}
    ports: dict[str, int] = {}
    for perspective, rir, _, _ in PERSPECTIVES:
        ports[perspective] = free_port()
        remotes[perspective] = start_service(
            stack,
            f"remote-va-{perspective}",
            [
                exe,
                "remote-va",
                "--listen",
                f"127.0.0.1:{ports[perspective]}",
                "--perspective",
                perspective,
                "--rir",
                rir,
                "--dns-resolver",
                dns_server.address,
                "--tls-cert",
                str(mtls / f"{perspective}.pem"),
                "--tls-key",
                str(mtls / f"{perspective}.key"),
                "--client-ca",
                str(mtls / "ca.pem"),
                "--metrics-listen",
                "off",
            ],
            env=base_env(
                ACME_CA_HOME=str(base / f"remote-va-{perspective}"),
                ACME_CA_DNSSEC="off",
                ACME_CA_HTTP01_PORT=str(http01_port),
                ACME_CA_ALLOW_LOOPBACK_VALIDATION="true",
                ACME_CA_LOG_FORMAT="json",
            ),
            log_dir=logs,
        )
    for perspective, va in remotes.items():
        _wait(f"remote VA {perspective}", _port_open(ports[perspective]), [va], READY_TIMEOUT)
    lines = ["[primary]", f"latitude = {PRIMARY_AT[0]}", f"longitude = {PRIMARY_AT[1]}", ""]
    for perspective, rir, latitude, longitude in PERSPECTIVES:
        lines += [
            "[[perspectives]]",
            f'id = "{perspective}"',
            f'rir = "{rir}"',
            f'url = "https://127.0.0.1:{ports[perspective]}"',
            f"latitude = {latitude}",
            f"longitude = {longitude}",
            "",
        ]
    (base / "perspectives.toml").write_text("\n".join(lines))
    return remotes


def mpic_env(base: Path) -> dict[str, str]:
    """The primary's (serve's and the worker's) MPIC settings for :func:`start_remote_vas`."""
    mtls = base / "mtls"
    return {
        "ACME_CA_MPIC_PERSPECTIVES_FILE": str(base / "perspectives.toml"),
        "ACME_CA_MPIC_CLIENT_CERT": str(mtls / "primary.pem"),
        "ACME_CA_MPIC_CLIENT_KEY": str(mtls / "primary.key"),
        "ACME_CA_MPIC_SERVER_CA": str(mtls / "ca.pem"),
    }


def _embedded_postmaster(serve: Service) -> int:
    """The pid of the PostgreSQL server ``serve`` started on its embedded defaults (its
    ``embedded_postgres.started`` event names the cluster; postmaster.pid the process)."""
    for event in _events(serve.stdout_path):
        if event.get("event") == "embedded_postgres.started" and event.get("cluster"):
            pid_file = Path(str(event["cluster"])) / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(pid_file.read_text().splitlines()[0])
    raise BenchSetupError(f"no embedded PostgreSQL found in serve's log\n{serve.tails()}")


def _events(path: Path) -> Iterator[dict[str, Any]]:
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event


#: A first start on embedded defaults makes its PostgreSQL cluster and hierarchy.
EMBEDDED_READY_TIMEOUT = 180.0


@contextlib.contextmanager
def acme_ca_test(workdir: Path) -> Iterator[Target]:
    """``acme-ca serve --test`` (module docstring); stopped on exit."""
    with _acme_ca_embedded(workdir, name="acme_ca-test", test_mode=True) as target:
        yield target


@contextlib.contextmanager
def acme_ca_readme(workdir: Path) -> Iterator[Target]:
    """The README's ``acme-ca serve`` on its embedded defaults (module docstring)."""
    with _acme_ca_embedded(workdir, name="acme_ca-readme", test_mode=False) as target:
        yield target


@contextlib.contextmanager
def _acme_ca_embedded(workdir: Path, *, name: str, test_mode: bool) -> Iterator[Target]:
    """One ``acme-ca serve`` on its embedded PostgreSQL, with its worker and CT test logs in
    its child process (counted apart); in test mode its own challenge DNS answers every name
    with 127.0.0.1, otherwise the benchmark's DNS does."""
    try:
        exe = acme_ca_exe()
    except FileNotFoundError as e:
        raise BenchSetupError(str(e)) from e
    base = workdir / name
    logs = base / "logs"
    home = base / "home"
    with contextlib.ExitStack() as stack:
        port, http01_port = free_port(), free_port()
        env = base_env(
            ACME_CA_HOME=str(home),
            ACME_CA_STATUS_LISTEN=f"127.0.0.1:{free_port()}",
            ACME_CA_LOG_FORMAT="json",
        )
        argv = [exe, "serve", "--listen", f"127.0.0.1:{port}", "--http01-port", str(http01_port)]
        infra: dict[str, list[int]] = {}
        if test_mode:
            argv += ["--test", "--challsrv-http01", "off"]
            env |= free_test_mode_ports(argv, env)
            shape = (
                "acme-ca serve --test: serve with its embedded PostgreSQL and challenge DNS, its "
                "signing worker and the CT test logs in its child process, file keys; counted: "
                "serve's tree (the worker apart) and its PostgreSQL server"
            )
        else:
            dns_server = start_dns(stack, logs)
            infra["dns"] = [dns_server.service.pid]
            argv += ["--dns-resolver", dns_server.address, "--dnssec", "off"]
            argv += ["--allow-loopback-validation"]
            shape = (
                "acme-ca serve on its embedded defaults (the README's scripts/run.sh): serve "
                "with its embedded PostgreSQL, its signing worker and the CT test logs in its "
                "child process, file keys; pebble-challtestsrv as DNS (dnssec off); counted: "
                "serve's tree (the worker apart) and its PostgreSQL server"
            )
        serve = start_service(stack, "serve", argv, env=env, log_dir=logs)
        cafile = home / "tls" / "ca.pem"
        directory_url = f"https://127.0.0.1:{port}/directory"
        _wait(
            f"acme-ca serve ({name})",
            _directory_answers(directory_url, cafile),
            [serve],
            EMBEDDED_READY_TIMEOUT,
        )
        # The worker starts just after the listener in test mode: wait for it, so the first
        # level does not measure its start.
        _wait(
            f"acme-ca serve's worker ({name})",
            _json_event(serve.stdout_path, "worker.started"),
            [serve],
            EMBEDDED_READY_TIMEOUT,
        )
        postmaster = _embedded_postmaster(serve)
        # serve's worker child (issue 20 target 2), counted apart from serve (a group listed
        # first claims its tree); none when the worker runs inside serve.
        child = [
            int(e["pid"])
            for e in _events(serve.stdout_path)
            if e.get("event") == "worker.process_started"
        ]
        counted = {"worker": child[-1:], "serve": [serve.pid], "postgres": [postmaster]}
        if not child:
            del counted["worker"]
        yield Target(
            name=name,
            directory_url=directory_url,
            cafile=cafile,
            http01_port=http01_port,
            cpu_pids=lambda: [pid for pids in counted.values() for pid in pids],
            alive=lambda: serve.alive() and _pid_alive(postmaster),
            details={
                "version": _command_output(
                    "git", "-C", str(REPO), "describe", "--always", "--dirty"
                ),
                "shape": shape,
                "processes": {"serve": serve.pid, "postgres": postmaster}
                | {k: v[0] for k, v in counted.items() if k == "worker"}
                | {k: v[0] for k, v in infra.items()},
                "environment": {k: v for k, v in env.items() if k.startswith("ACME_CA_")},
                "argv": argv[1:],
                "cpu_counted": list(counted),
                "logs": str(logs),
            },
            cpu_split=counted,
            infra_split=infra,
        )


def step_ca(workdir: Path) -> contextlib.AbstractContextManager[Target]:
    """Smallstep's step-ca (:mod:`integration.bench.step_ca`, which imports this module)."""
    from integration.bench.step_ca import step_ca as start

    return start(workdir)


#: The targets by the name ``--targets`` uses, in the order they run.
TARGETS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Target]]] = {
    "pebble": pebble,
    "acme_ca": acme_ca,
    "acme_ca-limits": acme_ca_limits,
    "acme_ca-mpic": acme_ca_mpic,
    "acme_ca-test": acme_ca_test,
    "acme_ca-readme": acme_ca_readme,
    "step-ca": step_ca,
}
