"""Order completions (finalize_wait_seconds): the worker's NOTIFY reaches the requests
waiting on that order and no other, and a lost listener never makes anyone wait."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from acme_ca.db import completions as completions_module
from acme_ca.db.completions import OrderCompletions, notify_order_done


async def _notify_committed(pool: asyncpg.Pool, order_id: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await notify_order_done(conn, order_id)


async def test_notify_wakes_the_waiter_of_that_order_only(pool: asyncpg.Pool) -> None:
    completions = OrderCompletions(pool)
    assert await completions.listen()
    try:
        async with completions.watch(7) as seven, completions.watch(8) as eight:
            assert seven is not None and eight is not None
            await _notify_committed(pool, 7)
            await asyncio.wait_for(seven.wait(), timeout=10)
            assert not eight.is_set()
    finally:
        await completions.aclose()


async def test_notify_inside_a_rolled_back_transaction_wakes_nobody(pool: asyncpg.Pool) -> None:
    """The NOTIFY is sent with the order's final state or not at all."""
    completions = OrderCompletions(pool)
    assert await completions.listen()
    try:
        async with completions.watch(9) as nine:
            assert nine is not None
            with pytest.raises(RuntimeError):
                async with pool.acquire() as conn, conn.transaction():
                    await notify_order_done(conn, 9)
                    raise RuntimeError("roll back")
            await _notify_committed(pool, 10)  # a later notification arrives; 9's never did
            await asyncio.sleep(0.3)
            assert not nine.is_set()
    finally:
        await completions.aclose()


async def test_lost_listener_means_no_wait_then_listens_again(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No attempt to listen again until the test allows it below: the lost listener must mean
    # no wait however long a loaded machine takes to notice the loss.
    monkeypatch.setattr(completions_module, "RELISTEN_INTERVAL", 3600.0)
    completions = OrderCompletions(pool)
    assert await completions.listen()
    try:
        pid = await pool.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN %' "
            "AND datname = current_database()"
        )
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        deadline = time.monotonic() + 20
        while completions.listening and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not completions.listening
        async with completions.watch(11) as event:
            assert event is None, "nothing listens: the caller must not wait"

        monkeypatch.setattr(completions_module, "RELISTEN_INTERVAL", 0.0)
        completions._next_attempt = 0.0
        async with completions.watch(12) as event:
            assert event is not None
            await _notify_committed(pool, 12)
            await asyncio.wait_for(event.wait(), timeout=10)
    finally:
        await completions.aclose()
