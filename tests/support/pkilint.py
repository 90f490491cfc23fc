"""pkilint's command-line linters, run in the test process."""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path


def pkilint(tool: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """pkilint's command ``tool`` (a console script of the venv) with ``args``: the entry
    point that script calls, run in this process (as integration/clients.pkilint_findings
    does), with its exit code and output.  A new interpreter per document cost 1-2 s of
    imports on a loaded machine; the command line, validators and exit code are the same."""
    (entry,) = entry_points(group="console_scripts", name=tool.name)
    main: Callable[[list[str]], int] = entry.load()
    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse, as the command line would exit
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess([str(tool), *argv], code, out.getvalue(), err.getvalue())
