"""An erasure racing a recording of the same file: the file stays erased.

A citation (from the response it was erased from) or a container listing that records the file
at the moment the tenant erases it must not bring it back: the tombstone check is part of the
insert's transaction, under the lock the erasure takes (SQLite + disk and PostgreSQL + Azurite).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import select

from cigate import ids
from cigate.gateway.erasure import erase
from cigate.storage.schema import erasures, files
from tests.gateway.conftest import Backend, serving_settings
from tests.gateway.harness import GatewayHarness

pytestmark = pytest.mark.storage

#: Rounds per backend; each races one erasure against one recording (bounded by count).
ROUNDS = 40


#: container id -> the one file its upstream listing names.
LISTED: dict[str, str] = {}


def _upstream(request: httpx2.Request) -> httpx2.Response:
    """Lists each container's one file; every download is a 404 (nothing to copy)."""
    parts = request.url.path.split("/")
    if parts[-1] == "files" and parts[-2] in LISTED:
        item = {"id": LISTED[parts[-2]], "bytes": 3, "path": "/mnt/data/f.txt"}
        return httpx2.Response(200, json={"object": "list", "data": [item], "has_more": False})
    return httpx2.Response(404, json={"error": {"code": "404", "message": "Resource not found"}})


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayHarness]:
    settings = serving_settings(
        backend, resume_interval=3600, retention_interval=0, connect_timeout=0.2, harvest_attempts=1
    )
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(_upstream))
    with GatewayHarness(settings, upstream_client=client) as harness:
        yield harness


@pytest.mark.parametrize("recording", ["citation", "listing"], ids=["citation", "listing"])
def test_a_recording_racing_an_erasure_never_brings_the_file_back(
    gateway: GatewayHarness, recording: str
) -> None:
    tenant = gateway.add_tenant("acme")
    svc = gateway.services

    async def round_(i: int) -> tuple[bool, int]:
        """One race; (tombstone present, rows of the file left)."""
        cid, rid = ids.container_id(), f"resp_{ids.container_id()[5:]}"
        await svc.meta.claim(tenant.id, "container", cid)
        await svc.meta.record_response(
            tenant.id, rid, upstream="test", model=None, container_ids=[cid]
        )
        fid = ids.container_file_id()
        LISTED[cid] = fid
        row = await gateway.cited_file(
            tenant.id, f"f{i}.txt", container_id=cid, file_id=fid, response_id=rid
        )
        await svc.meta.claim_file(row.id, "test", 600)  # no copy of it from the dead upstream

        async def record() -> None:
            await asyncio.sleep(0.0005 * (i % 4))
            if recording == "citation":
                annotation = {"container_id": cid, "file_id": fid, "filename": f"f{i}.txt"}
                await svc.recorder.record_citation(tenant.id, rid, annotation)
            else:
                await svc.recorder.reconcile(tenant.id, rid, [cid])

        async def erase_it() -> None:
            await asyncio.sleep(0.0005 * ((i + 2) % 4))
            await erase(svc.meta, svc.blobs, row, actor="test", reason="race")

        await asyncio.gather(record(), erase_it())
        async with svc.meta._read("test") as conn:  # the rows themselves
            tomb = (
                await conn.execute(
                    select(erasures).where(
                        erasures.c.tenant_id == tenant.id, erasures.c.upstream_file_id == fid
                    )
                )
            ).first()
            left = (
                await conn.execute(select(files.c.id).where(files.c.upstream_file_id == fid))
            ).all()
        return tomb is not None, len(left)

    outcomes = [gateway.call(round_, i) for i in range(ROUNDS)]
    assert all(tomb for tomb, _ in outcomes)
    revived = [i for i, (_, left) in enumerate(outcomes) if left]
    assert revived == [], f"{len(revived)} of {ROUNDS} erased files came back"
