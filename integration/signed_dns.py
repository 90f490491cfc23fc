"""DNSSEC-signed test zones, the small authoritative server that serves them, and Debian's
Unbound as the validating resolver in front of it -- shared by ``test_dnssec.py`` (fixed
zones, some deliberately broken) and the production-shape test (a zone whose
``_acme-challenge`` TXT records an ACME client's hook sets, re-signed on every change).

The authoritative server answers on one port, UDP and TCP, on every address it is given
(127.0.0.1, and the main-namespace end of each veth link, so Unbounds in other network
namespaces reach it too).  It never sets AD: it does not validate; Unbound does, with the
zone's DNSKEY as its trust anchor.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import ports

UNBOUND_CANDIDATES = ("/usr/sbin/unbound", "unbound")
APT_TIMEOUT = 600
STARTUP_TIMEOUT = 20.0
#: What Unbound logs once it serves (verbosity 1).
UNBOUND_READY = "start of service"


# --- answering from zones -------------------------------------------------------------------


def origin(zone: dns.zone.Zone) -> dns.name.Name:
    assert zone.origin is not None
    return zone.origin


def _with_sigs(
    zone: dns.zone.Zone, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, dnssec: bool
) -> list[dns.rrset.RRset]:
    """The RRset and, when the query had DO, the RRSIGs covering it."""
    found = zone.get_rrset(name, rdtype)
    if found is None:
        return []
    out = [found]
    if dnssec:
        sigs = zone.get_rrset(name, dns.rdatatype.RRSIG, rdtype)
        if sigs is not None:
            out.append(sigs)
    return out


def zone_for(
    zones: Sequence[dns.zone.Zone], qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.zone.Zone | None:
    """The closest enclosing zone served; DS at a child's apex is the parent's to answer."""
    enclosing = sorted(
        (z for z in zones if qname.is_subdomain(origin(z))),
        key=lambda z: len(origin(z)),
        reverse=True,
    )
    if not enclosing:
        return None
    if rdtype == dns.rdatatype.DS and qname == origin(enclosing[0]) and len(enclosing) > 1:
        return enclosing[1]
    return enclosing[0]


def answer(zones: Sequence[dns.zone.Zone], wire: bytes) -> bytes | None:
    """Answer one query authoritatively: data, NODATA or NXDOMAIN, with NSEC proofs.

    Serves every zone in ``zones`` (e.g. a signed parent and its unsigned child); an unsigned
    zone has no RRSIG or NSEC records, so its answers carry none.
    """
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    reply.flags &= ~dns.flags.RA
    if len(query.question) != 1:
        reply.set_rcode(dns.rcode.FORMERR)
        return reply.to_wire()
    question = query.question[0]
    qname, rdtype = question.name, question.rdtype
    dnssec = bool(query.ednsflags & dns.flags.DO)
    zone = zone_for(zones, qname, rdtype)
    if zone is None:
        reply.set_rcode(dns.rcode.REFUSED)
        return reply.to_wire()
    node = zone.get_node(qname)
    if node is not None and node.get_rdataset(dns.rdataclass.IN, rdtype) is not None:
        reply.answer.extend(_with_sigs(zone, qname, rdtype, dnssec))
    else:
        reply.authority.extend(_with_sigs(zone, origin(zone), dns.rdatatype.SOA, dnssec))
        if node is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            # A small zone: every NSEC proves whatever it can; the resolver picks.
            if dnssec:
                for name in list(zone.nodes):
                    reply.authority.extend(_with_sigs(zone, name, dns.rdatatype.NSEC, True))
        elif dnssec:
            reply.authority.extend(_with_sigs(zone, qname, dns.rdatatype.NSEC, True))
    return reply.to_wire(max_size=65535)


ZoneSource = Sequence[dns.zone.Zone] | Callable[[], Sequence[dns.zone.Zone]]


class AuthoritativeServer:
    """UDP and TCP on one port of each of ``hosts``, in threads, so it outlives any event
    loop.  ``zones`` is the zones served, or a callable giving the current ones (asked per
    query, so a zone re-signed after a change is served at once)."""

    def __init__(self, zones: ZoneSource, hosts: Sequence[str] = ("127.0.0.1",)) -> None:
        current: Callable[[], Sequence[dns.zone.Zone]]
        if callable(zones):
            current = zones
        else:
            fixed = tuple(zones)

            def current() -> Sequence[dns.zone.Zone]:
                return fixed

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = answer(current(), data)
                if reply is None:
                    return
                if len(reply) > 1232:
                    truncated = dns.message.from_wire(reply)
                    truncated.answer.clear()
                    truncated.authority.clear()
                    truncated.flags |= dns.flags.TC
                    reply = truncated.to_wire()
                sock.sendto(reply, self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    size = self.rfile.read(2)
                    if len(size) < 2:
                        return
                    reply = answer(current(), self.rfile.read(int.from_bytes(size, "big")))
                    if reply is None:
                        return
                    self.wfile.write(len(reply).to_bytes(2, "big") + reply)

        first = socketserver.ThreadingUDPServer((hosts[0], 0), Udp)
        self.port: int = first.server_address[1]
        self._servers: list[socketserver.BaseServer] = [first]
        self._servers.append(socketserver.ThreadingTCPServer((hosts[0], self.port), Tcp))
        for host in hosts[1:]:
            self._servers.append(socketserver.ThreadingUDPServer((host, self.port), Udp))
            self._servers.append(socketserver.ThreadingTCPServer((host, self.port), Tcp))
        for server in self._servers:
            server.daemon_threads = True  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


# --- a zone whose TXT records change --------------------------------------------------------


class DynamicSignedZone:
    """``static_text`` plus TXT records set at run time, signed with one ECDSA P-256 key
    (flags 257) and re-signed whole on every change, so its NSEC chain stays right."""

    def __init__(self, zone_origin: str, static_text: str) -> None:
        self.origin = dns.name.from_text(zone_origin)
        self._static = static_text
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._dnskey = dns.dnssec.make_dnskey(
            self._key.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257
        )
        self._txt: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._zones: tuple[dns.zone.Zone, ...] = (self._sign(),)

    @property
    def trust_anchor(self) -> str:
        """Unbound's ``trust-anchor:`` value: the zone's DNSKEY in presentation format."""
        return f"{self.origin.to_text()} DNSKEY {self._dnskey.to_text()}"

    def zones(self) -> Sequence[dns.zone.Zone]:
        return self._zones

    def _sign(self) -> dns.zone.Zone:
        lines = [self._static]
        for host, values in sorted(self._txt.items()):
            lines += [f'{host} 1 IN TXT "{value}"' for value in values]
        zone = dns.zone.from_text("\n".join(lines), origin=self.origin, relativize=False)
        now = dt.datetime.now(dt.UTC)
        dns.dnssec.sign_zone(
            zone,
            keys=[(self._key, self._dnskey)],
            inception=now - dt.timedelta(hours=1),
            expiration=now + dt.timedelta(days=2),
        )
        return zone

    def set_txt(self, host: str, value: str) -> None:
        """Add ``value`` to the TXT RRset at ``host`` (absolute, ending in a dot)."""
        with self._lock:
            self._txt.setdefault(host.lower(), []).append(value)
            self._zones = (self._sign(),)

    def clear_txt(self, host: str) -> None:
        with self._lock:
            self._txt.pop(host.lower(), None)
            self._zones = (self._sign(),)


class ZoneManagement:
    """pebble-challtestsrv's ``/set-txt`` and ``/clear-txt`` verbs over HTTP on 127.0.0.1,
    for the hook scripts of ``integration/clients.py``, changing a
    :class:`DynamicSignedZone`."""

    def __init__(self, zone: DynamicSignedZone) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path == "/set-txt":
                    zone.set_txt(body["host"], body["value"])
                elif self.path == "/clear-txt":
                    zone.clear_txt(body["host"])
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- Unbound --------------------------------------------------------------------------------


def find_unbound() -> str | None:
    for candidate in UNBOUND_CANDIDATES:
        path = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
        if path:
            return path
    return None


def install_unbound() -> str | None:
    """Debian's package; only as root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "install", "-y", "--no-install-recommends", "unbound"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "unbound"],
    ):
        done = subprocess.run(
            command, env=env, capture_output=True, timeout=APT_TIMEOUT, check=False
        )
        if command[1] == "install" and done.returncode == 0:
            break
    return find_unbound()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, for a DNS server."""
    return ports.free_port(udp=True)


def unbound_config(
    directory: Path,
    port: int,
    trust_anchors: Sequence[str],
    stubs: Sequence[tuple[str, str]],
) -> str:
    """A validating Unbound on 127.0.0.1:``port`` that knows only ``stubs`` ((zone, the
    authoritative ``addr@port``)), trusting ``trust_anchors`` (DNSKEY lines); caches for at
    most a second, so a changed record is seen at once."""
    anchors = "".join(f'    trust-anchor: "{anchor}"\n' for anchor in trust_anchors)
    stub_zones = "".join(
        f'\nstub-zone:\n    name: "{zone}"\n    stub-addr: {address}\n' for zone, address in stubs
    )
    return f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    chroot: ""
    username: ""
    directory: "{directory}"
    pidfile: "{directory}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "validator iterator"
{anchors}    val-permissive-mode: no
    qname-minimisation: no
    harden-dnssec-stripped: yes
    local-zone: "test." nodefault
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
    val-bogus-ttl: 1

remote-control:
    control-enable: no
{stub_zones}"""


@contextlib.contextmanager
def running_unbound(
    binary: str, directory: Path, config: str, *, prefix: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """Unbound in the foreground (in a namespace with ``prefix``), its output in
    ``directory/unbound.log``; yields once it logs that it serves, stops it on exit.
    Raises RuntimeError (with the log's tail) when it exits or stays silent."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "unbound.conf").write_text(config)
    log = directory / "unbound.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*prefix, binary, "-d", "-c", str(directory / "unbound.conf")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while UNBOUND_READY not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"unbound (exit {process.poll()}) did not start: "
                    f"{log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
