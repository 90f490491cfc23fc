"""Background work a process owns: tracked, logged when it fails, drained at shutdown.

Never a bare ``create_task``: a task here keeps a strong reference, inherits the caller's
log context (``request_id``), and is awaited or cancelled when its owner stops.  Used by the
RA (validations after a challenge POST) and by CT (final-certificate submissions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(component="acme_ca.tasks")


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; refused (and closed) once :meth:`drain` began."""
        if self._closed:
            coro.close()
            raise RuntimeError("background tasks are closed")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task.failed", task=task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Until the tasks started so far, and any they start, have finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def drain(self, grace: float = 10.0) -> None:
        """Let running work finish for ``grace`` seconds, then cancel the rest."""
        self._closed = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
