"""Issue 18's "Done when" limits, kept in CI: no module of ``acme_ca/`` over 600 lines (a
module past that is doing two rooms' work), ``dict[str, Any]`` only at the JSON edges, at
most 20 in ``acme_ca/`` (protocol shapes are the typed classes of ``acme/messages.py`` and
``acme/resources.py``), and the front end reading through the read-only protocols of
``wfe/reads.py``, never a read-write repository of ``db/`` (its own nonces aside)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "acme_ca"
MAX_MODULE_LINES = 600
MAX_UNTYPED_DICTS = 20


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_over_600_lines() -> None:
    too_long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_dict_str_any_only_at_the_json_edges() -> None:
    uses = [
        f"{p.relative_to(PACKAGE.parent)}:{number}"
        for p in _modules()
        for number, line in enumerate(p.read_text().splitlines(), 1)
        if "dict[str, Any]" in line
    ]
    assert len(uses) <= MAX_UNTYPED_DICTS, uses


#: The one read-write repository the front end holds: its nonces are its own state.
FRONT_END_REPOSITORIES = {"NonceRepository"}


def test_front_end_holds_no_read_write_repository() -> None:
    found = []
    for path in sorted((PACKAGE / "wfe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("acme_ca.db"):
                found += [
                    f"{path.name}:{node.lineno} {alias.name}"
                    for alias in node.names
                    if alias.name.endswith("Repository")
                    and alias.name not in FRONT_END_REPOSITORIES
                ]
    assert not found, found
