"""Engine creation, per-dialect tuning, error wrapping and the clock, shared by the stores.

SQLite and PostgreSQL need different care to be safe with several gateway processes:

- SQLite: WAL (readers never block the writer), a 30 s busy timeout, foreign keys on, and
  every write transaction starts with ``BEGIN IMMEDIATE`` so it takes the write lock up front
  instead of failing with "database is locked" when a reader upgrades mid-transaction. The
  driver's own transaction handling is switched off (SQLAlchemy's documented recipe) so that
  DDL is transactional too. A connection going back to the pool is rolled back only when
  SQLite says a transaction is still open (SQLAlchemy's "reset" event): the pool's default
  rollback after every committed transaction cost one more trip to the driver's thread.
- PostgreSQL: asyncpg, a small pool with pre-ping; cross-process races are handled in SQL
  (advisory lock for migrations, conditional UPDATEs for leases).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState, StaticPool

from cigate.clock import Clock
from cigate.exceptions import CigateError, ConfigurationError, StorageError
from cigate.storage.errors import STORAGE_HINT

__all__ = [
    "DIALECT_INSERT",
    "StoreBase",
    "WriteGroup",
    "advisory_xact_lock",
    "create_engine",
    "db_errors",
    "default_database_url",
]

_WRITE = "cigate_write"
#: Each database's INSERT (both have ``ON CONFLICT DO NOTHING``), by dialect name.
DIALECT_INSERT: dict[str, Callable[..., Any]] = {"sqlite": sqlite_insert, "postgresql": pg_insert}
Item = TypeVar("Item")
Result = TypeVar("Result")


def default_database_url() -> str:
    """SQLite at ``$CIGATE_HOME/gateway.db`` (``~/.cigate`` when ``CIGATE_HOME`` is unset)."""
    home = Path(os.environ.get("CIGATE_HOME") or Path.home() / ".cigate")
    return f"sqlite+aiosqlite:///{home / 'gateway.db'}"


def _normalise(url: str) -> URL:
    try:
        sa_url = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"not a database URL: {url!r}", hint=STORAGE_HINT) from exc
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        return sa_url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return sa_url.set(drivername="postgresql+asyncpg")
    raise ConfigurationError(
        f"unsupported database {backend!r}: use sqlite:///PATH or postgresql+asyncpg://…",
        hint=STORAGE_HINT,
    )


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` with the settings described in the module docstring."""
    sa_url = _normalise(url)
    if sa_url.get_backend_name() != "sqlite":
        try:
            import asyncpg  # noqa: F401 - only to explain a missing driver before SQLAlchemy
        except ImportError as exc:
            raise ConfigurationError(
                "PostgreSQL needs the asyncpg driver",
                hint="pip install 'cigate-toolkit[postgres]'",
            ) from exc
        return create_async_engine(sa_url, pool_size=5, max_overflow=10, pool_pre_ping=True)
    database = sa_url.database or ""
    memory = database in ("", ":memory:")
    if not memory:
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the directory for {database}", hint=STORAGE_HINT
            ) from exc
    extra: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
    engine = create_async_engine(
        sa_url, connect_args={"timeout": 30}, pool_reset_on_return=None, **extra
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        if not memory:
            _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        """Roll back what is still open, and only that (``pool_reset_on_return=None``).

        A transaction SQLAlchemy ended has ended in SQLite too; one left open (a connection
        given back in the middle of one) is rolled back here as the pool would have.
        ``asyncio_safe`` is false only where no I/O may run (the connection is discarded).
        """
        if state.asyncio_safe and dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()

    return engine


def _use_wal(cursor: Any, patience: float = 30.0) -> None:
    """Switch a SQLite file to WAL once (the mode is kept in the file).

    The switch needs the file to itself, and SQLite answers "database is locked" at once, not
    after its busy timeout, while another connection is in a transaction: gateways opening a
    fresh database together hit that. So the mode is read first and the switch retried.
    """
    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the adapted driver's OperationalError
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)  # a driver thread, not the event loop
        delay = min(0.2, delay * 2)


@asynccontextmanager
async def db_errors(action: str) -> AsyncIterator[None]:
    """Wrap driver and SQLAlchemy failures in :class:`StorageError` (STYLE rule 6)."""
    try:
        yield
    except CigateError:
        raise
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"metadata store: {action} failed: {exc}") from exc


