"""``python -m integration.bench interop``: the interop suite's client flows, timed against
Pebble and against ``acme-ca serve --test`` in one run (issue 21, item 11: a client's suite
must not take longer on us than on Pebble).

Both servers are started side by side, each as a client project's CI starts it:

* Pebble: Debian's ``pebble`` over HTTPS with a throwaway TLS certificate, beside a
  ``pebble-challtestsrv`` that is its DNS server, its http-01 responder (on Pebble's
  ``httpPort``) and the management API the hooks call;
* acme_ca: ``acme-ca serve --test`` at its test-mode defaults (its embedded PostgreSQL, the
  challenge test server built in), started by :func:`integration.testmode_server.start_test_mode`
  exactly as the interop suite starts it, but without the suite's ``Retry-After`` override.

Both get the same Pebble knobs (``PEBBLE_VA_NOSLEEP=1``, ``PEBBLE_WFE_NONCEREJECT=0``), which
both read. The clients are the interop suite's own (:mod:`integration.interop_clients`: certbot,
lego, dehydrated, uacme, driven by the same classes and hook scripts), and each runs the
suite's flows: the four issuance cases, lego's tls-alpn-01 case, renewal of the http-01
ECDSA certificate and revocation of the renewed one. Per client, a flow runs on Pebble then
on acme_ca, so a change in the machine's load falls on both alike.

This is a benchmark, not a test: it prints the wall times (per flow, per client, in total,
and each server's start-up) with the load average, and exits non-zero only when a flow
failed. The figures are published in ``docs/testing-with-acme-ca.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from integration.bench.servers import (
    CHALLTESTSRV,
    PEBBLE,
    READY_TIMEOUT,
    BenchSetupError,
    Service,
    _directory_answers,
    _wait,
    deb_version,
    pebble_config,
    pebble_missing,
    start_service,
)
from integration.clients import write_hooks
from integration.processes import CaProcesses, base_env
from integration.testmode_server import (
    PEM_CHAIN,
    RunningTestCa,
    http_get,
    mgmt_post,
    start_test_mode,
)
from tests.support.ports import free_port

#: The knobs both servers get (both read Pebble's variables), as a client project's CI sets
#: them: no validation sleep, no injected badNonce.
KNOBS = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
TARGETS = ("pebble", "acme_ca")
CLIENT_NAMES = ("certbot", "lego", "dehydrated", "uacme")
#: The interop suite's flows (integration/test_interop.py), in its order: name -> (challenge,
#: key type, names shape) for issuance; "renew" and "revoke" act on the http-01 ECDSA
#: certificate; "tlsalpn01" is lego's alone.
ISSUE_FLOWS = {
    "http01-rsa2048-3names": ("http-01", "rsa", "3names"),
    "http01-ecdsa-p256": ("http-01", "ecdsa", "1name"),
    "dns01-rsa2048-name-and-wildcard": ("dns-01", "rsa", "name+wildcard"),
    "dns01-ecdsa-p256-wildcard": ("dns-01", "ecdsa", "wildcard"),
}
FLOWS = (*ISSUE_FLOWS, "tlsalpn01", "renew", "revoke")
#: ``Run.startup`` key: acme_ca's start until its signing worker can sign.
WORKER_READY = "acme_ca_worker"
#: The flows of ``--minimal`` (the CI test): one issuance per client.
MINIMAL_FLOWS = ("http01-ecdsa-p256",)


class _Processes(CaProcesses):
    """:class:`CaProcesses` that keeps the servers' log tails out of the report (the logs
    stay in the work directory)."""

    def close(self) -> None:
        for ca in self.started:
            ca.kill()
            ca.close_files()


def _progress(message: str) -> None:
    print(f"[interop-walltime {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ Pebble


@dataclass
class PebbleCa:
    """Pebble and its pebble-challtestsrv, with the attributes the interop suite's clients
    read of a :class:`RunningTestCa` (directory, trust, ports, management verbs)."""

    proc: Service
    challsrv: Service
    directory_url: str
    cafile: Path
    http01_port: int
    tlsalpn01_port: int
    dns_port: int
    management_port: int
    pebble_management_url: str
    startup_seconds: float

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def mgmt(self, path: str, body: dict[str, Any]) -> None:
        status, text = mgmt_post(self.management_url + path, body)
        assert status == 200, f"POST {path} {body}: {status} {text!r}"

    def root_pem(self, directory: Path) -> Path:
        """Pebble's root, from ``/roots/0`` on its (HTTPS) management listener."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        status, ctype, body = http_get(self.pebble_management_url + "/roots/0", context)
        assert status == 200 and ctype == PEM_CHAIN, (status, ctype, body)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "root-pebble.pem"
        path.write_bytes(body)
        return path


