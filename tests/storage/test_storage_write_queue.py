"""SQLite writes of one store queue in the event loop, not in SQLite's sleeping busy handler."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from cigate.storage import MetadataStore

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
