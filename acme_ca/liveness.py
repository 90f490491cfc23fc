"""Lease holders named ``<hostname>:<pid>``, and whether one is provably gone.

A process that holds a lease (an issuance job, a validation) writes its name with it.  A
process on the same host can prove such a holder dead: its pid no longer exists.  It then
takes the holder's work over at once instead of waiting for the lease to lapse.  Holders on
other hosts cannot be checked; their leases are left to lapse.  Processes sharing a hostname
must share a PID namespace (containers: one hostname each).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable


def holder_name() -> str:
    """This process's name as a lease holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


def host_prefix(holder: str) -> str:
    """``<hostname>:`` of a holder name: what names the holders on its host start with."""
    return holder.rpartition(":")[0] + ":"


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def dead_on_this_host(holders: Iterable[str], me: str) -> list[str]:
    """The ``holders`` on ``me``'s host whose process is gone (never ``me``)."""
    prefix = host_prefix(me)
    dead = []
    for holder in holders:
        pid = holder.rpartition(":")[2]
        if holder == me or not holder.startswith(prefix) or not pid.isdigit():
            continue
        if not process_exists(int(pid)):
            dead.append(holder)
    return dead
