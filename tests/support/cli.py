"""The real ``acme-ca`` console entry point, run as a subprocess on a test's database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def run_cli(dsn: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``python -m acme_ca ARGS`` with only this test's database and home: (status, out, err)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACME_CA_")}
    env.update(ACME_CA_DATABASE_URL=dsn, ACME_CA_HOME=str(tmp_path / "home"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "acme_ca",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
