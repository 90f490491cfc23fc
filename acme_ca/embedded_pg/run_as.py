"""Who runs the server when the CA runs as root: PostgreSQL refuses to run as root.

The owner of an existing cluster keeps it; a new cluster goes to ``postgres`` if that user
exists, else to a system user ``acme-ca-pg`` created with ``useradd``. Whether that user can
reach a path is asked of the kernel as that user (ACLs included), not guessed from modes.
"""

from __future__ import annotations

import contextlib
import pwd
import shutil
import subprocess
from pathlib import Path

from acme_ca.embedded_pg.process import EmbeddedPostgresError, Logger, RunAs

FALLBACK_SYSTEM_USER = "acme-ca-pg"


def server_user_for_new_cluster(log: Logger) -> RunAs:
    """``postgres`` if it exists, else our own system user, created when first needed."""
    for name in ("postgres", FALLBACK_SYSTEM_USER):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if useradd is None:
        raise EmbeddedPostgresError("running as root but useradd is missing; cannot drop root")
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [
            useradd,
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            FALLBACK_SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    try:
        entry = pwd.getpwnam(FALLBACK_SYSTEM_USER)
    except KeyError:
        raise EmbeddedPostgresError(
            f"could not create system user {FALLBACK_SYSTEM_USER}: {proc.stderr.strip()}"
        ) from None
    log.info("embedded_postgres.user_created", user=FALLBACK_SYSTEM_USER)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def run_as_for_existing(cluster: Path, log: Logger) -> RunAs:
    """An existing cluster keeps running as whoever owns it."""
    try:
        uid = cluster.stat().st_uid
    except FileNotFoundError:
        return server_user_for_new_cluster(log)
    if uid == 0:
        return server_user_for_new_cluster(log)
    entry = pwd.getpwuid(uid)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def user_can_reach(run_as: RunAs, path: Path) -> bool:
    """Ask the kernel, as ``run_as``, whether ``path`` can be traversed (ACLs included)."""
    test = shutil.which("test", path="/usr/bin:/bin")
    if test is None:
        return False
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [test, "-x", str(path)],
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=[],
        cwd="/",
        check=False,
        timeout=30,
    )
    return proc.returncode == 0