@contextlib.contextmanager
def pebble(base: Path) -> Iterator[PebbleCa]:
    """Pebble with a pebble-challtestsrv as its DNS, http-01 responder and management API,
    as Pebble's own docker-compose arranges them; stopped on exit."""
    problem = pebble_missing()
    if problem is not None:
        raise BenchSetupError(problem)
    logs = base / "logs"
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        dns_port, management, http01_port = free_port(), free_port(), free_port()
        challsrv = start_service(
            stack,
            "pebble-challtestsrv",
            [
                CHALLTESTSRV,
                "-dns01",
                f"127.0.0.1:{dns_port}",
                # 127.0.0.1 only: certbot and lego bind 127.0.0.2 on the same port.
                "-http01",
                f"127.0.0.1:{http01_port}",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{management}",
                "-defaultIPv6",
                "",
            ],
            env=base_env(),
            log_dir=logs,
        )
        port, pebble_management = free_port(), free_port()
        ca_path, config_path, config = pebble_config(base, port, pebble_management, http01_port)
        server = start_service(
            stack,
            "pebble",
            [PEBBLE, "-config", str(config_path), "-dnsserver", f"127.0.0.1:{dns_port}"],
            env=base_env(**KNOBS),
            log_dir=logs,
        )
        directory_url = f"https://127.0.0.1:{port}/dir"
        _wait(
            "pebble",
            _directory_answers(directory_url, ca_path),
            [server, challsrv],
            READY_TIMEOUT,
        )
        yield PebbleCa(
            proc=server,
            challsrv=challsrv,
            directory_url=directory_url,
            cafile=ca_path,
            http01_port=http01_port,
            tlsalpn01_port=int(config["pebble"]["tlsPort"]),
            dns_port=dns_port,
            management_port=management,
            pebble_management_url=f"https://127.0.0.1:{pebble_management}",
            startup_seconds=time.monotonic() - started,
        )


# ------------------------------------------------------------------------------ running


@dataclass
class FlowResult:
    target: str
    client: str
    flow: str
    seconds: float
    error: str | None = None
    #: The whole failure (command, output, log tails): in the JSON, not on the terminal.
    detail: str | None = field(default=None, repr=False)


