"""SQLite writes of one store queue in the event loop, not in SQLite's sleeping busy handler."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from cigate.storage import MetadataStore
from cigate.storage._db import WriteTurns

pytestmark = pytest.mark.storage

WRITERS = 40


async def test_concurrent_writes_of_one_store_ask_sqlite_for_its_lock_one_at_a_time(
    tmp_path: Path,
) -> None:
    """From ``BEGIN IMMEDIATE`` to commit there is one write transaction at a time; the
    others wait their turn in the event loop (FIFO, woken at once) and none is lost. Before,
    the pool's connections raced for the lock and the losers slept in SQLite's busy handler
    (up to 100 ms a try; a response row waited seconds in ``bench/load.py``)."""
    store = await MetadataStore.open(f"sqlite:///{tmp_path / 'gw.db'}")
    in_flight, most = 0, 0

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        nonlocal in_flight, most
        if statement == "BEGIN IMMEDIATE":
            in_flight += 1
            most = max(most, in_flight)

    def end(conn: Any) -> None:
        nonlocal in_flight
        if conn.get_execution_options().get("cigate_write"):
            in_flight -= 1

    engine = store._engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)

    async def write(n: int) -> str:
        async with store._write("a bench write") as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(0)  # other writers run here
        return (await store.create_tenant(f"t{n}")).id

    try:
        ids = await asyncio.gather(*(write(n) for n in range(WRITERS)))
        assert most == 1
        assert [(await store.get_tenant(i)) is not None for i in ids] == [True] * WRITERS
    finally:
        await store.close()


async def test_urgent_writes_go_first_but_never_starve_the_others() -> None:
    """Order of turns once the writer holding the turn is done: urgent ones first, at most
    ``URGENT_RUN`` in a row while others wait; each queue in arrival order; a writer
    cancelled while queued is skipped and its turn not lost."""
    turns = WriteTurns()
    order: list[str] = []
    release = asyncio.Event()

    async def writer(name: str, urgent: bool, hold: asyncio.Event | None = None) -> None:
        async with turns.turn(urgent):
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(writer("holder", False, release))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(writer(f"n{i}", False)) for i in range(3)]
    gone = asyncio.create_task(writer("cancelled", True))
    tasks += [asyncio.create_task(writer(f"u{i}", True)) for i in range(6)]
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await asyncio.gather(first, *tasks)
    assert gone.cancelled()
    assert order == ["holder", "u0", "u1", "u2", "u3", "n0", "u4", "u5", "n1", "n2"]
    async with turns.turn(False):  # the turn is free again
        order.append("after")
    assert order[-1] == "after"
