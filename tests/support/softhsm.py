"""A private SoftHSM2 token for tests that need a real PKCS#11 module.

Plain helpers, no fixtures, so any conftest or test module can build its own fixtures on them.

SoftHSM2 reads ``SOFTHSM2_CONF`` and scans its token directory only in ``C_Initialize``, and
python-pkcs11 initialises each module once per process.  A token created later is invisible
until the module is re-initialised, which invalidates every open session on every token.  So
use one token per test process: :func:`shared_token` creates it on first call and returns the
same one afterwards; give each test its own key labels instead of its own token.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pkcs11

#: Where distributions put the module; ``SOFTHSM2_MODULE`` in the environment wins.
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

DEFAULT_LABEL = "acme-ca-test"
DEFAULT_PIN = "1234"
DEFAULT_SO_PIN = "12345678"


def find_module() -> str | None:
    """Path of libsofthsm2.so, resolved, or None."""
    override = os.environ.get("SOFTHSM2_MODULE")
    for candidate in (override,) if override else MODULE_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return os.path.realpath(candidate)
    return None


def softhsm_available() -> bool:
    """True when both the module and ``softhsm2-util`` are installed (for ``skipif``)."""
    return find_module() is not None and shutil.which("softhsm2-util") is not None


@dataclass(frozen=True)
class SoftHsmToken:
    """One initialised token in a private SoftHSM2 config under a test's directory."""

    module: str
    label: str
    pin: str
    so_pin: str
    conf_path: Path
    token_dir: Path

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        label: str = DEFAULT_LABEL,
        pin: str = DEFAULT_PIN,
        so_pin: str = DEFAULT_SO_PIN,
        activate: bool = True,
    ) -> SoftHsmToken:
        """Write ``root/softhsm2.conf``, initialise a token in ``root/tokens``.

        With ``activate`` (the default) this process is pointed at the new config: see
        :meth:`activate` for what that costs.  Without it, use :meth:`env` for subprocesses.
        """
        module = find_module()
        if module is None or shutil.which("softhsm2-util") is None:
            raise RuntimeError("SoftHSM2 is not installed (apt-get install softhsm2)")
        root.mkdir(parents=True, exist_ok=True)
        token_dir = root / "tokens"
        token_dir.mkdir(exist_ok=True)
        conf_path = root / "softhsm2.conf"
        conf_path.write_text(
            f"directories.tokendir = {token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )
        token = cls(module, label, pin, so_pin, conf_path, token_dir)
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                so_pin,
            ],
            env={**os.environ, **token.env()},
            check=True,
            capture_output=True,
            text=True,
        )
        if activate:
            token.activate()
        return token

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (``acme-ca``, ``pkcs11-tool``) that should see the token."""
        return {"SOFTHSM2_CONF": str(self.conf_path)}

    def activate(self) -> None:
        """Point this process's SoftHSM2 at this token's config.

        Sets ``SOFTHSM2_CONF`` and re-initialises the module if python-pkcs11 has loaded it,
        which invalidates every open session: call it before opening any signer.
        """
        global _active_conf  # noqa: PLW0603 - the module's config is process-wide too
        os.environ["SOFTHSM2_CONF"] = str(self.conf_path)
        if _active_conf == self.conf_path:
            return
        # Someone may have loaded the module under an older config: start it afresh.
        pkcs11.lib(self.module).reinitialize()
        _active_conf = self.conf_path


_active_conf: Path | None = None
_shared: SoftHsmToken | None = None
_shared_lock = threading.Lock()


def shared_token(root: Path) -> SoftHsmToken:
    """The one token of this test process, created under ``root`` on the first call.

    Later calls ignore ``root`` and return the same token, so every fixture agrees on it.
    """
    global _shared  # noqa: PLW0603 - one token per process is the point
    with _shared_lock:
        if _shared is None:
            _shared = SoftHsmToken.create(root)
        return _shared
