"""The one registry of a gateway process's background tasks.

Copies, response keepers, sweeps and audit records run beside the requests that started them.
Each is created here, so that it is referenced until it ends (asyncio keeps only weak
references), its failure is logged with its name, work keyed by an id runs at most once at a
time, tests can wait for quiet (:meth:`TaskRegistry.idle`), and shutdown cancels everything
in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["TaskRegistry"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskRegistry:
    """Named background tasks, optionally keyed (one running task per key)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._daemons: set[asyncio.Task[Any]] = set()
        self._keyed: dict[str, asyncio.Task[Any]] = {}
        self._closed = False

    def spawn(
        self, coro: Coroutine[Any, Any, T], name: str, *, daemon: bool = False
    ) -> asyncio.Task[T]:
        """Run ``coro`` in the background; its failure is logged, never lost.

        A ``daemon`` (a loop that runs for the process's life) is not waited for by
        :meth:`idle`; shutdown cancels it like every other task.
        """
        if self._closed:
            coro.close()
            raise RuntimeError("the gateway is shutting down")
        task = asyncio.create_task(coro, name=name)
        (self._daemons if daemon else self._tasks).add(task)
        task.add_done_callback(self._done)
        return task

    def keyed(
        self, key: str, factory: Callable[[], Coroutine[Any, Any, T]], name: str
    ) -> asyncio.Task[T]:
        """The task running for ``key``, or a new one from ``factory`` if none runs."""
        task = self._keyed.get(key)
        if task is None or task.done():
            task = self.spawn(factory(), name)
            self._keyed[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return task

    def running(self, key: str) -> asyncio.Task[Any] | None:
        task = self._keyed.get(key)
        return task if task is not None and not task.done() else None

    def _forget(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._keyed.get(key) is task:
            del self._keyed[key]

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._daemons.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until no background task but the daemons runs (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Cancel every task and wait for them; unfinished work stays in the store."""
        self._closed = True
        tasks = [*self._tasks, *self._daemons]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
