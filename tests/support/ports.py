"""Free loopback ports for servers a test starts on a port it must name in advance.

A port found by binding port 0 comes from the kernel's ephemeral range, the same range every
later ``bind(("127.0.0.1", 0))`` draws from: between the moment the test releases it and the
moment the server binds it, an in-process listener of the server itself (a CT test log, the
status listener) may be handed the same port, and the server fails with "address already in
use" (CI met exactly that). So the ports handed out here come from below the ephemeral range,
where the kernel never picks on its own, are checked free for TCP (and UDP, for DNS) at the
moment, and are never handed out twice by one test process.

The suite runs on pytest-xdist workers (scripts/test.sh), separate processes that cannot see
each other's hand-outs: each worker draws only ports of its own residue class modulo the
number of workers, so two workers never pick the same port between the check and the bind.
Processes a worker starts inherit its environment and so its class.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

#: The lowest port handed out: above the registered services tests might clash with.
LOWEST = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_slot() -> tuple[int, int]:
    """``(index, count)`` of this pytest-xdist worker (``PYTEST_XDIST_WORKER`` ``gwN`` and
    ``PYTEST_XDIST_WORKER_COUNT``); ``(0, 1)`` outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        count = 1
    if count > 1 and name.startswith("gw") and name[2:].isdigit():
        return int(name[2:]) % count, count
    return 0, 1


def free_port(*, udp: bool = False) -> int:
    """A loopback port free for TCP (and for UDP too with ``udp``), outside the ephemeral
    range, of this worker's class (:func:`worker_slot`), not handed out before by this
    process."""
    index, count = worker_slot()
    lowest, highest = -(-(LOWEST - index) // count), (_ephemeral_start() - 1 - index) // count
    for _ in range(200):
        port = random.randint(lowest, highest) * count + index
        if port in _handed_out or not _bindable(port, socket.SOCK_STREAM):
            continue
        if udp and not _bindable(port, socket.SOCK_DGRAM):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(
        f"no free loopback port between {LOWEST} and {_ephemeral_start() - 1} "
        f"(worker {index} of {count})"
    )
