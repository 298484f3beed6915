"""Statements the harvest's hot writes send to the database, on both backends.

Every statement is one round trip to PostgreSQL (and one hop to SQLite's thread); each relayed
stream with a file makes these writes (bench/load.py). A write reads its row back through
``RETURNING``, not with another ``SELECT``; these tests count what is sent, never time it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from cigate.storage import MetadataStore, NotFoundError
from cigate.testing.storage_fixtures import Stores


@contextmanager
def statements(store: MetadataStore) -> Iterator[list[str]]:
    """The SQL statements ``store`` sends inside the block (transaction control left out)."""
    sent: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = " ".join(statement.split())
        if not words.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            sent.append(words)

    engine = store._engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def touching_files(sent: list[str]) -> list[str]:
    """The statements that read or change the ``files`` table, each as its first words."""
    heads = []
    for sql in sent:
        upper = sql.upper()
        if upper.startswith("SELECT") and " FROM FILES" in upper:
            heads.append("SELECT files")
        elif upper.startswith(("UPDATE FILES", "INSERT INTO FILES")):
            heads.append(" ".join(sql.split()[:3]))
    return heads


async def cite(store: MetadataStore, tenant_id: str, **extra: Any) -> Any:
    return await store.record_file(
        tenant_id,
        kind="container",
        upstream_file_id="cfile_1",
        container_id="cntr_1",
        response_id=extra.pop("response_id", "resp_1"),
        filename="plot.png",
        origin="citation",
        citation=True,
        **extra,
    )


async def list_again(
    store: MetadataStore, tenant_id: str, path: str | None, response_id: str | None = "resp_1"
) -> Any:
    return await store.record_file(
        tenant_id,
        kind="container",
        upstream_file_id="cfile_1",
        container_id="cntr_1",
        response_id=response_id,
        filename="plot.png",
        origin="listing",
        path=path,
        citation=False,
    )


async def test_a_new_file_row_is_inserted_and_returned_in_one_statement(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    with statements(md) as sent:
        row = await cite(md, tenant.id)
    # Before: the insert, two updates that changed nothing, and a SELECT of the row.
    assert touching_files(sent) == ["INSERT INTO files"], sent
    stored = await md.get_file(tenant.id, row.id)
    assert row == stored
    assert (row.origin, row.response_id, row.filename, row.state) == (
        "citation",
        "resp_1",
        "plot.png",
        "pending",
    )


async def test_the_listing_fills_what_the_citation_lacked_in_one_update(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    cited = await cite(md, tenant.id)
    assert cited.path is None
    with statements(md) as sent:
        listed = await list_again(md, tenant.id, "/mnt/data/plot.png")
    assert touching_files(sent) == ["INSERT INTO files", "UPDATE files SET"], sent
    assert listed.id == cited.id
    assert (listed.path, listed.response_id, listed.origin) == (
        "/mnt/data/plot.png",
        "resp_1",
        "citation",
    )
    assert listed == await md.get_file(tenant.id, cited.id)
    # Nothing left to fill: the row as it is, and neither column is overwritten.
    with statements(md) as sent:
        again = await list_again(md, tenant.id, "/mnt/data/other.png")
    assert again == listed
    assert touching_files(sent) == ["INSERT INTO files", "UPDATE files SET", "SELECT files"]


def claims(sent: list[str]) -> int:
    """How many statements wrote to ``owners`` (a claim of a container or file id)."""
    return sum(sql.upper().startswith("INSERT INTO OWNERS") for sql in sent)


async def test_only_a_new_file_row_claims_its_container(stores: Stores) -> None:
    """An existing row's claim was made with it and owners rows are never deleted: a listing
    of a cited file claimed the container again, a statement that changed nothing."""
    md = stores.metadata
    tenant, other = await md.create_tenant("acme"), await md.create_tenant("other")
    with statements(md) as sent:
        await cite(md, tenant.id)
    assert claims(sent) == 1, sent
    with statements(md) as sent:
        await list_again(md, tenant.id, "/mnt/data/plot.png")
        await cite(md, tenant.id)
    assert claims(sent) == 0, sent
    assert await md.claim(other.id, "container", "cntr_1") == tenant.id  # still acme's


async def test_a_listing_without_a_path_or_response_reads_the_row_once(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    first = await cite(md, tenant.id, response_id=None)
    with statements(md) as sent:
        again = await list_again(md, tenant.id, None, response_id=None)
    assert again == first
    assert touching_files(sent) == ["INSERT INTO files", "SELECT files"], sent


async def test_a_claim_and_its_loss_each_take_one_statement(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    row = await cite(md, tenant.id)
    with statements(md) as sent:
        claimed = await md.claim_file(row.id, "worker-a", 60)
    assert claimed is not None
    assert claimed.lease_owner == "worker-a"
    assert claimed == await md.get_file(tenant.id, row.id)
    assert touching_files(sent) == ["UPDATE files SET"], sent
    with statements(md) as sent:
        assert await md.claim_file(row.id, "worker-b", 60) is None
    assert touching_files(sent) == ["UPDATE files SET"], sent


async def test_a_stored_copy_is_not_read_back_after_its_update(stores: Stores) -> None:
    md, blobs = stores.metadata, stores.blobs
    tenant = await md.create_tenant("acme")
    row = await cite(md, tenant.id)
    data = b"\x89PNG round trips"

    async def body() -> AsyncIterator[bytes]:
        yield data

    info = await blobs.put_stream(body(), expected_size=len(data))

    async def present() -> bool:
        return True

    with statements(md) as sent:
        outcome = await md.store_copy(
            row.id,
            info.sha256,
            info.size,
            "image/png",
            blob_present=present,
            delete_blob=blobs.delete,
        )
    assert outcome.result == "stored"
    assert outcome.row == await md.get_file(tenant.id, row.id)
    assert outcome.row is not None
    assert (outcome.row.state, outcome.row.size) == ("stored", len(data))
    heads = touching_files(sent)
    assert heads[-1] == "UPDATE files SET", sent  # before: a SELECT of the row followed


async def test_a_state_change_returns_the_row_and_one_that_misses_still_reads_it(
    stores: Stores,
) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    row = await cite(md, tenant.id)
    with statements(md) as sent:
        failed = await md.mark_failed(row.id, "transient", "upstream 503", 3)
    assert (failed.state, failed.error_kind, failed.tries) == ("failed", "transient", 3)
    assert failed == await md.get_file(tenant.id, row.id)
    assert touching_files(sent) == ["UPDATE files SET"], sent
    requeued = await md.requeue(row.id)
    assert (requeued.state, requeued.error_kind) == ("pending", "transient")
    # A requeue of a row that is not ``failed`` any more changes nothing: the row as it is.
    with statements(md) as sent:
        again = await md.requeue(row.id)
    assert again == requeued == await md.get_file(tenant.id, row.id)
    assert touching_files(sent) == ["UPDATE files SET", "SELECT files"], sent
    with pytest.raises(NotFoundError):
        await md.mark_failed("gwf_" + "0" * 32, "transient", "gone", 1)
