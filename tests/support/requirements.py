"""What a test needs from the machine (a package, root, a kernel feature): where it is
missing the test is skipped with the reason, except as root under ``CI=true``, where
``scripts/bootstrap.sh test`` installs every package the suite uses and a skip would hide a
broken set-up (CI must prove what the test proves)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def ci_must_run(*, even_unprivileged: bool = False) -> bool:
    """True under ``CI=true`` as root (or as anyone with ``even_unprivileged``)."""
    return os.environ.get("CI") == "true" and (even_unprivileged or os.geteuid() == 0)


def unavailable(reason: str, *, even_unprivileged: bool = False) -> NoReturn:
    """Skip for ``reason``, or fail where :func:`ci_must_run`."""
    if ci_must_run(even_unprivileged=even_unprivileged):
        who = "" if even_unprivileged else "as root "
        pytest.fail(f"running {who}under CI=true, yet {reason}")
    pytest.skip(reason)
