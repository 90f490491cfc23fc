"""CPU time of process trees, read from ``/proc`` (Linux only).

Why a tree and not a pid: a server's cost includes the processes it forks (PostgreSQL's
backends come and go with connections).  A process's CPU lives in ``/proc/<pid>/stat``:
``utime``/``stime`` for itself (all its threads, live and exited), ``cutime``/``cstime`` for
the children it has reaped (and, recursively, what those had reaped).  So the CPU a tree has
ever used is, over the processes alive in it now, the sum of all four fields: a live child is
counted once by itself (its parent's ``cutime`` does not include it until it is reaped), an
exited child once in the ``cutime`` of the parent that reaped it.  A delta between two
snapshots of the same tree is therefore the CPU the tree used in between, including backends
that started and exited in the meantime.

What escapes: a child whose parent died before reaping it is reparented outside the tree, and
a process that exits but is not reaped yet (a zombie) still shows its own times.  Neither
happens to the servers measured here in steady state.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this module needs (times in clock ticks)."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    starttime: int

    @property
    def own_ticks(self) -> int:
        """Ticks of the process itself (all its threads)."""
        return self.utime + self.stime

    @property
    def tree_ticks(self) -> int:
        """Ticks of the process and of every descendant it has reaped."""
        return self.utime + self.stime + self.cutime + self.cstime


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The process's stat line, or None when it has gone (or was never there)."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) is in parentheses and may itself contain spaces and parentheses.
    _, sep, rest = raw.rpartition(")")
    if not sep:
        return None
    fields = rest.split()
    # fields[0] is field 3 (state): field n of proc(5) is fields[n - 3].
    try:
        return ProcStat(
            pid=pid,
            ppid=int(fields[1]),
            utime=int(fields[11]),
            stime=int(fields[12]),
            cutime=int(fields[13]),
            cstime=int(fields[14]),
            starttime=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def all_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process visible in ``/proc`` now."""
    found: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name), proc)
            if stat is not None:
                found[stat.pid] = stat
    return found


def tree(roots: Iterable[int], stats: Mapping[int, ProcStat]) -> set[int]:
    """The live pids of ``roots`` and all their descendants (roots that vanished left out)."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    members: set[int] = set()
    pending = [pid for pid in roots if pid in stats]
    while pending:
        pid = pending.pop()
        if pid in members:
            continue
        members.add(pid)
        pending.extend(children.get(pid, ()))
    return members


def _ticks(roots: Iterable[int], stats: Mapping[int, ProcStat]) -> int:
    return sum(stats[pid].tree_ticks for pid in tree(roots, stats))


def cpu_seconds(pids: Iterable[int], proc: Path = PROC) -> float:
    """CPU seconds used so far by the processes ``pids`` and all their descendants, live or
    reaped (each process counted once even if both it and an ancestor are listed; processes
    that vanished count as 0)."""
    return _ticks(pids, all_stats(proc)) / CLK_TCK


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU ticks of named groups of process trees at one moment, with the pids seen, so a
    later snapshot of the same groups gives what each group used in between."""

    ticks: Mapping[str, int]
    pids: Mapping[str, frozenset[int]]


def snapshot(groups: Mapping[str, Iterable[int]], proc: Path = PROC) -> CpuSnapshot:
    """Read every group's tree from one scan of ``/proc`` (a pid in two groups' trees is
    charged to the first group only)."""
    stats = all_stats(proc)
    ticks: dict[str, int] = {}
    pids: dict[str, frozenset[int]] = {}
    claimed: set[int] = set()
    for name, roots in groups.items():
        members = tree(roots, stats) - claimed
        claimed |= members
        ticks[name] = sum(stats[pid].tree_ticks for pid in members)
        pids[name] = frozenset(members)
    return CpuSnapshot(ticks, pids)


def delta_seconds(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots.  A group whose root vanished in
    between loses what it had used before, so its delta can come out negative: callers
    check that the server is still alive rather than trust such a figure."""
    return {
        name: (after.ticks.get(name, 0) - before_ticks) / CLK_TCK
        for name, before_ticks in before.ticks.items()
    }
