"""Children of our processes run our code, never modules from the directory they start in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import acme_ca
from acme_ca.main.worker_process import CHILD_ARGS
from acme_ca.own_python import own_python

ROOT = Path(acme_ca.__file__).resolve().parent.parent
REPORT = (
    "import acme_ca, json as j, sys; "
    "print(j.dumps({'acme_ca': acme_ca.__file__, 'json': j.__file__, 'safe': sys.flags.safe_path}))"
)


def _decoys(directory: Path) -> None:
    """What an operator's directory might hold: another acme_ca and a json.py."""
    (directory / "acme_ca").mkdir()
    (directory / "acme_ca" / "__init__.py").write_text("raise SystemExit('decoy acme_ca')\n")
    (directory / "json.py").write_text("raise SystemExit('decoy json')\n")


def test_child_imports_nothing_from_its_working_directory(tmp_path: Path) -> None:
    _decoys(tmp_path)
    argv, env = own_python("-c", REPORT)
    assert argv[:2] == [sys.executable, "-P"]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert Path(seen["acme_ca"]).resolve() == Path(acme_ca.__file__).resolve()
    assert not Path(seen["json"]).resolve().is_relative_to(tmp_path.resolve())
    assert seen["safe"] == 1


def test_child_of_a_checkout_run_from_its_own_directory_finds_the_same_code(
    tmp_path: Path,
) -> None:
    """``python -m acme_ca`` from a checkout that is not installed: acme_ca came from the
    parent's implicit first path entry, which a ``-P`` child lacks, so the checkout goes on
    the child's PYTHONPATH.  A minimal checkout (``-S``: no site-packages, no editable
    finder, so nothing but the checkout provides acme_ca)."""
    checkout = tmp_path / "checkout"
    (checkout / "acme_ca").mkdir(parents=True)
    (checkout / "acme_ca" / "__init__.py").write_text("")
    (checkout / "acme_ca" / "own_python.py").write_text(
        (ROOT / "acme_ca" / "own_python.py").read_text()
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _decoys(elsewhere)
    parent = (
        "import subprocess, sys; from acme_ca.own_python import own_python; "
        f"argv, env = own_python('-S', '-c', {REPORT!r}); "
        f"sys.stdout.write(subprocess.run(argv, env=env, cwd={str(elsewhere)!r}, "
        "capture_output=True, text=True, check=True).stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", parent],
        cwd=checkout,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert Path(seen["acme_ca"]).resolve() == (checkout / "acme_ca" / "__init__.py").resolve()
    assert not Path(seen["json"]).resolve().is_relative_to(elsewhere.resolve())


def test_serve_starts_its_worker_child_through_own_python() -> None:
    """The signing worker child (CA keys) is one of those children: ``python -P -m acme_ca
    worker --serve-child``."""
    argv, _ = own_python(*CHILD_ARGS)
    assert argv == [sys.executable, "-P", "-m", "acme_ca", "worker", "--serve-child"]
