"""structlog set-up (acme_ca/log.py): loggers cached on first use only where a process
configures logging once and runs until it exits (issue 20), never where logging is configured
again and again, as the tests do."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
import structlog

from acme_ca import cli
from acme_ca.config import ConfigError
from acme_ca.log import configure_logging
from acme_ca.main import serve as serve_module


def _events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


def test_loggers_follow_a_new_configuration_unless_cached() -> None:
    """Without caching a logger used once still writes where (and at the level) the next
    configuration says; a cached one keeps the configuration of its first event, which is
    why only the long-running commands ask for it."""
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("json", "debug", first)
        log = structlog.get_logger()
        log.info("one")
        configure_logging("json", "info", second)
        log.info("two")
        log.debug("filtered")
        assert (_events(first), _events(second)) == (["one"], ["two"])

        cached_first, cached_second = io.StringIO(), io.StringIO()
        configure_logging("json", "debug", cached_first, cache_loggers=True)
        cached = structlog.get_logger()
        cached.info("one")
        configure_logging("json", "info", cached_second)
        cached.info("two")
        cached.debug("kept")
        assert _events(cached_first) == ["one", "two", "kept"]
        assert _events(cached_second) == []
    finally:
        configure_logging("json", "debug")  # the session's configuration (tests/fixtures.py)


@pytest.mark.parametrize("command", ["serve", "worker", "remote-va"])
def test_cli_caches_loggers_only_when_it_is_the_process_command_line(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """``acme-ca serve|worker|remote-va`` run as the process (the console script: no argv)
    cache their loggers; ``main([...])`` called in a process that goes on (tests) does not.
    Each command stops just after configuring logging: remote-va for want of its settings,
    serve and worker because their coroutine is replaced by one that refuses to start."""
    calls: list[dict[str, Any]] = []

    def record(*args: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConfigError("not started by this test")

    monkeypatch.setattr(cli, "configure_logging", record)
    monkeypatch.setattr(serve_module, "serve", refuse)
    monkeypatch.setattr(serve_module, "work", refuse)
    monkeypatch.setattr(sys, "argv", ["acme-ca", command])
    assert cli.main([command]) == 2
    assert cli.main() == 2
    assert [c.get("cache_loggers", False) for c in calls] == [False, True]
