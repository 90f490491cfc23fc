"""What every part of the configuration shares, and rooms may import without the Config: its
error, the HOST:PORT parser, the default challenge types (va/registry.py's default too) and
the field helper the key declarations use."""

from __future__ import annotations

from dataclasses import field
from typing import Any

DEFAULT_CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")
"""The validation methods offered unless ``challenge_types`` says otherwise."""


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def split_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as host and port; ConfigError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def doc_key(default: Any, doc: str, **kwargs: Any) -> Any:
    """A configuration key: a dataclass field with its default and its operator doc."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc}, **kwargs)
    return field(default=default, metadata={"doc": doc}, **kwargs)
