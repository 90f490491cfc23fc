"""How a process of ours starts a Python child on its own code, whatever directory it runs in.

``python -m mod`` and ``python -c code`` put the current directory first on the child's
``sys.path``: a child started from an operator's directory would import any ``acme_ca/``,
``cryptography/`` or ``json.py`` found there before ours, and the signing worker child holds
the CA keys.  :func:`own_python` starts the child with ``-P`` (Python 3.11: no such entry)
and, when the ``acme_ca`` running here was imported through that same implicit entry (``python
-m acme_ca`` from a checkout), puts its directory explicitly on ``PYTHONPATH``, so the child
always runs the code its parent runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import acme_ca


def _package_root() -> str:
    """The directory this ``acme_ca`` package was imported from."""
    return str(Path(acme_ca.__file__).resolve().parent.parent)


def _explicit_path() -> list[str]:
    """``sys.path`` without the implicit first entry a ``-P`` child will not have."""
    entries = sys.path if sys.flags.safe_path else sys.path[1:]
    return [str(Path(p).resolve()) for p in entries if p]


def own_python(*args: str) -> tuple[list[str], dict[str, str]]:
    """``argv`` (this interpreter, ``-P``, then ``args``) and the environment for a child
    that imports the same ``acme_ca`` as this process and nothing from its directory."""
    env = dict(os.environ)
    root = _package_root()
    if root not in _explicit_path():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-P", *args], env
