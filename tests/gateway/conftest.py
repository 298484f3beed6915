"""Gateway fixtures: a storage backend (both kinds) and a gateway app over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cigate.gateway.settings import GatewaySettings
from tests.gateway.harness import GatewayHarness

#: An upstream nobody listens on: serving tests must never need one.
DEAD_UPSTREAM = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Backend:
    """Where a gateway keeps metadata and blobs (``--database``, ``--blobs``)."""

    name: str
    database: str
    blobs: str


@pytest.fixture(params=["sqlite-disk"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    db = tmp_path / "gateway.db"
    return Backend("sqlite-disk", f"sqlite+aiosqlite:///{db}", str(tmp_path / "blobs"))


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayHarness]:
    settings = GatewaySettings(
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
        database=backend.database,
        blobs=backend.blobs,
        resume_interval=0.2,
        connect_timeout=1.0,
    )
    with GatewayHarness(settings) as harness:
        yield harness
