"""Gateway fixtures: a storage backend (both kinds) and a gateway app over it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cigate.gateway.settings import GatewaySettings
from cigate.testing.plugin import RunningEmulator
from cigate.testing.services import AzuriteServer, PostgresServer
from tests.gateway.harness import GatewayHarness
from tests.gateway.live import LiveGateway, serving

#: An upstream nobody listens on: serving tests must never need one.
DEAD_UPSTREAM = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Backend:
    """Where a gateway keeps metadata and blobs (``--database``, ``--blobs``)."""

    name: str
    database: str
    blobs: str


def local_backend(tmp: Path) -> Backend:
    """A SQLite file and a blob directory in ``tmp`` (the default deployment)."""
    return Backend("sqlite-disk", f"sqlite+aiosqlite:///{tmp / 'gateway.db'}", str(tmp / "blobs"))


def on_local_disk(tmp: Path, **values: Any) -> GatewaySettings:
    """``GatewaySettings(**values)`` keeping its metadata and blobs in ``tmp``."""
    backend = local_backend(tmp)
    return GatewaySettings(database=backend.database, blobs=backend.blobs, **values)


def make_backend(kind: str, request: pytest.FixtureRequest, tmp: Path) -> Backend:
    """A fresh backend of ``kind``: a SQLite file + blob dir in ``tmp``, or a new PostgreSQL
    database + Azurite container on the session's servers (the storage plugin's fixtures)."""
    if kind == "sqlite-disk":
        return local_backend(tmp)
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    azurite: AzuriteServer = request.getfixturevalue("azurite_server")
    container = f"gw{uuid.uuid4().hex[:20]}"
    blobs = f"azure://{container}?connection_string={quote(azurite.connection_string, safe='')}"
    return Backend("postgres-azurite", postgres.create_database(), blobs)


@pytest.fixture(params=["sqlite-disk", "postgres-azurite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """SQLite + local disk (the default) and PostgreSQL + Azurite (scale-out), per test."""
    return make_backend(request.param, request, tmp_path)


def serving_settings(backend: Backend, **overrides: Any) -> GatewaySettings:
    """A gateway over ``backend`` whose upstream nobody listens on (``overrides`` win)."""
    values: dict[str, Any] = {"resume_interval": 0.2, "connect_timeout": 1.0, **overrides}
    return GatewaySettings(
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
        database=backend.database,
        blobs=backend.blobs,
        **values,
    )


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayHarness]:
    with GatewayHarness(serving_settings(backend)) as harness:
        yield harness


def live_settings(emulator: RunningEmulator, backend: Backend) -> GatewaySettings:
    """Settings of a gateway whose upstream is the emulator (fast retries for tests)."""
    return GatewaySettings(
        upstream=emulator.base_url,
        upstream_key=emulator.api_key,
        database=backend.database,
        blobs=backend.blobs,
        resume_interval=0.5,
        lease_seconds=3,
        harvest_attempts=3,
        harvest_backoff=0.05,
    )


@pytest.fixture
def live_gateway(emulator: RunningEmulator, backend: Backend) -> Iterator[LiveGateway]:
    """A gateway on a real server whose upstream is the emulator; one tenant ready."""
    settings = live_settings(emulator, backend)
    with serving(settings) as gateway:
        yield gateway


@pytest.fixture
def sqlite_live_gateway(emulator: RunningEmulator, tmp_path: Path) -> Iterator[LiveGateway]:
    """``live_gateway`` on SQLite + disk only, for behaviour that does not involve the backend."""
    backend = Backend(
        "sqlite-disk", f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", str(tmp_path / "blobs")
    )
    settings = live_settings(emulator, backend)
    with serving(settings) as gateway:
        yield gateway


@pytest.fixture
def postgres_azurite(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The scale-out backend alone (tests of several gateway processes sharing it)."""
    return make_backend("postgres-azurite", request, tmp_path)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Gateway processes a test started (``live.serve_process``); killed at its end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
