"""Each room's settings, built from the Config by its ``from_config`` (docs/architecture.md,
Settings): the few derived values they compute, which used to be computed by the rooms from
the whole Config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import asyncpg

from acme_ca.config import Config
from acme_ca.db.database import database_dsn
from acme_ca.db.settings import DatabaseSettings
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.va.settings import MpicSettings, VASettings
from acme_ca.wfe.settings import LoadSheddingSettings, WfeSettings


def test_br_3_2_2_9_mpic_rules_are_strict_outside_test_mode_with_dnssec_required() -> None:
    assert MpicSettings.from_config(Config()).strict
    assert not MpicSettings.from_config(replace(Config(), test_mode=True)).strict
    assert not MpicSettings.from_config(replace(Config(), dnssec="off")).strict


def test_br_3_2_2_9_directory_says_corroboration_off_without_remote_perspectives() -> None:
    """``meta.corroboration`` is announced unless perspectives are configured: a file, or
    test mode's ``--perspectives N`` (which outside test mode starts none)."""
    assert not WfeSettings.from_config(Config()).corroboration
    listed = replace(Config(), mpic_perspectives_file=Path("perspectives.toml"))
    assert WfeSettings.from_config(listed).corroboration
    local = replace(Config(), test_mode=True, test_perspectives=2)
    assert WfeSettings.from_config(local).corroboration
    assert not WfeSettings.from_config(replace(Config(), test_perspectives=2)).corroboration


def test_va_settings_resolvers_and_dnssec() -> None:
    config = replace(Config(), dns_resolver="127.0.0.1:53, 192.0.2.1:5353", dnssec="off")
    settings = VASettings.from_config(config)
    assert settings.nameservers == ("127.0.0.1:53", "192.0.2.1:5353")
    assert not settings.require_dnssec
    assert VASettings.from_config(Config()).require_dnssec


def test_load_shedding_in_flight_limit_derived_from_the_pool() -> None:
    """0 (the default): 16 requests per pooled database connection; otherwise as set."""
    assert LoadSheddingSettings.from_config(Config()).max_in_flight == 16 * 10
    pooled = replace(Config(), database_pool_size=4)
    assert LoadSheddingSettings.from_config(pooled).max_in_flight == 64
    capped = replace(Config(), max_requests_in_flight=7)
    assert LoadSheddingSettings.from_config(capped).max_in_flight == 7


def test_database_settings_embedded_clusters_under_home_and_the_pool_keys() -> None:
    """db/ reads the URL, the pool's size and wait, and where the embedded clusters live."""
    config = replace(
        Config(), home=Path("/srv/ca"), database_pool_size=4, database_acquire_timeout_seconds=2
    )
    settings = DatabaseSettings.from_config(config)
    assert settings.url is None
    assert settings.embedded_data_root == Path("/srv/ca/pg")
    assert settings.ephemeral_data_root == Path("/srv/ca/pg-ephemeral")
    assert (settings.pool_size, settings.acquire_timeout_seconds) == (4, 2)


async def test_database_dsn_is_the_configured_url_without_an_embedded_cluster(
    tmp_path: Path,
) -> None:
    """With ``database_url`` set, no cluster is started under ``home/pg``."""
    url = "postgresql://ca@db.example.test:5432/acme_ca"
    config = replace(Config(), home=tmp_path, database_url=url)
    async with database_dsn(DatabaseSettings.from_config(config)) as dsn:
        assert dsn == url
    assert not (tmp_path / "pg").exists()


async def test_database_dsn_of_the_embedded_cluster_is_its_unix_socket(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Without ``database_url`` the cluster is the CA's own, on this machine: its DSN names the
    cluster's Unix socket (issue 20), not loopback TCP.  The session's cluster stands in for
    ``home/pg`` here (reused, so not stopped on exit)."""
    settings = replace(
        DatabaseSettings.from_config(replace(Config(), home=tmp_path)),
        embedded_data_root=postgres.data_root,
    )
    async with database_dsn(settings) as dsn:
        assert "@127.0.0.1:" not in dsn and "%2F" in dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT inet_server_addr() IS NULL") is True
        finally:
            await conn.close()
    conn = await asyncpg.connect(postgres.dsn)  # still running: not this test's to stop
    await conn.close()
