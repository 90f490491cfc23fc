"""The composition (acme_ca/main/): the web app's resources, one ``cleanup_ctx`` each, are torn
down however start-up ends.  Real PostgreSQL; the resource that fails is a real one (a weak-key
list that is not there)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from acme_ca.config import Config
from acme_ca.main.app import COMPLETIONS, STORAGE, TASKS, create_app
from acme_ca.wfe.services import FRONT_END


async def _connections(pool: asyncpg.Pool) -> int:
    """Other sessions on the test's database (the app's pool and listener)."""
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    )


async def test_resources_started_before_a_failing_one_are_torn_down(
    dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The front end fails to start (its weak-key list is missing): storage, background tasks
    and the order-completion listener, started before it, are closed by the runner's cleanup,
    and the database is left with no session of the app's."""
    before = await _connections(pool)
    config = replace(
        Config(),
        home=tmp_path,
        finalize_wait_seconds=5,
        weak_key_blocklists=[str(tmp_path / "missing-blacklist.RSA-2048")],
    )
    app = create_app(config, dsn)
    runner = web.AppRunner(app, handle_signals=False)
    with pytest.raises(FileNotFoundError):
        await runner.setup()
    assert FRONT_END not in app
    storage = app[STORAGE]
    assert await _connections(pool) > before  # the pool and the LISTEN connection were open
    await runner.cleanup()
    assert storage.pool.is_closing()
    with pytest.raises(RuntimeError, match="closed"):  # drained
        app[TASKS].spawn(asyncio.sleep(0), name="after-cleanup")
    assert COMPLETIONS in app
    assert await _connections(pool) == before


async def test_started_app_tears_every_resource_down(
    dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    before = await _connections(pool)
    app = create_app(replace(Config(), home=tmp_path, finalize_wait_seconds=5), dsn)
    runner = web.AppRunner(app, handle_signals=False)
    try:
        await runner.setup()
        assert app[FRONT_END].urls is not None
    finally:
        await runner.cleanup()
    assert app[STORAGE].pool.is_closing()
    assert await _connections(pool) == before