class StoreBase:
    """Engine, clock and transaction helpers the store's query modules share."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        self._clock = clock
        #: SQLite has one writer at a time. Queued here (woken at once) instead of in
        #: SQLite's busy handler, which sleeps up to 100 ms between tries: under concurrent
        #: writes that made a response row wait seconds (bench/load.py).
        self._write_turn = WriteTurns() if engine.dialect.name == "sqlite" else None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    @asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[AsyncConnection]:
        async with db_errors(action), self._engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self, action: str, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction; ``urgent`` for one a client waits on (SQLite: goes first)."""
        if self._write_turn is None:
            async with db_errors(action), self._writer.begin() as conn:
                yield conn
            return
        async with self._write_turn.turn(urgent), db_errors(action), self._writer.begin() as conn:
            yield conn


async def advisory_xact_lock(conn: AsyncConnection, dialect: str, namespace: int, key: int) -> None:
    """Hold PostgreSQL's transaction-scoped advisory lock ``(namespace, key mod 2**31)``
    until ``conn``'s transaction ends; SQLite's write transactions are serialised already.
    Callers derive ``key`` as they always have: a changed key would not exclude a process
    of the previous release during a rolling upgrade."""
    if dialect == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :key)"),
            {"ns": namespace, "key": key % 2**31},
        )


class WriteTurns:
    """Whose turn it is to write to SQLite: one writer at a time, each queue in order.

    Urgent writers (a response row the client's first byte waits for) go before the others
    (harvest bookkeeping, listings), but at most :attr:`URGENT_RUN` in a row while others
    wait, so background writes are never starved.
    """

    URGENT_RUN = 4

    def __init__(self) -> None:
        self._busy = False
        self._run = 0
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, urgent: bool) -> AsyncIterator[None]:
        if self._busy:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue = self._urgent if urgent else self._normal
            queue.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._next()  # handed the turn as it was cancelled: pass it on
                elif waiter in queue:
                    queue.remove(waiter)
                raise
        self._busy = True
        try:
            yield
        finally:
            self._next()

    def _next(self) -> None:
        while self._urgent or self._normal:
            take_urgent = bool(self._urgent) and (self._run < self.URGENT_RUN or not self._normal)
            waiter = (self._urgent if take_urgent else self._normal).popleft()
            if waiter.done():  # cancelled while queued
                continue
            self._run = self._run + 1 if take_urgent else 0
            waiter.set_result(None)
            return
        self._busy = False
        self._run = 0


class WriteGroup(Generic[Item, Result]):
    """Group commit: calls of one write made while another is being written go together.

    ``write_many`` writes a list of items in one transaction and returns a result per item;
    ``write_one`` writes one alone. A caller waits for its own result only; one background
    task (started by the first caller, ended when nothing waits) takes every waiting item at
    once. If a group fails, each of its items is written alone, so one bad item fails only
    its own caller. A caller that is cancelled leaves its item to be written or not.
    """

    def __init__(
        self,
        write_many: Callable[[list[Item]], Awaitable[list[Result]]],
        write_one: Callable[[Item], Awaitable[Result]],
    ) -> None:
        self._write_many = write_many
        self._write_one = write_one
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, result))
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = asyncio.create_task(self._write_waiting(), name="cigate-write-group")
        return await result

    async def drain(self) -> None:
        """Wait until every item submitted so far is written (before the engine closes)."""
        if self._writer is not None:
            await asyncio.wait([self._writer])

    async def _write_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                results = await self._write_many([item for item, _ in group])
            except Exception:
                for item, result in group:
                    await self._settle(result, self._write_one(item))
                continue
            except BaseException as exc:  # cancelled: nobody is left to write for them
                for _, result in [*group, *self._waiting]:
                    if not result.done():
                        result.set_exception(exc)
                raise
            for (_, result), value in zip(group, results, strict=True):
                if not result.done():
                    result.set_result(value)

    @staticmethod
    async def _settle(result: asyncio.Future[Result], work: Awaitable[Result]) -> None:
        try:
            value = await work
        except Exception as exc:
            if not result.done():
                result.set_exception(exc)
        else:
            if not result.done():
                result.set_result(value)
