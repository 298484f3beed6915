"""Files a gateway stored before its copies were checked: found, copied again, never served wrong.

Each test builds a store as a gateway before migration 6 left it (schema version 5, a
``stored`` row whose blob holds what the download answered), then starts today's gateway on it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest

from cigate.storage import migrations
from cigate.storage.blobs import open_blob_store
from cigate.storage.metadata import MetadataStore
from cigate.storage.schema import files
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import Backend, live_settings
from tests.gateway.harness import Tenant
from tests.gateway.live import LiveGateway, add_tenant, start_gateway

pytestmark = pytest.mark.storage

DATA = bytes(range(256)) * 40
ERROR_DOCUMENT = json.dumps(
    {"error": {"message": "The server had an error.", "type": "server_error", "param": None}}
).encode()


def _legacy_store(backend: Backend, rows: list[dict[str, Any]]) -> Tenant:
    """A store at schema version 5 holding ``rows`` as ``stored`` with their ``blob`` bytes."""

    async def build() -> None:
        blobs = open_blob_store(backend.blobs)
        meta = await MetadataStore.open(backend.database)
        try:
            for row in rows:

                async def chunks(data: bytes = row.pop("blob")) -> AsyncIterator[bytes]:
                    yield data

                info = await blobs.put_stream(chunks())
                await meta.claim(tenant.id, "container", row["container_id"])
                now = datetime.now(UTC)
                async with meta._write("legacy row") as conn:
                    await conn.execute(
                        files.insert().values(
                            **row,
                            tenant_id=tenant.id,
                            kind="container",
                            origin="citation",
                            state="stored",
                            sha256=info.sha256,
                            size=info.size,
                            tries=1,
                            created_at=now,
                            updated_at=now,
                        )
                    )
        finally:
            await meta.close()
            await blobs.close()

    original = migrations.MIGRATIONS
    migrations.MIGRATIONS = original[:5]
    try:
        tenant = add_tenant(backend.database, "acme")
        asyncio.run(build())
    finally:
        migrations.MIGRATIONS = original
    return tenant


def _legacy(**row: Any) -> dict[str, Any]:
    """One legacy row: ``id``, ``upstream_file_id``, ``container_id``, ``filename``, ``blob``."""
    return row


def _container_file(emulator: RunningEmulator, name: str, data: bytes) -> tuple[str, str]:
    client = emulator.openai()
    cid = client.containers.create(name="legacy").id
    return cid, client.containers.files.create(cid, file=(name, data)).id


@pytest.fixture
def gateways() -> Iterator[list[LiveGateway]]:
    started: list[LiveGateway] = []
    yield started
    for gw in started:
        gw.close()


def _serve(
    emulator: RunningEmulator, backend: Backend, tenant: Tenant, **changes: Any
) -> LiveGateway:
    return start_gateway(replace(live_settings(emulator, backend), **changes), tenant)


def _row(http: httpx2.Client, file_id: str, done, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    record: dict = {}
    while time.monotonic() < deadline:
        record = http.get(f"/files/{file_id}").json()
        if done(record):
            return record
        time.sleep(0.1)
    raise AssertionError(f"{file_id} never got there: {record}")


def test_the_sweep_finds_an_error_document_stored_as_a_file_and_copies_the_file_again(
    emulator: RunningEmulator, backend: Backend, gateways: list[LiveGateway]
) -> None:
    cid, cfile = _container_file(emulator, "f.bin", DATA)
    tenant = _legacy_store(
        backend,
        [
            _legacy(
                id="gwf_" + "1" * 32,
                upstream_file_id=cfile,
                container_id=cid,
                filename="f.bin",
                blob=ERROR_DOCUMENT,
            )
        ],
    )
    gw = _serve(emulator, backend, tenant)
    gateways.append(gw)
    http = gw.http()
    # Nobody asks for the file: the sweep alone finds it and copies it again.
    row = _row(http, "gwf_" + "1" * 32, lambda r: r["state"] == "stored" and r.get("verified"))
    assert row["bytes"] == len(DATA)
    assert http.get(f"/files/{row['id']}/content").content == DATA
    sdk = gw.openai()
    assert sdk.containers.files.content.retrieve(cfile, container_id=cid).read() == DATA


def test_a_suspect_file_is_never_served_before_or_after_its_container_expired(
    emulator: RunningEmulator, backend: Backend, gateways: list[LiveGateway]
) -> None:
    """Served at once after the start (the sweep may not have reached it): the true bytes
    while the container lives; once it is gone, an error, never the stored document."""
    live_cid, live_cfile = _container_file(emulator, "a.bin", DATA)
    gone_cid, gone_cfile = _container_file(emulator, "b.png", DATA)
    emulator.openai().containers.files.delete(gone_cfile, container_id=gone_cid)
    tenant = _legacy_store(
        backend,
        [
            _legacy(
                id="gwf_" + "a" * 32,
                upstream_file_id=live_cfile,
                container_id=live_cid,
                filename="a.bin",
                blob=ERROR_DOCUMENT,
            ),
            _legacy(
                id="gwf_" + "b" * 32,
                upstream_file_id=gone_cfile,
                container_id=gone_cid,
                filename="b.png",
                blob=ERROR_DOCUMENT,
            ),
        ],
    )
    gw = _serve(emulator, backend, tenant, resume_interval=3600.0)
    gateways.append(gw)
    http = gw.http()
    first = http.get(f"/files/gwf_{'a' * 32}/content")
    assert (first.status_code, first.content) == (200, DATA)
    gone = http.get(f"/files/gwf_{'b' * 32}/content")
    assert gone.status_code == 502
    assert ERROR_DOCUMENT not in gone.content
    facade = http.get(f"/openai/v1/containers/{gone_cid}/files/{gone_cfile}/content")
    assert facade.status_code == 502
    row = http.get(f"/files/gwf_{'b' * 32}").json()
    assert (row["state"], row["error"]["kind"]) == ("failed", "file_not_found")


def test_a_json_file_that_looks_like_an_error_is_kept_when_the_upstream_vouches_for_its_size(
    emulator: RunningEmulator, backend: Backend, gateways: list[LiveGateway]
) -> None:
    real = json.dumps({"error": "none", "rows": 3}).encode()  # a user's file, not an error
    kept_cid, kept_cfile = _container_file(emulator, "status.json", real)
    wrong_cid, wrong_cfile = _container_file(emulator, "result.json", DATA)
    tenant = _legacy_store(
        backend,
        [
            _legacy(
                id="gwf_" + "c" * 32,
                upstream_file_id=kept_cfile,
                container_id=kept_cid,
                filename="status.json",
                blob=real,
            ),
            _legacy(
                id="gwf_" + "d" * 32,
                upstream_file_id=wrong_cfile,
                container_id=wrong_cid,
                filename="result.json",
                blob=ERROR_DOCUMENT,
            ),
        ],
    )
    gw = _serve(emulator, backend, tenant)
    gateways.append(gw)
    http = gw.http()
    assert http.get(f"/files/gwf_{'c' * 32}/content").content == real
    assert http.get(f"/files/gwf_{'d' * 32}/content").content == DATA
    kept = _row(http, "gwf_" + "c" * 32, lambda r: r.get("verified"))
    assert (kept["state"], kept["bytes"], kept["tries"]) == ("stored", len(real), 1)
