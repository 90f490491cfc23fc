"""acme_ca: an ACME (RFC 8555) issuing CA.

The one thing done here, before any submodule imports structlog: structlog imports rich, when
it is installed (import-linter brings it into our environments), for its console renderer's
tracebacks, which acme_ca never uses (exceptions are formatted by ``format_exc_info``, plain,
before any renderer: :mod:`acme_ca.log`).  That import was ~0.1 s of CPU at every process
start on a loaded machine, about a tenth of ``serve --test --ephemeral``'s imports (issue 21
item 8).  Only structlog's own import sees rich missing; a later ``import rich`` works.
"""

from __future__ import annotations

import sys


def _structlog_without_rich() -> None:
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_structlog_without_rich()
