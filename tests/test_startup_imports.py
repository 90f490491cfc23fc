"""What a server start imports (issue 21 item 8: ``serve --test --ephemeral`` ready within
1.5 s, of which imports are the largest part): modules the server needs only later, or never,
stay out.  Each check runs in a fresh interpreter, as ``acme-ca`` does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(RESULT))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_serve_imports_neither_rich_nor_badkeys() -> None:
    """rich: structlog's console tracebacks, unused (acme_ca/__init__.py); badkeys and gmpy2:
    loaded on the first key check (ra/keys.py)."""
    result = _modules_after(
        "import sys, acme_ca.cli, acme_ca.main.serve, structlog.dev\n"
        "RESULT = {'loaded': sorted(m for m in ('rich', 'badkeys', 'gmpy2') if m in sys.modules),"
        " 'structlog_rich': structlog.dev.rich is not None}"
    )
    assert result == {"loaded": [], "structlog_rich": False}


def test_rich_stays_importable_after_acme_ca() -> None:
    pytest.importorskip("rich")
    result = _modules_after(
        "import acme_ca.cli, rich.console\nRESULT = {'console': rich.console.Console.__name__}"
    )
    assert result == {"console": "Console"}
