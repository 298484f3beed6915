"""``/healthz`` (alive), ``/readyz`` (the stores answer) and the start-up blob clean-up."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cigate.gateway.settings import GatewaySettings
from cigate.storage import open_blob_store
from cigate.testing.services import PostgresServer
from tests.gateway.conftest import DEAD_UPSTREAM, Backend, make_backend
from tests.gateway.harness import GatewayHarness

pytestmark = pytest.mark.storage


def test_readyz_says_ready_without_a_key_while_both_stores_answer(
    gateway: GatewayHarness,
) -> None:
    r = gateway.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "blobs": "ok"}}
    assert gateway.client.get("/healthz").json() == {"status": "ok"}


def test_readyz_names_a_blob_store_that_is_gone_and_the_liveness_probe_stays_up(
    gateway: GatewayHarness, backend: Backend
) -> None:
    assert gateway.client.get("/readyz").status_code == 200  # the stores exist now
    if backend.name == "sqlite-disk":
        shutil.rmtree(Path(backend.blobs))
    else:
        blobs = gateway.services.blobs
        gateway.call(blobs._container.delete_container)  # type: ignore[attr-defined]
    r = gateway.client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "unready", "checks": {"database": "ok", "blobs": "unavailable"}}
    assert "connection_string" not in r.text  # the reason stays in the log
    assert gateway.client.get("/healthz").status_code == 200


def test_readyz_names_a_database_that_is_gone(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL only: a SQLite file has no server to lose."""
    backend = make_backend("postgres-azurite", request, tmp_path)
    settings = GatewaySettings(
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
        database=backend.database,
        blobs=backend.blobs,
    )
    with GatewayHarness(settings) as gateway:
        assert gateway.client.get("/readyz").status_code == 200
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        postgres.drop_database(backend.database.rsplit("/", 1)[1])
        r = gateway.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"] == {"database": "unavailable", "blobs": "ok"}


def test_a_starting_gateway_removes_what_a_crashed_copy_left_in_azure(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A staging blob two days old (its writer is gone) goes at start-up; a fresh one stays."""
    backend = make_backend("postgres-azurite", request, tmp_path)
    old = f".staging/{(datetime.now(UTC) - timedelta(days=2)).strftime('%Y%m%dT%H%M%SZ')}-dead"
    new = f".staging/{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-live"

    async def stage() -> None:
        store = open_blob_store(backend.blobs)
        try:
            await store.check()  # creates the container
            for name in (old, new):
                staging = store._container.get_blob_client(name)  # type: ignore[attr-defined]
                await staging.stage_block("AAAA", b"partial", length=7)
        finally:
            await store.close()

    asyncio.run(stage())
    settings = GatewaySettings(
        upstream=DEAD_UPSTREAM, upstream_auth="none", database=backend.database, blobs=backend.blobs
    )
    with GatewayHarness(settings) as gateway:
        names: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            names = gateway.call(gateway.services.blobs.list_names)
            if old not in names:
                break
            time.sleep(0.1)
    assert names == [new]


def test_a_failing_store_tells_the_tenant_nothing_of_its_paths_or_credentials(
    gateway: GatewayHarness, backend: Backend
) -> None:
    tenant = gateway.add_tenant("t")
    row = gateway.put_file(tenant, b"secret", "a.txt")
    if backend.name == "sqlite-disk":
        shutil.rmtree(Path(backend.blobs))
    else:
        blobs = gateway.services.blobs
        gateway.call(blobs._container.delete_container)  # type: ignore[attr-defined]
    r = gateway.client.get(f"/files/{row.id}/content", headers=tenant.headers)
    assert r.status_code in (404, 503)
    if r.status_code == 503:
        error = r.json()["error"]
        assert error["message"].startswith("The gateway's storage is unavailable right now")
        assert error["code"] in ("storage", "blob_not_found")
    for leak in (str(backend.blobs), "connection_string", "AccountKey", "/tmp/", "127.0.0.1"):
        assert leak not in r.text
