"""The PKCS#11 signer survives its token going away and coming back (issue 17 item 4): while
the SoftHSM2 token is absent every signature fails with a :class:`SignerError` naming the
cause (the worker backs off on it), and once the token is back the signer re-initialises the
module, logs in again and signs with fresh sessions, without a restart.  A signature that
does not return within ``hsm_sign_timeout_seconds`` fails the attempt the same way.

Runs :mod:`tests.support.hsm_reopen` in a process of its own (see there why).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.softhsm import softhsm_available

pytestmark = pytest.mark.skipif(not softhsm_available(), reason="SoftHSM2 is not installed")


def test_signer_reopens_sessions_when_the_token_returns(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.hsm_reopen", str(tmp_path / "hsm")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["before"] == ["signed"]
    assert all(r.startswith("error: ") for r in results["absent"]), results
    assert "ObjectHandleInvalid" in results["absent"][0]
    assert "unavailable" in results["absent"][1], "a reopen while absent must say so"
    assert results["returned"] == ["signed", "signed"], results
    assert results["hung"][0].startswith("error: ") and "did not return" in results["hung"][0]
