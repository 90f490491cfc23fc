"""structlog set-up: JSON lines for operators, each event carrying the bound request context.

``merge_contextvars`` runs first, so ``request_id``, ``account_id`` and ``order_id`` bound by
the web layer (or ``job_id`` by the worker) appear on every event of that request or job.
Each event is written with one ``write`` (message and newline together), so the lines of
processes sharing one stdout (serve and its worker child) never interleave; ``process``
names the writer on every line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    fmt: str = "json",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    cache_loggers: bool = False,
    process: str | None = None,
) -> None:
    """Configure structlog once per process; ``process`` (serve, worker) is added to every
    event that does not name a process itself.

    ``cache_loggers``: each logger is built once, on its first event, instead of on every
    call (structlog's ``cache_logger_on_first_use``; a few microseconds per event, debug
    events filtered out included: issue 20).  Only for a process that configures logging
    once and then runs until it exits (``serve``, ``worker``, ``remote-va``); a cached logger
    keeps the configuration it was first used under, so where logging is configured again
    (tests: levels, streams, captured logs) it must stay off.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *_naming(process),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        # WriteLogger: message and newline in one write (PrintLogger makes two).
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=cache_loggers,
    )
    # Libraries log through the standard library (asyncpg retrying its pool floor while the
    # database is down, aiohttp): the same JSON lines, traceback inside the event, not bare
    # tracebacks on stderr.  Warnings and above only.
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *_naming(process),
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(logging.WARNING, _LEVELS[level.lower()]))


def _naming(process: str | None) -> list[Processor]:
    """``process=<name>`` on every event that does not name one itself."""
    if process is None:
        return []

    def name(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("process", process)
        return event

    return [name]


def get_logger(name: str) -> Any:
    """A logger that names its module in every event (``component`` key)."""
    return structlog.get_logger(component=name)
