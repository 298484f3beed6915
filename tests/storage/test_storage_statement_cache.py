"""The statements a relayed response runs for its bookkeeping are compiled once, not per call.

Every relayed stream records its response, claims its containers, records, leases and stores
each file and marks the response listed: a dozen statements per stream, at hundreds of streams
at once (bench/load.py). A statement SQLAlchemy cannot cache (a claim with its rows inlined had
no cache key) is compiled again on the event loop every time it runs. This runs the whole
sequence twice with fresh ids and checks that, the second time, SQLAlchemy took every compiled
statement from its cache, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import event

from cigate.storage import MetadataStore
from cigate.storage.records import FileRow

pytestmark = pytest.mark.storage


async def _bookkeeping(store: MetadataStore, tenant_id: str) -> None:
    """What the recorder and the harvester write and read for one streamed response that
    cites one file and whose container holds one more."""
    tag = secrets.token_hex(4)
    response, container, cited, other = (
        f"resp_{tag}",
        f"cntr_{tag}",
        f"cfile_{tag}a",
        f"cfile_{tag}b",
    )
    await store.record_response(tenant_id, response, "default", None, [])
    await store.record_response(tenant_id, response, "default", "gpt-x", [container])
    row = await store.record_file(
        tenant_id,
        kind="container",
        upstream_file_id=cited,
        container_id=container,
        response_id=response,
        filename="chart.png",
        origin="citation",
        citation=True,
    )
    assert row is not None
    assert await store.get_tenant(tenant_id) is not None
    claimed = await store.claim_file(row.id, "worker-1", 30.0)
    assert claimed is not None

    async def present() -> bool:
        return True

    async def delete(_sha256: str) -> None:
        raise AssertionError("a stored copy's blob is never deleted")

    outcome = await store.store_copy(
        row.id, "a" * 64, 10, "image/png", blob_present=present, delete_blob=delete
    )
    assert outcome.result == "stored"
    listed: list[FileRow | None] = []
    for file_id, name in ((cited, "chart.png"), (other, "data.csv")):
        listed.append(
            await store.record_file(
                tenant_id,
                kind="container",
                upstream_file_id=file_id,
                container_id=container,
                response_id=response,
                filename=name,
                origin="listing",
                path=f"/mnt/data/{name}",
                citation=False,
            )
        )
    cited_again, other_row = listed
    assert cited_again is not None
    assert other_row is not None
    assert cited_again.id == row.id
    assert cited_again.path == "/mnt/data/chart.png"  # the listing filled in the path
    assert await store.get_file(tenant_id, row.id) is not None
    assert await store.get_file(tenant_id, other, container_id=container) is not None
    await store.mark_listed(tenant_id, response)


async def test_a_relayed_responses_statements_all_come_from_the_compiled_cache(
    storage_backend: Any,
) -> None:
    store = await MetadataStore.open(storage_backend.database_url)
    seen: list[tuple[str, str]] = []

    def note(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if context is not None and context.compiled is not None:  # not driver SQL (BEGIN)
            seen.append((context.cache_hit.name, " ".join(statement.split())[:120]))

    try:
        tenant = await store.create_tenant("cache")
        await _bookkeeping(store, tenant.id)  # compiles what it runs
        event.listen(store._engine.sync_engine, "before_cursor_execute", note)
        await _bookkeeping(store, tenant.id)
    finally:
        await store.close()
    assert len(seen) >= 12  # the sequence above really ran its statements
    not_cached = [statement for status, statement in seen if status != "CACHE_HIT"]
    assert not_cached == []
