"""The test tree's one rule of shape: no test module imports another (issue 18).

What two test modules share lives in ``tests/support/`` (or, for the integration tests, in a
non-``test_`` helper module of ``integration/``).  Importing a test module runs its
module-level code and re-collects its fixtures, and ties two test files' private helpers
together; the imports are read from the source with :mod:`ast`, so a violation fails here
with the offender's file and line."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREES = ("tests", "integration")


def _is_test_module(module: str) -> bool:
    return module.rsplit(".", maxsplit=1)[-1].startswith("test_")


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from tests import test_x`` imports the module test_x
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_modules_importing_a_test_module() -> None:
    offenders = []
    for top in TREES:
        for path in sorted((REPO / top).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, module in _imported_modules(tree):
                if module.split(".")[0] in TREES and _is_test_module(module):
                    offenders.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not offenders, "test modules import other test modules:\n" + "\n".join(offenders)


def test_the_rule_sees_every_import_form() -> None:
    source = (
        "import tests.test_a\n"
        "from tests.test_b import x\n"
        "from tests import test_c\n"
        "def f():\n    from integration.test_d import y\n"
        "from tests.support.jws import JwsClient\n"
    )
    flagged = [m for _, m in _imported_modules(ast.parse(source)) if _is_test_module(m)]
    assert flagged == ["tests.test_a", "tests.test_b", "tests.test_c", "integration.test_d"]
