"""``serve --test --ephemeral``'s spare hierarchy: the next run's, made after this run is ready.

A new hierarchy (RSA and ECDSA keys, the CA certificates) was the longest step of an
ephemeral start (~0.4 s, issue 21 item 8: ready within 1.5 s).  So, as the run's database
has a spare (:data:`acme_ca.db.database.EPHEMERAL_SPARE`), the hierarchy has one: once a run
is ready it starts a child process at the lowest CPU priority that writes the NEXT run's
hierarchy into ``$ACME_CA_HOME/ephemeral-spare``, and the next start moves that directory
into its throwaway home instead of generating.  The first start, and a start that finds no
spare, generate as before.

Every run still gets keys and certificates that no other run has seen:

- a spare is written under a name of its own (``.ephemeral-spare-building-<pid>``) and
  renamed to ``ephemeral-spare`` only when whole, stamp last, so a builder killed part-way
  never leaves anything a start would take (the next builder removes what it left);
- a start claims the spare by renaming it to a name of its own before reading it, so two
  starts on one home never both take it, and a claimed spare is never put back;
- the stamp (``spare.json``) says what the spare was made for: the hierarchy settings
  (status URLs and policy OID in the certificates, test mode's ``PEBBLE_CHAIN_LENGTH`` and
  ``PEBBLE_ALTERNATE_ROOTS`` shape) and a digest of the code that writes hierarchies; a
  spare made for anything else, or stamped in the future (the clock went back), is discarded.

Keys in an HSM (``pkcs11_module``) get no spare.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import structlog

from acme_ca.ca.settings import HierarchySettings
from acme_ca.own_python import own_python

log = structlog.get_logger(component="acme_ca.testsrv.ephemeral_spare")

#: The spare, whole, in ``$ACME_CA_HOME``: ``pki/`` (a hierarchy as ``acme-ca init`` writes
#: it) and :data:`STAMP`.
SPARE: Final = "ephemeral-spare"
STAMP: Final = "spare.json"
#: A spare being written, by the builder whose process id follows.
BUILDING: Final = ".ephemeral-spare-building-"
#: A spare a start has taken (``<pid>-<random>``), on its way into the start's throwaway home.
CLAIMED: Final = ".ephemeral-spare-claimed-"
#: Raised when a spare changes what it holds; older stamps are discarded.
FORMAT: Final = 1
#: What writes a hierarchy: a spare made by other code than this is discarded.
_CODE: Final = (
    "ca/hierarchy.py",
    "ca/hierarchy_chains.py",
    "ca/der.py",
    "ca/issuers_file.py",
    "ca/signer.py",
    "br.py",
)
#: A stamp this far in the future means the clock went back since the spare was made: its
#: certificates' notBefore would be in the future.
_CLOCK_SLACK_SECONDS: Final = 60.0
#: The builder's exit status when a spare for its settings was there already.
_ALREADY: Final = 3
#: How long a stopping server waits for a spare still being made before it kills the builder
#: (the next start then generates).  A spare takes about a second of CPU.
FINISH_WAIT_SECONDS: Final = 10.0


def _code_digest() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes() + b"\0")
    return digest.hexdigest()


def spare_stamp(settings: HierarchySettings) -> dict[str, Any] | None:
    """What a spare for ``settings`` is stamped with (its ``created`` aside); None: these
    settings get no spare (HSM keys)."""
    if settings.hsm.module is not None:
        return None
    return {
        "format": FORMAT,
        "code": _code_digest(),
        "status_base_url": settings.status_base_url,
        "policy_oid": settings.policy_oid,
        "alternate_roots": settings.alternate_roots,
        "chain_length": settings.chain_length,
    }


def _read_stamp(spare: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((spare / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _mismatch(found: dict[str, Any] | None, wanted: dict[str, Any]) -> str | None:
    """Why a spare stamped ``found`` cannot serve a start that wants ``wanted``; None: it can."""
    if found is None:
        return "no readable stamp"
    differing = sorted(k for k in wanted if found.get(k) != wanted[k])
    if differing:
        return "made for other settings: " + ", ".join(differing)
    created = found.get("created")
    if not isinstance(created, int | float):
        return "no creation time"
    if created > time.time() + _CLOCK_SLACK_SECONDS:
        return "stamped in the future (the clock went back)"
    return None


class ClaimedSpare:
    """A spare this start has taken (renamed to a name of its own, stamp checked)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def move_into(self, home: Path) -> None:
        """Make its hierarchy ``home/pki`` (renamed; copied when ``home`` is on another
        filesystem), then remove what is left of it."""
        source, target = self.path / "pki", home / "pki"
        try:
            os.rename(source, target)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.copytree(source, target)  # modes kept: keys/ 0700, key files 0600
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def claim_spare(home: Path, settings: HierarchySettings) -> ClaimedSpare | None:
    """Take ``home``'s spare for this start; None when there is none (first start, a
    concurrent start took it) or it was made for other settings (then it is removed)."""
    wanted = spare_stamp(settings)
    if wanted is None:
        return None
    claimed = home / f"{CLAIMED}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(home / SPARE, claimed)
    except FileNotFoundError:
        return None
    except OSError as e:  # an unreadable home: generate as without a spare
        log.warning("testmode.ephemeral_spare_unusable", error=str(e))
        return None
    spare = ClaimedSpare(claimed)
    reason = _mismatch(_read_stamp(claimed), wanted)
    if reason is None and not (claimed / "pki" / "issuers.toml").is_file():
        reason = "no issuers.toml"
    if reason is not None:
        spare.discard()
        log.warning("testmode.ephemeral_spare_discarded", reason=reason)
        return None
    return spare


