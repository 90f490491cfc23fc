"""The PKCS#11 signer survives its token going away and coming back (issue 17 item 4): while
the SoftHSM2 token is absent every signature fails with a :class:`SignerError` naming the
cause (the worker backs off on it), and once the token is back the signer re-initialises the
module, logs in again and signs with fresh sessions, without a restart.  A signature that
does not return within ``hsm_sign_timeout_seconds`` fails the attempt the same way, and a
wait for a free session is bounded by ``hsm_session_wait_seconds`` (item 3: bounded waits).

Runs :mod:`tests.support.hsm_reopen` in a process of its own (see there why).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from acme_ca import metrics
from acme_ca.ca.pkcs11_signer import Pkcs11Signer, generate_pkcs11_key
from acme_ca.ca.signer import SignerError
from tests.support.softhsm import shared_token, softhsm_available

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


async def test_wait_for_a_free_hsm_session_is_bounded(tmp_path: Path) -> None:
    """One session and twenty signatures at once, each allowed to wait 1 ms for the session:
    those that would wait longer fail at once with a SignerError naming the bound (counted as
    a signing error; the worker backs off on it) instead of queueing without end, and the
    session is back afterwards."""
    token = shared_token(tmp_path / "softhsm")
    label = f"test-session-wait-{uuid.uuid4().hex[:8]}"
    await generate_pkcs11_key(token.module, token.label, token.pin, label, "rsa2048")
    labels = {"backend": "pkcs11", "key": label, "type": "SignerError"}
    signer = await Pkcs11Signer.open(
        token.module, token.label, label, token.pin, pool_size=1, session_wait=0.001
    )
    try:
        results = await asyncio.gather(
            *(signer.sign(b"%d" % i, "sha256") for i in range(20)), return_exceptions=True
        )
        waited = [r for r in results if isinstance(r, BaseException)]
        assert waited and any(isinstance(r, bytes) for r in results), results
        assert all(
            isinstance(e, SignerError) and "free within 0.001 s" in str(e) for e in waited
        ), waited
        assert metrics.REGISTRY.get_sample_value("signature_errors_total", labels) == len(waited)
        assert isinstance(await signer.sign(b"after", "sha256"), bytes)
    finally:
        await signer.aclose()
