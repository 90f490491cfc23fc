"""Pebble compatibility for test mode: its JSON configuration file (``serve --test
--pebble-config FILE``), its ``PEBBLE_*`` environment variables and the ``--deterministic``
preset that overrides them (all applied by :func:`acme_ca.config.load.test_mode_defaults`).

A client project's CI starts Pebble with ``-config test/config/pebble-config.json``; handing
the same file to test mode gives the same ports, TLS certificate, retry hints and External
Account Binding.  The ``"pebble"`` object's members are matched case-insensitively, as Go's
``encoding/json`` fills Pebble's config struct.  Each member we support becomes one of our
configuration keys (:data:`PEBBLE_KEYS`); the rest are named in :attr:`PebbleConfig.ignored`
so ``serve`` can log them.  ``externalAccountMACKeys`` (``{kid: base64url HMAC key}``) are not
configuration keys: the account authority takes them as test mode's shared EAB keys, each of
which binds any number of accounts, as in Pebble.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from acme_ca.acme.b64 import b64url_decode

#: Pebble's knob variables, honoured in test mode so harnesses written for Pebble work as is
#: (PEBBLE_VA_NOSLEEP and PEBBLE_VA_SLEEPTIME together give validation_delay_seconds).
PEBBLE_ENV = {
    "PEBBLE_WFE_NONCEREJECT": "nonce_reject_percent",
    "PEBBLE_AUTHZREUSE": "authz_reuse_percent",
    "PEBBLE_VA_ALWAYS_VALID": "always_valid",
    "PEBBLE_WFE_ORDERS_PER_PAGE": "orders_page_size",
    "PEBBLE_ALTERNATE_ROOTS": "alternate_roots",
    "PEBBLE_CHAIN_LENGTH": "chain_length",
}
#: Pebble sleeps up to this long before each validation unless PEBBLE_VA_NOSLEEP is set
#: (va.go defaultSleepTime); PEBBLE_VA_SLEEPTIME changes it.
PEBBLE_MAX_VALIDATION_SLEEP = 5
#: The spellings Pebble's va.go takes as true for PEBBLE_VA_NOSLEEP/PEBBLE_VA_ALWAYS_VALID.
PEBBLE_TRUE = ("1", "true", "True", "TRUE")
#: ``--deterministic``: no nonce rejection, no sleep, authorizations always reused.
DETERMINISTIC: dict[str, object] = {
    "nonce_reject_percent": 0,
    "validation_delay_seconds": 0,
    "authz_reuse_percent": 100,
}


def pebble_validation_sleep(env: Mapping[str, str]) -> int | None:
    """Pebble's sleep from PEBBLE_VA_NOSLEEP and PEBBLE_VA_SLEEPTIME: 0 when NOSLEEP is
    true, else SLEEPTIME (a positive integer) or Pebble's default; None when neither is
    set (acme_ca does not sleep unless asked, a documented difference)."""
    nosleep, sleeptime = env.get("PEBBLE_VA_NOSLEEP"), env.get("PEBBLE_VA_SLEEPTIME")
    if nosleep is not None and nosleep.strip() in PEBBLE_TRUE:
        return 0
    if nosleep is None and sleeptime is None:
        return None
    if sleeptime is not None and sleeptime.strip().isdigit() and int(sleeptime) >= 1:
        return int(sleeptime)
    return PEBBLE_MAX_VALIDATION_SLEEP


#: Pebble config member -> our configuration key.
PEBBLE_KEYS: dict[str, str] = {
    "listenAddress": "listen",
    "managementListenAddress": "management_listen",
    "httpPort": "http01_port",
    "tlsPort": "tlsalpn01_port",
    "certificate": "tls_cert",
    "privateKey": "tls_key",
    "externalAccountBindingRequired": "external_account_required",
    "caaIdentities": "caa_identities",
}
#: Members read into something other than one configuration key.
_SPECIAL = {"externalaccountmackeys", "retryafter"}


class PebbleConfigError(ValueError):
    """The file is not a Pebble configuration we can use."""


@dataclass(frozen=True)
class PebbleConfig:
    """What a Pebble configuration file says, in our terms."""

    settings: dict[str, object] = field(default_factory=dict)
    """Our configuration keys and their values (lower precedence than TOML, env and flags)."""
    eab_keys: dict[str, bytes] = field(default_factory=dict)
    """``externalAccountMACKeys``, decoded: test mode's shared (multi-use) EAB keys."""
    ignored: tuple[str, ...] = ()
    """Members we do not apply, as spelled in the file, for the start-up log."""


def read_pebble_config(path: Path, known: frozenset[str]) -> PebbleConfig:
    """Read ``path``; ``known`` are our configuration keys (a mapped key we lack, such as a
    listener another build has not got, counts as ignored)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PebbleConfigError(f"cannot read Pebble config {path}: {exc}") from exc
    pebble = _member(data, "pebble") if isinstance(data, dict) else None
    if not isinstance(pebble, dict):
        raise PebbleConfigError(f'{path}: expected a JSON object with a "pebble" object')
    by_fold = {k.casefold(): v for k, v in PEBBLE_KEYS.items()}
    settings: dict[str, object] = {}
    ignored: list[str] = []
    eab_keys: dict[str, bytes] = {}
    for name, value in pebble.items():
        folded = name.casefold()
        if folded == "externalaccountmackeys":
            eab_keys = _mac_keys(path, value)
        elif folded == "retryafter":
            settings.update(_retry_after(path, value, ignored, name))
        elif folded in by_fold and by_fold[folded] in known:
            settings[by_fold[folded]] = value
        else:
            ignored.append(name)
    return PebbleConfig(settings, eab_keys, tuple(ignored))


def _member(data: Mapping[str, object], name: str) -> object:
    for key, value in data.items():
        if key.casefold() == name:
            return value
    return None


def _mac_keys(path: Path, value: object) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PebbleConfigError(f"{path}: externalAccountMACKeys must be an object")
    keys: dict[str, bytes] = {}
    for kid, encoded in value.items():
        try:
            key = b64url_decode(encoded if isinstance(encoded, str) else "=")
        except ValueError as exc:
            raise PebbleConfigError(
                f"{path}: externalAccountMACKeys[{kid!r}] is not base64url: {exc}"
            ) from None
        if not kid or not key:
            raise PebbleConfigError(f"{path}: externalAccountMACKeys needs a kid and a key")
        keys[kid] = key
    return keys


def _retry_after(path: Path, value: object, ignored: list[str], name: str) -> dict[str, object]:
    """Pebble's ``retryAfter: {authz, order}``; we send one Retry-After for both, so the
    order's value wins and a different authz value is named as ignored."""
    if not isinstance(value, dict):
        raise PebbleConfigError(f"{path}: retryAfter must be an object")
    order, authz = _member(value, "order"), _member(value, "authz")
    seconds = order if order is not None else authz
    if seconds is None:
        return {}
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        raise PebbleConfigError(f"{path}: retryAfter values must be non-negative integers")
    if authz is not None and order is not None and authz != order:
        ignored.append(f"{name}.authz")
    return {"retry_after_seconds": seconds}
