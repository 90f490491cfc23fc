"""Configuration: precedence, validation, and docs/configuration.md kept true."""

from __future__ import annotations

from pathlib import Path

import pytest

from acme_ca.config import Config, ConfigError, load_config
from acme_ca.config.reference import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_match_cp() -> None:
    config = load_config(env={})
    assert config.caa_identities == ["jprs.jp"]
    assert config.listen == "127.0.0.1:14000"
    assert config.external_base_url == "https://127.0.0.1:14000"
    assert config.home == Path(".acme-ca")
    assert config.database_url is None


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "ca.toml"
    path.write_text('listen = "127.0.0.1:1"\ncaa_identities = ["a.example"]\nplain_http = true\n')
    config = load_config(
        path,
        env={"ACME_CA_LISTEN": "127.0.0.1:2", "ACME_CA_CAA_IDENTITIES": "b.example, c.example"},
        overrides={"listen": "127.0.0.1:3"},
    )
    assert config.listen == "127.0.0.1:3"
    assert config.caa_identities == ["b.example", "c.example"]
    assert config.plain_http is True
    assert config.external_base_url == "http://127.0.0.1:3"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACME_CA_LISTEN": "nonsense"}, "HOST:PORT"),
        ({"ACME_CA_PLAIN_HTTP": "maybe"}, "plain_http"),
        ({"ACME_CA_NONCE_LIFETIME_SECONDS": "0"}, "nonce_lifetime_seconds"),
        ({"ACME_CA_DNSSEC": "sometimes"}, "dnssec"),
        ({"ACME_CA_PENDING_AUTHZ_LIFETIME_SECONDS": str(31 * 86400)}, "30 days"),
        ({"ACME_CA_BASE_URL": "ftp://x"}, "base_url"),
        ({"ACME_CA_CAA_IDENTITIES": ""}, "caa_identities"),
        ({"ACME_CA_MPIC_GRACE_MILLISECONDS": "-1"}, "mpic_grace_milliseconds"),
        ({"ACME_CA_MPIC_GRACE_MILLISECONDS": "10001"}, "mpic_grace_milliseconds"),
    ],
    ids=[
        "listen",
        "bool",
        "positive",
        "dnssec",
        "br-token-lifetime",
        "base-url",
        "caa",
        "mpic-grace-negative",
        "mpic-grace-past-the-timeout",
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_unknown_file_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "ca.toml"
    path.write_text("no_such_key = 1\n")
    with pytest.raises(ConfigError, match="no_such_key"):
        load_config(path, env={})


def test_every_key_documented() -> None:
    """docs/configuration.md carries the generated table verbatim."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert config_reference() in doc, "run: acme-ca config-doc, and paste into the doc"
    for name in Config.__dataclass_fields__:
        assert f"`ACME_CA_{name.upper()}`" in doc


#: Keys that only a test-mode CA may set, each with a value that would weaken validation,
#: naming or issuance if a publicly-trusted CA could use it (BR 3.2.2.4, 4.2.1, 7.1.4.2).
TEST_MODE_ONLY = [
    ("ACME_CA_ALWAYS_VALID", "true", "always_valid"),
    ("ACME_CA_NONCE_REJECT_PERCENT", "10", "nonce_reject_percent"),
    ("ACME_CA_VALIDATION_DELAY_SECONDS", "1", "validation_delay_seconds"),
    ("ACME_CA_AUTHZ_REUSE_PERCENT", "50", "authz_reuse_percent"),
    ("ACME_CA_SPECIAL_USE_NAMES", "true", "special_use_names"),
    ("ACME_CA_EPHEMERAL", "true", "ephemeral"),
    ("ACME_CA_DETERMINISTIC", "true", "deterministic"),
    ("ACME_CA_PEBBLE_CONFIG", "/dev/null", "pebble_config"),
    ("ACME_CA_HTTPS01_PORT", "5003", "https01_port"),
    ("ACME_CA_ALTERNATE_ROOTS", "1", "alternate_roots"),
    ("ACME_CA_CHAIN_LENGTH", "2", "chain_length"),
]


@pytest.mark.parametrize(
    ("variable", "value", "key"), TEST_MODE_ONLY, ids=[r[2] for r in TEST_MODE_ONLY]
)
def test_test_mode_only_keys_are_refused_outside_test_mode(
    variable: str, value: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env={variable: value})
