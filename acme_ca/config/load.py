"""Loading: defaults < TOML file < ``ACME_CA_*`` env < CLI flags, each value coerced to its
key's type, then checked once (:meth:`Config.validate`).  Nothing re-reads configuration
per request."""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from acme_ca.config.base import ConfigError, split_host_port
from acme_ca.config.keys import ENV_PREFIX, Config
from acme_ca.config.pebble import (
    DETERMINISTIC,
    PEBBLE_ENV,
    PEBBLE_TRUE,
    PebbleConfigError,
    pebble_validation_sleep,
    read_pebble_config,
)
from acme_ca.profiles import ProfileSpecError, parse_profile_specs


def field_types() -> dict[str, object]:
    """Each key's type, resolved (the annotations are strings)."""
    return typing.get_type_hints(Config)


def coerce(name: str, raw: Any, hint: Any) -> Any:
    """Turn a TOML or environment value into the field's type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if raw is None or raw == "":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(name, raw, inner)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {raw!r}")
    if hint is int:
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if hint is Path:
        return Path(str(raw))
    if hint is str:
        if not isinstance(raw, str | int | float):
            raise ConfigError(f"{name}: expected a string")
        return str(raw)
    if origin is list:
        if isinstance(raw, str):
            return [item.strip() for item in raw.split(",") if item.strip()]
        if not isinstance(raw, list):
            raise ConfigError(f"{name}: expected a list")
        return [str(item) for item in raw]
    raise ConfigError(f"{name}: unsupported type {hint!r}")  # pragma: no cover


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the :class:`Config`: defaults, then the TOML file, then env, then ``overrides``."""
    env = os.environ if env is None else env
    hints = field_types()
    known = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}  # coerced per field type, checked by Config.validate()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for name, raw in data.items():
            if name not in known:
                raise ConfigError(f"{path}: unknown key {name!r}")
            if name == "profiles":
                try:
                    values[name] = parse_profile_specs(raw)
                except ProfileSpecError as exc:
                    raise ConfigError(f"{path}: {exc}") from None
                continue
            values[name] = coerce(name, raw, hints[name])
    for name in known - {"profiles"}:
        raw_env = env.get(ENV_PREFIX + name.upper())
        if raw_env is not None:
            values[name] = coerce(name, raw_env, hints[name])
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = coerce(name, raw, hints[name])
    if values.get("test_mode"):
        values = {**test_mode_defaults(values, env), **values}
    return replace(Config(), **values).validate()


def test_mode_defaults(explicit: Mapping[str, object], env: Mapping[str, str]) -> dict[str, object]:
    """What ``serve --test`` changes, unless set explicitly: resolve through the challenge
    test server, validate http-01 on its port (5002) and tls-alpn-01 on its tls-alpn-01
    listener's (5001, also when that listener is off: Pebble's tlsPort), reach loopback, skip
    DNSSEC (the test DNS server signs nothing), and read Pebble's knob variables."""
    hints = field_types()
    dns = explicit.get("challsrv_dns", Config.challsrv_dns)
    derived: dict[str, object] = {
        "dns_resolver": dns,
        "http01_port": 5002,
        "allow_loopback_validation": True,
        "dnssec": "off",
        "special_use_names": True,
    }
    tlsalpn01 = explicit.get("challsrv_tlsalpn01", Config.challsrv_tlsalpn01)
    listener = tlsalpn01 if isinstance(tlsalpn01, str) and tlsalpn01 != "off" else None
    derived["tlsalpn01_port"] = split_host_port(listener)[1] if listener else 5001
    pebble_path = explicit.get("pebble_config")
    if isinstance(pebble_path, Path):
        try:
            pebble = read_pebble_config(pebble_path, frozenset(hints))
        except PebbleConfigError as exc:
            raise ConfigError(str(exc)) from None
        for name, raw in pebble.settings.items():
            if name not in explicit:
                derived[name] = coerce(name, raw, hints[name])
    https01 = explicit.get("challsrv_https01", Config.challsrv_https01)
    if isinstance(https01, str) and https01 != "off":
        derived["https01_port"] = split_host_port(https01)[1]
    preset = DETERMINISTIC if explicit.get("deterministic") else {}
    derived.update({name: value for name, value in preset.items() if name not in explicit})
    for variable, name in PEBBLE_ENV.items():
        raw = env.get(variable)
        if raw is None or name in explicit or name in preset:
            continue
        if variable == "PEBBLE_VA_ALWAYS_VALID":
            derived[name] = raw.strip() in PEBBLE_TRUE
        else:
            derived[name] = coerce(variable, raw, hints[name])
    sleep = pebble_validation_sleep(env)
    skip_sleep = "validation_delay_seconds" in explicit or "validation_delay_seconds" in preset
    if sleep is not None and not skip_sleep:
        derived["validation_delay_seconds"] = sleep
    return derived
