"""A SQLite connection goes back to the pool without one more trip to the driver's thread.

SQLAlchemy's pool rolls back every connection it is given back, by default: with aiosqlite that
is one more hand-off to the driver's thread (and back to the event loop) after every committed
transaction, a dozen times for every relayed stream. The store's engine rolls back only what
SQLite says is still open. These tests count the driver's rollbacks: none after committed (and
read) transactions, and one for a connection given back in the middle of a transaction, whose
writes are then gone and whose lock is free.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text

from cigate.storage import MetadataStore
from cigate.storage._db import create_engine

pytestmark = pytest.mark.storage


@pytest.fixture
def rollbacks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each rollback the SQLite driver (aiosqlite) is asked for, as it runs."""
    calls: list[int] = []
    original = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        calls.append(1)
        await original(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    return calls


async def test_committed_and_read_transactions_go_back_without_a_rollback(
    tmp_path: Path, rollbacks: list[int]
) -> None:
    store = await MetadataStore.open(f"sqlite:///{tmp_path / 'g.db'}")
    rollbacks.clear()  # SQLAlchemy's first connect of an engine rolls back once
    try:
        tenant = await store.create_tenant("t")
        for n in range(5):
            await store.record_response(tenant.id, f"resp_{n}", "default", "m", [f"cntr_{n}"])
            assert await store.get_response(tenant.id, f"resp_{n}") is not None
            await store.mark_listed(tenant.id, f"resp_{n}")
    finally:
        await store.close()
    assert rollbacks == []


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(
    tmp_path: Path, rollbacks: list[int]
) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    engine = create_engine(url)
    other = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        rollbacks.clear()  # the engine's first connect
        async with engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            # Past SQLAlchemy's back: it does not know this transaction is open.
            await driver.execute("BEGIN IMMEDIATE")
            await driver.execute("INSERT INTO t VALUES (1)")
            assert driver.in_transaction
        assert len(rollbacks) == 1
        assert not driver.in_transaction
        # The write lock is free: another connection writes at once (not after 30 s of busy
        # timeout), and the abandoned row was never committed.
        async with asyncio.timeout(10):
            async with other.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (2)"))
        async with engine.connect() as conn:
            values = (await conn.execute(text("SELECT v FROM t ORDER BY v"))).scalars().all()
        assert values == [2]
    finally:
        await engine.dispose()
        await other.dispose()
