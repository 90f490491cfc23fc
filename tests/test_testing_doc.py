"""docs/testing-with-acme-ca.md's migration table (issue 21 "Done when") kept complete: every
Pebble variable test mode reads, every Pebble config member it applies and every Pebble or
pebble-challtestsrv port has a row, so a variable added to ``config/pebble.py`` without a row
fails here."""

from __future__ import annotations

import re
from pathlib import Path

from acme_ca.config import Config, load_config
from acme_ca.config.pebble import PEBBLE_ENV, PEBBLE_KEYS

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing-with-acme-ca.md"
#: Pebble 2.10's variables (va/va.go, wfe/wfe.go, cmd/pebble/main.go), all of them.
PEBBLE_2_10_VARIABLES = {
    "PEBBLE_VA_NOSLEEP",
    "PEBBLE_VA_SLEEPTIME",
    "PEBBLE_VA_ALWAYS_VALID",
    "PEBBLE_WFE_NONCEREJECT",
    "PEBBLE_AUTHZREUSE",
    "PEBBLE_WFE_ORDERS_PER_PAGE",
    "PEBBLE_ALTERNATE_ROOTS",
    "PEBBLE_CHAIN_LENGTH",
}


def _migration_table() -> str:
    text = DOC.read_text()
    section = text.split("## Migrating from Pebble", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_migration_table_names_every_pebble_variable_member_and_port() -> None:
    table = _migration_table()
    names = set(re.findall(r"`([^`]+)`", table))
    words = {w for name in names for w in re.split(r"[ ,()]+", name)}
    assert words >= PEBBLE_2_10_VARIABLES, PEBBLE_2_10_VARIABLES - words
    assert set(PEBBLE_ENV) <= words
    members = {*PEBBLE_KEYS, "externalAccountMACKeys", "retryAfter.order", "retryAfter.authz"}
    assert members <= words, members - words
    test_mode = load_config(env={}, overrides={"test_mode": True})
    ports = {
        test_mode.listen,
        test_mode.management_listen,
        Config().challsrv_dns,
        Config().challsrv_management,
        Config().challsrv_http01,
        test_mode.challsrv_https01,
    }
    for address in ports:
        port = address.rsplit(":", 1)[1]
        assert f"({port})" in table or f"`{address}`" in table, address
    assert "5001" in table  # pebble-challtestsrv -tlsalpn01 and Pebble's tlsPort
