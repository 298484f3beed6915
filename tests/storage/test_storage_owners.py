"""Owners: the first tenant to claim a container or file keeps it; migration 2 back-fills."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from cigate.clock import Clock
from cigate.storage import migrations
from cigate.storage._db import create_engine
from cigate.storage.metadata import MetadataStore
from cigate.storage.metadata_files import lock_file

pytestmark = pytest.mark.storage


async def test_the_first_claim_wins_and_file_rows_and_responses_claim_their_ids(
    tmp_path: Path,
) -> None:
    async with await MetadataStore.open(f"sqlite:///{tmp_path / 'g.db'}") as md:
        a, b = await md.create_tenant("a"), await md.create_tenant("b")
        assert await md.claim(a.id, "container", "cntr_1") == a.id
        assert await md.claim(b.id, "container", "cntr_1") == a.id
        await md.record_response(b.id, "resp_1", upstream="u", model=None, container_ids=["cntr_2"])
        await md.upsert_file(
            a.id,
            kind="files_api",
            upstream_file_id="assistant-1",
            container_id=None,
            response_id=None,
            filename="x",
            origin="on_demand",
        )
        assert await md.owner("container", "cntr_2") == b.id
        assert await md.files_api_owner("assistant-1") == a.id
        assert await md.owned_among(a.id, "container", ["cntr_1", "cntr_2", "cntr_9"]) == {"cntr_1"}


async def test_migration_2_gives_existing_containers_and_files_to_their_first_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    engine = create_engine(url)
    await migrations.apply_migrations(engine, Clock())
    async with engine.begin() as conn:
        for tenant in ("ten_a", "ten_b"):
            await conn.execute(
                text("INSERT INTO tenants VALUES (:t, :t, '2025-01-01 00:00:00')"), {"t": tenant}
            )
        await conn.execute(
            text(
                "INSERT INTO files (id, tenant_id, kind, upstream_file_id, container_id, filename,"
                " origin, state, tries, created_at, updated_at) VALUES"
                " ('gwf_1', 'ten_a', 'container', 'cfile_1', 'cntr_a', 'f', 'citation',"
                " 'stored', 0, '2025-01-01 00:00:01', '2025-01-01 00:00:01')"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO responses VALUES ('ten_b', 'resp_b', 'u', NULL,"
                " '[\"cntr_b\", \"cntr_a\"]', '2025-01-01 00:00:02')"
            )
        )
    await engine.dispose()
    monkeypatch.undo()
    async with await MetadataStore.open(url) as md:
        assert await md.owner("container", "cntr_a") == "ten_a"
        assert await md.owner("container", "cntr_b") == "ten_b"


async def test_postgres_advisory_lock_keys_are_the_ones_earlier_releases_take(
    postgres_database: str,
) -> None:
    """A file's lock and a blob's lock are the same (namespace, key) pairs as before they
    shared one helper: during a rolling upgrade an old and a new process must still exclude
    each other (keys read back from ``pg_locks`` while a transaction holds them)."""
    engine = create_engine(postgres_database)
    store = await MetadataStore.open(postgres_database)
    try:
        async with engine.connect() as holder, engine.connect() as observer, holder.begin():
            await lock_file(holder, "postgresql", "tnt_a", "cfile_1", "cntr_1")
            await store._lock(holder, 0x63670001, "a" * 64)  # a blob's digest
            rows = await observer.execute(
                text(
                    "SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid = :pid"
                ),
                {"pid": (await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one()},
            )
            held = {tuple(r) for r in rows}
        assert held == {(0x63670003, 1510894135, 2), (0x63670001, 1633771873, 2)}
    finally:
        await store.close()
        await engine.dispose()
