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


async def test_response_rows_recorded_together_share_one_transaction_each_caller_its_record(
    storage_backend: Any,
) -> None:
    """Concurrent ``record_response`` calls (40 streams' first events waiting at once) are
    written in a few transactions, not 40; every caller gets its own record, with facts of
    the same response merged as if written one after another (later model wins, containers
    accumulate), on SQLite and PostgreSQL."""
    store = await MetadataStore.open(storage_backend.database_url)
    commits = 0

    def count(conn: Any) -> None:
        nonlocal commits
        if conn.get_execution_options().get("cigate_write"):
            commits += 1

    event.listen(store._engine.sync_engine, "commit", count)
    try:
        tenant = await store.create_tenant("group")
        commits = 0
        records = await asyncio.gather(
            *(
                store.record_response(
                    tenant.id, f"resp_{n % 8}", "east", f"m{n}" if n % 3 else None, [f"cntr_{n}"]
                )
                for n in range(WRITERS)
            )
        )
        assert commits <= 2  # the first caller's group, then everyone who came meanwhile
        for n, record in enumerate(records):
            assert record.response_id == f"resp_{n % 8}"
            assert record.tenant_id == tenant.id
        for r in range(8):
            stored = await store.get_response(tenant.id, f"resp_{r}")
            assert stored is not None
            mine = [n for n in range(WRITERS) if n % 8 == r]
            assert stored.container_ids == tuple(f"cntr_{n}" for n in mine)
            assert stored.model == f"m{max(n for n in mine if n % 3)}"
            assert await store.owner("container", f"cntr_{mine[0]}") == tenant.id
    finally:
        await store.close()


async def test_a_bad_response_row_fails_its_own_caller_only_and_a_cancelled_one_nobody(
    tmp_path: Path,
) -> None:
    """A group that fails is written again one row at a time: the one row the database
    refuses fails its caller, the others are stored. A caller cancelled while its group is
    written does not break the group."""
    store = await MetadataStore.open(f"sqlite:///{tmp_path / 'gw.db'}")
    try:
        tenant = await store.create_tenant("group")
        await store.record_response(tenant.id, "resp_seen", "east", None, [])

        def refuse(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if "INSERT INTO responses" in statement and "resp_bad" in str(params):
                raise RuntimeError("refused")

        event.listen(store._engine.sync_engine, "before_cursor_execute", refuse)
        calls = [store.record_response(tenant.id, f"resp_{n}", "east", None, []) for n in range(5)]
        bad = store.record_response(tenant.id, "resp_bad", "east", None, [])
        outcomes = await asyncio.gather(*calls, bad, return_exceptions=True)
        assert [type(o).__name__ for o in outcomes[:5]] == ["ResponseRecord"] * 5
        assert isinstance(outcomes[5], Exception)
        assert "refused" in str(outcomes[5])
        assert await store.get_response(tenant.id, "resp_bad") is None
        for n in range(5):
            assert await store.get_response(tenant.id, f"resp_{n}") is not None

        third = asyncio.create_task(store.record_response(tenant.id, "resp_c", "east", None, []))
        await asyncio.sleep(0)
        third.cancel()
        after = await store.record_response(tenant.id, "resp_d", "east", None, [])
        assert after.response_id == "resp_d"
        assert third.cancelled()
    finally:
        await store.close()
