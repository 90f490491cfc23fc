"""acme_ca.tasks.BackgroundTasks: the one tracked task set (RA validations, CT final
submissions): failures are logged, drain waits then cancels, nothing starts after it."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from acme_ca.tasks import BackgroundTasks


async def test_a_failed_task_is_logged_and_forgotten() -> None:
    tasks = BackgroundTasks()

    async def boom() -> None:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        task = tasks.spawn(boom(), name="boom-task")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert len(tasks) == 0
    failed = [e for e in logs if e["event"] == "task.failed"]
    assert [e["task"] for e in failed] == ["boom-task"]


async def test_wait_idle_waits_for_tasks_started_by_tasks() -> None:
    tasks = BackgroundTasks()
    done: list[str] = []

    async def inner() -> None:
        await asyncio.sleep(0.01)
        done.append("inner")

    async def outer() -> None:
        tasks.spawn(inner(), name="inner")
        done.append("outer")

    tasks.spawn(outer(), name="outer")
    await tasks.wait_idle()
    assert done == ["outer", "inner"]
    assert len(tasks) == 0


async def test_drain_lets_quick_work_finish_cancels_the_rest_and_refuses_new_work() -> None:
    tasks = BackgroundTasks()
    quick = tasks.spawn(asyncio.sleep(0.01, result="done"), name="quick")
    slow = tasks.spawn(asyncio.sleep(60), name="slow")
    await tasks.drain(grace=0.2)
    assert quick.result() == "done"
    assert slow.cancelled()
    late = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        tasks.spawn(late, name="late")
