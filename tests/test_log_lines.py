"""Log lines of processes that share one stdout (serve and its worker child, issue 20 target 2):
each event is one ``write`` of the whole line, newline included, so two processes' lines
never interleave (structlog's PrintLogger wrote the newline apart); each names its process."""

from __future__ import annotations

import io
import json
import logging

import structlog

from acme_ca.log import configure_logging


class _Writes(io.StringIO):
    """A stream that records each ``write`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_each_event_is_one_write_of_a_whole_line_naming_its_process() -> None:
    stream = _Writes()
    try:
        configure_logging("json", "info", stream, process="worker")
        structlog.get_logger().info("worker.started", concurrency=8)
        structlog.get_logger().info("metrics.ready", process="serve-said-otherwise")
        logging.getLogger("asyncpg.pool").warning("connection lost")  # a library's line
        assert len(stream.writes) == 3, stream.writes
        assert all(w.endswith("\n") and w.count("\n") == 1 for w in stream.writes)
        events = [json.loads(w) for w in stream.writes]
        assert [e["process"] for e in events] == ["worker", "serve-said-otherwise", "worker"]
        assert events[0]["event"] == "worker.started" and events[0]["concurrency"] == 8
    finally:
        configure_logging("json", "debug")  # the session's configuration (tests/fixtures.py)


def test_without_a_process_name_no_field_is_added() -> None:
    stream = _Writes()
    try:
        configure_logging("json", "info", stream)
        structlog.get_logger().info("server.ready")
        [line] = stream.writes
        assert "process" not in json.loads(line)
    finally:
        configure_logging("json", "debug")
