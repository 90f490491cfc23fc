"""Pebble 2.10's PEBBLE_* variables in test mode, one test per variable, and the
``--deterministic`` preset (issue 21 item 10).

Each variable is read the way Pebble reads it (``va.go``, ``wfe.go``, ``cmd/pebble/main.go``)
into our configuration key; outside test mode they are ignored, and an ``ACME_CA_*`` key set
explicitly wins.  ``integration/test_testmode.py`` runs the knobs against ``serve --test``.
"""

from __future__ import annotations

import pytest

from acme_ca.cli import _overrides, _parser
from acme_ca.config import Config, ConfigError, load_config
from acme_ca.config.pebble import PEBBLE_MAX_VALIDATION_SLEEP


def in_test_mode(env: dict[str, str], **overrides: object) -> Config:
    return load_config(env=env, overrides={"test_mode": True, **overrides})


@pytest.mark.parametrize(
    ("value", "delay"),
    [
        ("1", 0),
        ("true", 0),
        ("True", 0),
        ("TRUE", 0),
        ("0", PEBBLE_MAX_VALIDATION_SLEEP),
        ("false", PEBBLE_MAX_VALIDATION_SLEEP),
        ("yes", PEBBLE_MAX_VALIDATION_SLEEP),  # not one of Pebble's true spellings
    ],
)
def test_pebble_va_nosleep(value: str, delay: int) -> None:
    assert in_test_mode({"PEBBLE_VA_NOSLEEP": value}).validation_delay_seconds == delay
    assert in_test_mode({}).validation_delay_seconds == 0  # unset: no sleep (documented)
    assert PEBBLE_MAX_VALIDATION_SLEEP == 5  # Pebble's va.go defaultSleepTime


def test_pebble_va_sleeptime() -> None:
    assert in_test_mode({"PEBBLE_VA_SLEEPTIME": "3"}).validation_delay_seconds == 3
    both = {"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": "2"}
    assert in_test_mode(both).validation_delay_seconds == 2
    # NOSLEEP wins; a SLEEPTIME Pebble would not take leaves its default
    assert in_test_mode({**both, "PEBBLE_VA_NOSLEEP": "1"}).validation_delay_seconds == 0
    for unusable in ("0", "-4", "soon"):
        config = in_test_mode({"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": unusable})
        assert config.validation_delay_seconds == PEBBLE_MAX_VALIDATION_SLEEP


def test_pebble_va_always_valid() -> None:
    assert in_test_mode({"PEBBLE_VA_ALWAYS_VALID": "1"}).always_valid is True
    assert in_test_mode({"PEBBLE_VA_ALWAYS_VALID": "TRUE"}).always_valid is True
    assert in_test_mode({"PEBBLE_VA_ALWAYS_VALID": "0"}).always_valid is False
    assert in_test_mode({"PEBBLE_VA_ALWAYS_VALID": "yes"}).always_valid is False


def test_pebble_wfe_noncereject() -> None:
    assert in_test_mode({"PEBBLE_WFE_NONCEREJECT": "20"}).nonce_reject_percent == 20
    assert in_test_mode({}).nonce_reject_percent == 0  # Pebble's default is 5 (documented)
    with pytest.raises(ConfigError):
        in_test_mode({"PEBBLE_WFE_NONCEREJECT": "150"})


def test_pebble_authzreuse() -> None:
    assert in_test_mode({"PEBBLE_AUTHZREUSE": "0"}).authz_reuse_percent == 0
    assert in_test_mode({"PEBBLE_AUTHZREUSE": "50"}).authz_reuse_percent == 50


def test_pebble_wfe_orders_per_page() -> None:
    assert in_test_mode({"PEBBLE_WFE_ORDERS_PER_PAGE": "15"}).orders_page_size == 15
    assert in_test_mode({}).orders_page_size == Config().orders_page_size
    with pytest.raises(ConfigError):
        in_test_mode({"PEBBLE_WFE_ORDERS_PER_PAGE": "0"})


def test_pebble_alternate_roots() -> None:
    """Read into ``alternate_roots`` (the hierarchy's extra chains, tests/test_pebble_chains.py);
    unset with PEBBLE_CHAIN_LENGTH unset too, the development hierarchy stays."""
    assert in_test_mode({"PEBBLE_ALTERNATE_ROOTS": "3"}).alternate_roots == 3
    assert in_test_mode({"PEBBLE_ALTERNATE_ROOTS": "0"}).alternate_roots == 0
    assert in_test_mode({}).alternate_roots is None
    with pytest.raises(ConfigError, match="alternate_roots"):
        in_test_mode({"PEBBLE_ALTERNATE_ROOTS": "64"})


def test_pebble_chain_length() -> None:
    """Pebble's meaning: the certificates between leaf and root (``newChain``'s
    numIntermediates); 0 makes Pebble panic, and is refused here."""
    assert in_test_mode({"PEBBLE_CHAIN_LENGTH": "2"}).chain_length == 2
    assert in_test_mode({}).chain_length is None
    for bad in ("0", "11", "-1"):
        with pytest.raises(ConfigError, match="chain_length"):
            in_test_mode({"PEBBLE_CHAIN_LENGTH": bad})


def test_chain_shape_ignored_outside_test_mode_refused_with_a_pki_dir() -> None:
    """Outside test mode Pebble's names change nothing (the ACME_CA_* spellings are refused:
    tests/test_config.py); a configured pki_dir is never generated, so it cannot be shaped."""
    assert load_config(env={"PEBBLE_CHAIN_LENGTH": "2"}).chain_length is None
    with pytest.raises(ConfigError, match="pki_dir is not generated"):
        in_test_mode({"PEBBLE_CHAIN_LENGTH": "2", "ACME_CA_PKI_DIR": "/srv/pki"})


ALL_PEBBLE = {
    "PEBBLE_VA_NOSLEEP": "0",
    "PEBBLE_VA_SLEEPTIME": "9",
    "PEBBLE_VA_ALWAYS_VALID": "1",
    "PEBBLE_WFE_NONCEREJECT": "50",
    "PEBBLE_AUTHZREUSE": "0",
    "PEBBLE_WFE_ORDERS_PER_PAGE": "7",
}


def test_pebble_variables_ignored_outside_test_mode_and_below_explicit_keys() -> None:
    plain = load_config(env=ALL_PEBBLE)
    defaults = Config()
    for name in (
        "validation_delay_seconds",
        "always_valid",
        "nonce_reject_percent",
        "authz_reuse_percent",
        "orders_page_size",
    ):
        assert getattr(plain, name) == getattr(defaults, name), name
    explicit = in_test_mode({**ALL_PEBBLE, "ACME_CA_ORDERS_PAGE_SIZE": "30"})
    assert explicit.orders_page_size == 30


def test_deterministic_preset_overrides_pebble_variables() -> None:
    config = in_test_mode(ALL_PEBBLE, deterministic=True)
    assert (
        config.nonce_reject_percent,
        config.validation_delay_seconds,
        config.authz_reuse_percent,
    ) == (0, 0, 100)
    # the rest of Pebble's variables still apply
    assert config.always_valid is True
    assert config.orders_page_size == 7
    args = _parser().parse_args(["serve", "--test", "--deterministic"])
    assert _overrides(args)["deterministic"] is True


def test_deterministic_refused_outside_test_mode_or_against_a_knob() -> None:
    with pytest.raises(ConfigError, match="test-mode preset"):
        load_config(env={}, overrides={"deterministic": True})
    with pytest.raises(ConfigError, match="deterministic conflicts"):
        in_test_mode({"ACME_CA_NONCE_REJECT_PERCENT": "10"}, deterministic=True)
