"""Run as a program (``python -m tests.support.hsm_reopen DIR``): a SoftHSM2 token of its own
under DIR, a :class:`Pkcs11Signer` on it, the token's directory moved away and back, and one
JSON line saying what each signature attempt did.

A process of its own because recovering re-initialises the PKCS#11 module, which would
invalidate the sessions of every other test's signer in a shared pytest process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from acme_ca.ca.pkcs11_signer import Pkcs11Signer, generate_pkcs11_key
from acme_ca.ca.signer import SignerError, verify_signature
from tests.support.softhsm import SoftHsmToken


async def _attempt(signer: Pkcs11Signer) -> str:
    try:
        signature = await signer.sign(b"tbs", "sha256")
    except SignerError as e:
        return f"error: {e}"
    verify_signature(signer.public_key, signature, b"tbs", "sha256")
    return "signed"


async def scenario(root: Path) -> dict[str, list[str]]:
    token = SoftHsmToken.create(root, activate=True)
    await generate_pkcs11_key(token.module, token.label, token.pin, "reopen", "ec-p256")
    signer = await Pkcs11Signer.open(token.module, token.label, "reopen", token.pin)
    results: dict[str, list[str]] = {"before": [await _attempt(signer)]}
    (token_dir,) = list(token.token_dir.iterdir())
    away = root / "token-away"
    os.rename(token_dir, away)
    results["absent"] = [await _attempt(signer) for _ in range(3)]
    os.rename(away, token_dir)
    results["returned"] = [await _attempt(signer) for _ in range(2)]
    await signer.aclose()
    try:  # a module that does not answer in time: here, no time at all
        await Pkcs11Signer.open(token.module, token.label, "reopen", token.pin, sign_timeout=0)
        results["hung"] = ["opened"]
    except SignerError as e:
        results["hung"] = [f"error: {e}"]
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(Path(sys.argv[1])))))
