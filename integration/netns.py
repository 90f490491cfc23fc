"""Network namespaces for the integration tests that need more than one network view:
the remote VAs of ``test_mpic.py`` and the production-shape test (``test_production.py``).

A namespace holds only loopback when made.  As root it is made with ``ip netns add``;
otherwise (``test_mpic`` only) a namespace held open by ``unshare -rn`` and entered with
``nsenter``.  As root a namespace can also get a veth link to the main namespace
(:func:`add_veth`), which gives the processes inside an address outside loopback.

Where namespaces cannot be made, :func:`require_namespaces` skips the test with the reason --
but as root with ``CI=true`` that is a failure: CI must prove what these tests prove.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass

from tests.support.requirements import unavailable


@dataclass
class Namespace:
    """A network namespace with only loopback, and the command prefix that runs in it."""

    name: str
    prefix: list[str]
    holder: subprocess.Popen[str] | None = None

    @property
    def is_named(self) -> bool:
        """Made with ``ip netns add`` (root): ``ip -n NAME`` and veth links work on it."""
        return self.holder is None

    def close(self) -> None:
        """Delete the namespace; its end of every veth link goes with it, and so the pair."""
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(timeout=10)
        else:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def create_namespace(name: str) -> Namespace:
    """``ip netns add`` as root; otherwise ``unshare -rn`` holding a namespace for
    ``nsenter``.  Raises OSError (with the tools' stderr) when neither works."""
    if os.geteuid() == 0 and shutil.which("ip"):
        _ip("netns", "add", name)
        try:
            _ip("-n", name, "link", "set", "lo", "up")
        except OSError:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            raise
        return Namespace(name, ["ip", "netns", "exec", name])
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            raise OSError(f"{tool} is not installed")
    holder = subprocess.Popen(
        ["unshare", "-rn", "sh", "-c", "ip link set lo up && echo up && exec sleep 86400"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert holder.stdout is not None and holder.stderr is not None
    if holder.stdout.readline().strip() != "up":
        holder.kill()
        raise OSError(f"unshare -rn: {holder.stderr.read().strip()}")
    prefix = ["nsenter", f"--target={holder.pid}", "--user", "--net", "--preserve-credentials"]
    return Namespace(name, prefix, holder)


def add_veth(ns: Namespace, host_if: str, host_addr: str, ns_addr: str, prefix: int) -> None:
    """A veth pair between the main namespace (``host_if``, ``host_addr``) and ``ns``
    (``eth0``, ``ns_addr``), both up.  Root only (a named namespace); raises OSError."""
    if not ns.is_named:
        raise OSError(f"{ns.name} is not a named namespace: veth links need root")
    _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
    _ip("addr", "add", f"{host_addr}/{prefix}", "dev", host_if)
    _ip("link", "set", host_if, "up")
    _ip("-n", ns.name, "addr", "add", f"{ns_addr}/{prefix}", "dev", "eth0")
    _ip("-n", ns.name, "link", "set", "eth0", "up")


def namespace_problem(*, veth: bool = False) -> str | None:
    """None when a namespace (with a veth link, if asked) can be made and entered here,
    else why not."""
    probe = f"acme-probe-{os.getpid()}"
    try:
        ns = create_namespace(probe)
    except OSError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        if veth:
            add_veth(ns, f"apr{os.getpid() % 1000000}", "169.254.250.1", "169.254.250.2", 30)
        ran = subprocess.run(
            [*ns.prefix, "true"], capture_output=True, text=True, timeout=10, check=False
        )
        if ran.returncode != 0:
            return f"cannot enter a network namespace: {ran.stderr.strip()}"
    except OSError as exc:
        return f"cannot link a network namespace: {exc}"
    finally:
        ns.close()
    return None


def require_namespaces(*, veth: bool = False, root: bool = False) -> None:
    """Skip the test when namespaces (veth links, root) are not available here; as root
    under ``CI=true`` fail instead."""
    problem = "needs root (ip netns add, veth links)" if root and os.geteuid() != 0 else None
    problem = problem or namespace_problem(veth=veth)
    if problem is not None:
        unavailable(problem)


def listening_socket(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket in the calling process's namespace, to hand to a process in
    another one (a socket keeps the namespace it was made in)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock
