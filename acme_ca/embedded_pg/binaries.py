"""Which PostgreSQL server binaries to run: the machine's first, then pgserver's bundled ones.

The machine's PostgreSQL is preferred (``initdb``/``pg_ctl`` on ``PATH``, else the newest
``/usr/lib/postgresql/*/bin``), otherwise the binaries bundled in the ``pgserver`` wheel. An
existing cluster is always served by binaries of its own major version (``PG_VERSION``), so a
cluster made with pgserver's binaries keeps working after Debian's package is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from acme_ca.embedded_pg.process import EmbeddedPostgresError, clean_env

SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
"""Where Debian installs each major version's binaries (``<root>/<major>/bin``)."""

_REQUIRED_EXES = ("initdb", "pg_ctl", "postgres", "pg_isready", "createdb")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgBinaries:
    """A directory of PostgreSQL server binaries and the version they are."""

    bin_dir: Path
    source: str
    """``path``, ``system`` (``/usr/lib/postgresql``), ``pgserver`` or ``explicit``."""
    version: str
    major: int

    def exe(self, name: str) -> str:
        """Full path of one program, so no PATH lookup can pick a different version."""
        return str(self.bin_dir / name)


def pgserver_bin_dir() -> Path | None:
    """The ``pginstall/bin`` of the pgserver wheel, found without importing it (its import is slow
    and noisy)."""
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "initdb").is_file():
            return candidate
    return None


def _major_sort_key(path: Path) -> tuple[int, ...]:
    """Sort ``/usr/lib/postgresql/<major>`` numerically, so 16 beats 9.6."""
    try:
        return tuple(int(part) for part in path.name.split("."))
    except ValueError:
        return (-1,)


def _candidate_bin_dirs(search_path: str | None, system_root: Path) -> list[tuple[str, Path]]:
    """Binary directories in order of preference, deduplicated by real path."""
    found: list[tuple[str, Path]] = []
    initdb = shutil.which("initdb", path=search_path)
    if initdb is not None:
        found.append(("path", Path(initdb).resolve().parent))
    if system_root.is_dir():
        for version_dir in sorted(system_root.iterdir(), key=_major_sort_key, reverse=True):
            if (version_dir / "bin").is_dir():
                found.append(("system", version_dir / "bin"))
    bundled = pgserver_bin_dir()
    if bundled is not None:
        found.append(("pgserver", bundled))
    unique: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for source, bin_dir in found:
        real = bin_dir.resolve()
        if real not in seen:
            seen.add(real)
            unique.append((source, real))
    return unique


def probe(source: str, bin_dir: Path) -> PgBinaries | None:
    """Return the binaries in ``bin_dir`` if the set is complete and runs, else None."""
    if not all(os.access(bin_dir / exe, os.X_OK) for exe in _REQUIRED_EXES):
        return None
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [str(bin_dir / "pg_ctl"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env=clean_env(),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    if match is None:
        return None
    return PgBinaries(bin_dir=bin_dir, source=source, version=out.strip(), major=int(match[1]))


def find_postgres_binaries(
    required_major: int | None = None,
    *,
    search_path: str | None = None,
    system_root: Path | None = None,
) -> PgBinaries:
    """Pick the PostgreSQL binaries to run: the machine's first, then pgserver's bundled ones.

    ``required_major`` restricts the choice to one major version, because a data directory can
    only be served by the major version that created it. ``search_path`` replaces ``$PATH`` and
    ``system_root`` replaces ``/usr/lib/postgresql`` (tests use both to hide the machine's).
    """
    root = system_root if system_root is not None else SYSTEM_PG_ROOT
    considered: list[str] = []
    for source, bin_dir in _candidate_bin_dirs(search_path, root):
        binaries = probe(source, bin_dir)
        if binaries is None:
            considered.append(f"{bin_dir} ({source}): incomplete or not runnable")
            continue
        if required_major is not None and binaries.major != required_major:
            considered.append(f"{bin_dir} ({source}): PostgreSQL {binaries.major}")
            continue
        return binaries
    wanted = f"PostgreSQL {required_major}" if required_major is not None else "PostgreSQL"
    detail = "; ".join(considered) if considered else "none found"
    raise EmbeddedPostgresError(
        f"no usable {wanted} server binaries (considered: {detail}); install Debian's "
        "'postgresql' package or the 'pgserver' Python package"
    )
