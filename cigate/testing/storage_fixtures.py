"""Pytest fixtures that run a test on both storage backends: SQLite + disk, PostgreSQL + Azurite.

Register with ``pytest_plugins = ["cigate.testing.storage_fixtures"]`` (``tests/conftest.py``
does). Fixtures:

- ``postgres_server`` / ``azurite_server`` (session): the running services (see
  :mod:`cigate.testing.services`), started on first use, stopped at session end.
- ``storage_backend`` (function, ids ``sqlite-disk`` and ``postgres-azurite``): a fresh
  database URL and blob URL per test, for code that opens stores itself
  (``create_app(settings)``, a second gateway process, a subprocess).
- ``stores`` (function): ``(MetadataStore, BlobStore)`` opened on ``storage_backend``, with
  the injectable ``storage_clock``.

When a service cannot run here the test is skipped with the reason, or fails when
``CIGATE_REQUIRE_SUITES`` is set (CI must not skip the scale-out backends silently).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar
from urllib.parse import quote

import pytest
import pytest_asyncio

from cigate.clock import Clock
from cigate.storage import BlobStore, MetadataStore, open_blob_store, schema
from cigate.testing.services import AzuriteServer, PostgresServer, ServiceUnavailable

__all__ = [
    "BACKENDS",
    "StorageBackend",
    "Stores",
    "azure_blob_url",
    "azurite_server",
    "postgres_database",
    "postgres_server",
    "storage_backend",
    "storage_clock",
    "stores",
]

BACKENDS = ("sqlite-disk", "postgres-azurite")
_T = TypeVar("_T")
_S = TypeVar("_S", PostgresServer, AzuriteServer)


@dataclass(frozen=True)
class StorageBackend:
    """Where one test's data lives: pass these URLs to anything that opens stores."""

    name: str
    database_url: str
    blob_url: str


class Stores(NamedTuple):
    metadata: MetadataStore
    blobs: BlobStore


def azure_blob_url(container: str, connection_string: str) -> str:
    """An ``azure://`` blob URL carrying its (URL-encoded) connection string."""
    return f"azure://{container}?connection_string={quote(connection_string, safe='')}"


def run_coroutine(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from sync code, on a thread with its own loop.

    Session fixtures are sync; a private thread keeps them clear of pytest-asyncio's loop.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CIGATE_REQUIRE_SUITES"):
        pytest.fail(f"required storage service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _started(server: _S) -> Iterator[_S]:
    """Start a session's service (skip or fail when it cannot run), stop it at the end."""
    try:
        server.start()
    except ServiceUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _started(PostgresServer())


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    yield from _started(AzuriteServer())


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> str:
    """One migrated database for the session, emptied before each test that uses it.

    ``TRUNCATE`` takes ~40 ms where ``CREATE DATABASE`` takes ~300-600 ms; tests that need
    a pristine, unmigrated database call ``postgres_server.create_database()`` themselves.
    """
    url = postgres_server.create_database("cigate_tests")

    async def migrate() -> None:
        store = await MetadataStore.open(url)
        await store.close()

    run_coroutine(migrate())
    return url


def _truncate_all(postgres: PostgresServer, url: str) -> None:
    names = ", ".join(
        t.name for t in schema.metadata.sorted_tables if t.name != "schema_migrations"
    )
    postgres.sql(
        f"SET lock_timeout = '10s'; TRUNCATE {names} RESTART IDENTITY", url.rsplit("/", 1)[1]
    )


@pytest.fixture
def storage_clock() -> Clock:
    """The clock ``stores`` uses: ``storage_clock.advance(s)`` to expire leases and links."""
    return Clock()


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def storage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    if request.param == "sqlite-disk":
        yield StorageBackend(
            request.param, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", str(tmp_path / "blobs")
        )
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    azurite: AzuriteServer = request.getfixturevalue("azurite_server")
    url: str = request.getfixturevalue("postgres_database")
    _truncate_all(postgres, url)
    container = f"t-{secrets.token_hex(6)}"  # a fresh, empty container per test
    yield StorageBackend(request.param, url, azure_blob_url(container, azurite.connection_string))


@pytest_asyncio.fixture
async def stores(storage_backend: StorageBackend, storage_clock: Clock) -> AsyncIterator[Stores]:
    metadata = await MetadataStore.open(storage_backend.database_url, clock=storage_clock)
    blobs = open_blob_store(storage_backend.blob_url)
    try:
        yield Stores(metadata, blobs)
    finally:
        await blobs.close()
        await metadata.close()