@dataclass
class Run:
    """Everything measured in one run."""

    machine: dict[str, Any]
    startup: dict[str, float] = field(default_factory=dict)
    flows: list[FlowResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def seconds(self, target: str, client: str | None = None) -> float:
        return sum(
            f.seconds
            for f in self.flows
            if f.target == target and (client is None or f.client == client)
        )

    @property
    def failed(self) -> list[FlowResult]:
        return [f for f in self.flows if f.error is not None]


#: The exceptions a client flow ends with when it fails: the interop classes assert, and the
#: helpers they call fail or skip as pytest does.
FLOW_ERRORS = (AssertionError, OSError, pytest.fail.Exception, pytest.skip.Exception)


def _timed(
    run: Run, target: str, client: str, flow: str, action: Callable[[], object]
) -> object | None:
    started = time.monotonic()
    try:
        result = action()
    except FLOW_ERRORS as exc:
        error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        seconds = time.monotonic() - started
        run.flows.append(FlowResult(target, client, flow, seconds, error, str(exc)))
        _progress(f"{target} {client} {flow}: FAILED after {seconds:.2f} s: {error[:300]}")
        return None
    seconds = time.monotonic() - started
    run.flows.append(FlowResult(target, client, flow, seconds))
    _progress(f"{target} {client} {flow}: {seconds:.2f} s")
    return result


def _renew(client: Any, issued: Any) -> Any:
    """The client's renewal, which must have got a new certificate (a client that decided
    not to renew would be timed doing nothing)."""
    renewed = client.renew(issued, "http-01")
    assert renewed.serial != issued.serial, "the client did not renew (same serial)"
    return renewed


def run_clients(
    run: Run,
    servers: dict[str, Any],
    workdir: Path,
    clients: Sequence[str],
    flows: Sequence[str],
) -> None:
    """The interop suite's flows for each client, each flow on every target in turn."""
    from integration import interop_clients as interop

    for client_name in clients:
        binary = interop.BINARIES[client_name]
        if binary is None or not Path(binary).exists():
            run.skipped[client_name] = f"{client_name} is not installed"
            _progress(run.skipped[client_name])
            continue
        kept: dict[str, tuple[Any, Any]] = {}  # target -> (client, issued) for renew/revoke
        for flow in flows:
            if flow == "tlsalpn01" and client_name != "lego":
                continue
            for target, server in servers.items():
                work = workdir / "clients" / target / client_name / flow
                cls = interop.CLIENT_CLASSES[client_name]
                if flow in ISSUE_FLOWS or flow == "tlsalpn01":
                    challenge, key_type, shape = ISSUE_FLOWS.get(
                        flow, ("tls-alpn-01", "ecdsa", "1name")
                    )
                    client = cls(server, work)
                    names = interop.names_for(shape, interop.domain(flow, client_name))
                    issue = functools.partial(client.issue, names, key_type, challenge)
                    issued = _timed(run, target, client_name, flow, issue)
                    if issued is not None and flow == "http01-ecdsa-p256":
                        kept[target] = (client, issued)
                elif target in kept:
                    client, issued = kept[target]
                    if flow == "renew":
                        renew = functools.partial(_renew, client, issued)
                        renewed = _timed(run, target, client_name, flow, renew)
                        if renewed is not None:
                            kept[target] = (client, renewed)
                    else:
                        _timed(
                            run, target, client_name, flow, functools.partial(client.revoke, issued)
                        )


def interop_server(kind: str, ca: Any, base: Path) -> Any:
    """The interop suite's :class:`InteropServer` around a running server: its hook scripts
    (pointing at the server's management API), root and uacme trust directory."""
    from integration.interop_clients import InteropServer

    uacme_certs = base / f"uacme-certs-{kind}"
    uacme_certs.mkdir(parents=True)
    shutil.copy(ca.cafile, uacme_certs / "ca-certificates.crt")
    return InteropServer(
        kind=kind,
        # PebbleCa has every attribute the clients read of a RunningTestCa.
        ca=cast(RunningTestCa, ca),
        root=ca.root_pem(base / "roots"),
        hooks=write_hooks(base / f"hooks-{kind}", ca.management_url),
        uacme_certs=uacme_certs,
    )


def _git_describe() -> str | None:
    """The commit measured (``--dirty`` when the tree has changes), None outside a checkout."""
    import subprocess

    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).parents[2]), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def machine(workdir: Path, note: str | None) -> dict[str, Any]:
    def version(command: Sequence[str]) -> str | None:
        with contextlib.suppress(OSError):
            import subprocess

            out = subprocess.run(
                list(command), capture_output=True, text=True, timeout=30, check=False
            )
            text = (out.stdout or out.stderr).strip().splitlines()
            return text[0] if text else None
        return None

    from integration.clients import CERTBOT
    from integration.interop_clients import LEGO, UACME

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "pebble": deb_version("pebble"),
        "certbot": version([CERTBOT, "--version"]),
        "lego": deb_version("lego") or (version([LEGO, "--version"]) if LEGO else None),
        "dehydrated": deb_version("dehydrated"),
        "uacme": version([UACME, "--version"]) if UACME else None,
        "acme_ca_commit": _git_describe(),
        "workdir": str(workdir),
        "note": note,
    }


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def report(run: Run, clients: Sequence[str]) -> str:
    """The Markdown table: wall seconds per client and in total, Pebble beside acme_ca."""
    m = run.machine
    lines = [
        "# Interop suite wall time: Pebble vs `acme-ca serve --test`",
        "",
        f"- date: {m['date']}; {m['cpu_count']} CPUs; load average at start "
        + " / ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
        + "; at end "
        + " / ".join(f"{x:.2f}" for x in m.get("loadavg_at_end", ()))
        + f"; acme_ca {m['acme_ca_commit']}",
        f"- clients: certbot {m['certbot']}, lego {m['lego']}, dehydrated {m['dehydrated']}, "
        f"{m['uacme']}; pebble {m['pebble']}; both with "
        + ", ".join(f"{k}={v}" for k, v in KNOBS.items()),
        *([f"- note: {m['note']}"] if m.get("note") else []),
        f"- start-up: Pebble {_seconds(run.startup.get('pebble'))} to the directory "
        f"answering; acme_ca {_seconds(run.startup.get('acme_ca'))} to the directory, "
        f"{_seconds(run.startup.get(WORKER_READY))} to its signing worker ready (the flows "
        "start after both)",
        "",
        "| client | flows | Pebble s | acme_ca s | acme_ca / Pebble |",
        "|---|---:|---:|---:|---:|",
    ]
    for client in clients:
        if client in run.skipped:
            lines.append(f"| {client} | skipped: {run.skipped[client]} | | | |")
            continue
        count = len({f.flow for f in run.flows if f.client == client})
        pebble_s, ours = run.seconds("pebble", client), run.seconds("acme_ca", client)
        ratio = f"{ours / pebble_s:.2f}" if pebble_s else "—"
        lines.append(f"| {client} | {count} | {pebble_s:.1f} | {ours:.1f} | {ratio} |")
    pebble_s, ours = run.seconds("pebble"), run.seconds("acme_ca")
    ratio = f"{ours / pebble_s:.2f}" if pebble_s else "—"
    lines.append(f"| **total** | {len(run.flows) // 2} | {pebble_s:.1f} | {ours:.1f} | {ratio} |")
    if "pebble" in run.startup and WORKER_READY in run.startup:
        pebble_all = pebble_s + run.startup["pebble"]
        ours_all = ours + run.startup[WORKER_READY]
        lines.append(
            f"| **total with start-up** | | {pebble_all:.1f} | {ours_all:.1f} "
            f"| {ours_all / pebble_all:.2f} |"
        )
    lines += [
        "",
        "Per flow (s):",
        "",
        "| client | flow | Pebble | acme_ca |",
        "|---|---|---:|---:|",
    ]
    by_key = {(f.target, f.client, f.flow): f for f in run.flows}
    seen: list[tuple[str, str]] = []
    for f in run.flows:
        if (f.client, f.flow) not in seen:
            seen.append((f.client, f.flow))
    for client, flow in seen:
        cells = []
        for target in TARGETS:
            got = by_key.get((target, client, flow))
            cells.append(
                "—" if got is None else f"{got.seconds:.2f}" + (" FAILED" if got.error else "")
            )
        lines.append(f"| {client} | {flow} | {cells[0]} | {cells[1]} |")
    if run.failed:
        lines += ["", "Failed:", ""]
        lines += [f"- {f.target} {f.client} {f.flow}: {f.error}" for f in run.failed]
    met = not run.failed and pebble_s > 0 and ours <= pebble_s
    lines += ["", f"Target (acme_ca total ≤ Pebble total): {'met' if met else 'NOT met'}."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m integration.bench interop",
        description="The interop suite's client flows against Pebble and `acme-ca serve "
        "--test` in one run: wall time per client and in total.",
    )
    parser.add_argument(
        "--clients",
        default=",".join(CLIENT_NAMES),
        help=f"comma-separated (default {','.join(CLIENT_NAMES)})",
    )
    parser.add_argument(
        "--flows",
        default=",".join(FLOWS),
        help=f"comma-separated (default all: {','.join(FLOWS)})",
    )
    parser.add_argument(
        "--minimal",
        action="store_true",
        help=f"only {','.join(MINIMAL_FLOWS)} (the CI test's smoke run)",
    )
    parser.add_argument(
        "--note", help="a line for the report's header (what was measured, e.g. a patch)"
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="write the raw figures")
    parser.add_argument("--markdown", type=Path, dest="markdown_path", help="write the table")
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and client state under DIR (default: temporary)"
    )
    args = parser.parse_args(argv)
    args.clients = [c for c in args.clients.split(",") if c]
    args.flows = list(MINIMAL_FLOWS) if args.minimal else [f for f in args.flows.split(",") if f]
    unknown = [c for c in args.clients if c not in CLIENT_NAMES]
    unknown += [f for f in args.flows if f not in FLOWS]
    if unknown:
        parser.error(f"unknown client(s) or flow(s): {', '.join(unknown)}")
    if {"renew", "revoke"} & set(args.flows) and "http01-ecdsa-p256" not in args.flows:
        parser.error("renew and revoke act on the http01-ecdsa-p256 certificate: add that flow")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        workdir = args.workdir.resolve() / dt.datetime.now(dt.UTC).strftime("run-%Y%m%dT%H%M%SZ")
        workdir.mkdir(parents=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="acme-ca-interop-bench-"))
        workdir.chmod(0o755)  # the embedded PostgreSQL's unprivileged user reads through it
    run = Run(machine(workdir, args.note))
    _progress(f"work directory {workdir}")
    with contextlib.ExitStack() as stack:
        processes = stack.enter_context(_Processes(workdir / "acme_ca" / "logs"))
        pebble_ca = stack.enter_context(pebble(workdir / "pebble"))
        run.startup["pebble"] = pebble_ca.startup_seconds
        started = time.monotonic()
        ours = start_test_mode(
            processes,
            "serve-test",
            workdir / "acme_ca" / "home",
            env=KNOBS,
            # tls-alpn-01 is answered by lego --tls itself, as in the interop suite.
            challsrv_tlsalpn01="off",
        )
        run.startup["acme_ca"] = ours.startup_seconds
        # SIGTERM on the way out, also on errors: the server stops its embedded PostgreSQL.
        stack.callback(ours.proc.stop)
        # The directory answers before the in-process signing worker can sign: a finalize
        # meanwhile waits for it.  Start-up counts until it can; the flows start after.
        ours.proc.wait_event("worker.started", timeout=READY_TIMEOUT)
        run.startup[WORKER_READY] = time.monotonic() - started
        servers = {
            "pebble": interop_server("pebble", pebble_ca, workdir / "pebble"),
            "acme_ca": interop_server("acme_ca", ours, workdir / "acme_ca"),
        }
        run_clients(run, servers, workdir, args.clients, args.flows)
    run.machine["loadavg_at_end"] = os.getloadavg()
    text = report(run, args.clients)
    print(text)
    if args.markdown_path is not None:
        args.markdown_path.write_text(text + "\n")
    if args.json_path is not None:
        raw = {
            "machine": run.machine,
            "startup": run.startup,
            "skipped": run.skipped,
            "flows": [vars(f) for f in run.flows],
        }
        args.json_path.write_text(json.dumps(raw, indent=1, default=str) + "\n")
    if args.workdir is None and not run.failed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        _progress(f"logs kept in {workdir}")
    return 1 if run.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