# --------------------------------------------------------------------------- the builder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(home: Path) -> list[str]:
    """Remove spares being built or claimed by processes that are gone (killed part-way)."""
    removed = []
    for entry in home.iterdir():
        for prefix in (BUILDING, CLAIMED):
            if entry.name.startswith(prefix):
                pid = entry.name.removeprefix(prefix).split("-", 1)[0]
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
    return removed


def build_spare(home: Path, settings: HierarchySettings) -> bool:
    """Write a spare for ``settings`` into ``home`` unless one is there already; True when
    this call made it.  Runs in the builder child (:func:`main`)."""
    from acme_ca.ca.hierarchy import init_hierarchy

    wanted = spare_stamp(settings)
    if wanted is None:
        return False
    _remove_leftovers(home)
    if _mismatch(_read_stamp(home / SPARE), wanted) is None:
        return False  # a concurrent run made one for these settings
    building = home / f"{BUILDING}{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(mode=0o700)
    try:
        asyncio.run(init_hierarchy(replace(settings, pki_path=building / "pki")))
        stamp = json.dumps({**wanted, "created": time.time()}).encode()
        _write_durably(building / STAMP, stamp)
        existing = home / SPARE
        if existing.exists():  # made for other settings: this start's settings win
            stale = home / f"{CLAIMED}{os.getpid()}-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(existing, stale)
                shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(building, existing)
        except OSError as e:  # another builder was first: its spare stays, ours goes
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(building, ignore_errors=True)
            return False
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return True


def _write_durably(path: Path, data: bytes) -> None:
    from acme_ca.localca import write_new

    write_new(path, data, 0o600)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def make_next_spare(ready: asyncio.Event, home: Path, settings: HierarchySettings) -> bool:
    """Once ``ready`` is set, make the next run's spare for ``settings`` in ``home`` in the
    builder child; True when a spare is there.  Cancelled, it kills the child (the next start
    then generates, and removes what the child left)."""
    await ready.wait()
    if spare_stamp(settings) is None:
        return False
    started = time.monotonic()
    argv, env = own_python("-m", __name__, str(home))
    child = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log.info("testmode.ephemeral_spare_building", home=str(home), pid=child.pid)
    try:
        _, err = await child.communicate(pickle.dumps(settings))
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        log.warning("testmode.ephemeral_spare_abandoned", pid=child.pid)
        raise
    if child.returncode not in (0, _ALREADY):
        log.warning(
            "testmode.ephemeral_spare_failed",
            returncode=child.returncode,
            error=err.decode(errors="replace")[-2000:],
        )
        return False
    log.info(
        "testmode.ephemeral_spare_made",
        seconds=round(time.monotonic() - started, 3),
        made=child.returncode == 0,
    )
    return True


async def finish_next_spare(
    ready: asyncio.Event, making: asyncio.Task[bool], wait_seconds: float = FINISH_WAIT_SECONDS
) -> None:
    """At the end of a run: wait up to ``wait_seconds`` for :func:`make_next_spare`'s child (so a
    quick start and stop still leaves a spare), then kill it; when the run never became
    ready nothing was started and nothing is waited for."""
    if not ready.is_set():
        making.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(making, wait_seconds)


def _lowest_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def main(argv: list[str]) -> int:
    """The builder child: ``python -m acme_ca.testsrv.ephemeral_spare HOME``, the hierarchy
    settings pickled on stdin by :func:`make_next_spare` (this process's own parent)."""
    _lowest_priority()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the server
    settings = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - written by our parent
    if not isinstance(settings, HierarchySettings):
        raise TypeError(f"expected HierarchySettings on stdin, got {type(settings).__name__}")
    return 0 if build_spare(Path(argv[0]), settings) else _ALREADY


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
