"""Migrations: applied once, safe when several processes start together, schema matches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from cigate.exceptions import ConfigurationError, StorageError
from cigate.storage import MetadataStore, schema
from cigate.storage._db import create_engine
from cigate.storage.migrations import MIGRATIONS, applied_versions, apply_migrations
from cigate.testing.services import PostgresServer

pytestmark = pytest.mark.storage


@pytest.fixture(params=["sqlite-disk", "postgres-azurite"], ids=["sqlite-disk", "postgres-azurite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet."""
    if request.param == "sqlite-disk":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    url = postgres.create_database()
    yield url
    postgres.drop_database(url.rsplit("/", 1)[1])


async def test_migrations_are_applied_once_and_recorded(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        from cigate.clock import Clock

        assert await apply_migrations(engine, Clock()) == [m.version for m in MIGRATIONS]
        assert await apply_migrations(engine, Clock()) == []
        assert await applied_versions(engine) == [m.version for m in MIGRATIONS]
    finally:
        await engine.dispose()


async def test_many_stores_opening_a_fresh_database_at_once_migrate_it_once(
    empty_database: str,
) -> None:
    stores = await asyncio.gather(*(MetadataStore.open(empty_database) for _ in range(5)))
    try:
        tenant = await stores[0].create_tenant("acme")
        assert await stores[4].get_tenant(tenant.id) == tenant
        async with stores[1]._read("count") as conn:
            rows = (await conn.execute(text("SELECT version FROM schema_migrations"))).all()
        assert sorted(r[0] for r in rows) == [m.version for m in MIGRATIONS]
    finally:
        for store in stores:
            await store.close()


async def test_the_migrated_database_matches_the_declared_tables(empty_database: str) -> None:
    store = await MetadataStore.open(empty_database)
    try:
        async with store._read("inspect") as conn:
            found = await conn.run_sync(
                lambda sync: {
                    name: {c["name"] for c in inspect(sync).get_columns(name)}
                    for name in inspect(sync).get_table_names()
                }
            )
    finally:
        await store.close()
    declared = {t.name: {c.name for c in t.columns} for t in schema.metadata.sorted_tables}
    assert found == declared


async def test_the_migrated_database_has_the_declared_indexes(empty_database: str) -> None:
    store = await MetadataStore.open(empty_database)
    try:
        async with store._read("inspect") as conn:
            found = await conn.run_sync(
                lambda sync: {
                    (name, i["name"], tuple(i["column_names"]))
                    for name in inspect(sync).get_table_names()
                    for i in inspect(sync).get_indexes(name)
                    if not i.get("duplicates_constraint")  # PostgreSQL's unique constraints
                }
            )
    finally:
        await store.close()
    declared = {
        (t.name, i.name, tuple(c.name for c in i.columns))
        for t in schema.metadata.sorted_tables
        for i in t.indexes
    }
    assert ("files", "ix_files_state_error_updated", ("state", "error_kind", "updated_at")) in (
        declared
    )
    assert found == declared


async def test_a_database_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = await MetadataStore.open(url)
    async with store._write("bump") as conn:
        await conn.execute(
            text("INSERT INTO schema_migrations VALUES (999, 'future', '2030-01-01 00:00:00')")
        )
    await store.close()
    with pytest.raises(StorageError, match="newer"):
        await MetadataStore.open(url)


async def test_the_default_database_lives_in_cigate_home(tmp_path: Path) -> None:
    store = await MetadataStore.open()
    await store.close()
    assert (tmp_path / "cigate-home" / "gateway.db").exists()


@pytest.mark.parametrize(
    "url", ["mysql://x/y", "not a url", "oracle+cx://a"], ids=["mysql", "garbage", "oracle"]
)
async def test_unsupported_database_urls_fail_at_start_up(url: str) -> None:
    with pytest.raises(ConfigurationError):
        await MetadataStore.open(url)


async def test_an_unreachable_postgres_is_a_storage_error(unused_tcp_port: int) -> None:
    with pytest.raises(StorageError):
        await MetadataStore.open(f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x")


async def test_opening_waits_for_another_connections_transaction_to_switch_to_wal(
    tmp_path: Path,
) -> None:
    """SQLite refuses the WAL switch at once (no busy wait) while another connection is in a
    transaction; gateways starting together on a fresh file hit that under load."""
    import sqlite3

    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("CREATE TABLE t (x)")
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (1)")
        opening = asyncio.create_task(MetadataStore.open(f"sqlite:///{path}"))
        await asyncio.sleep(0.3)
        assert not opening.done()  # waiting, not failed
        other.execute("COMMIT")
        store = await asyncio.wait_for(opening, 30)
    finally:
        other.close()
    try:
        async with store._read("journal mode") as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    finally:
        await store.close()


async def test_migration_5_adds_file_paths_and_keeps_earlier_files_matched_by_name(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cigate.clock import Clock
    from cigate.storage import migrations

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
    engine = create_engine(empty_database)
    try:
        await migrations.apply_migrations(engine, Clock())
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO tenants VALUES ('ten_a', 'a', '2025-01-01 00:00:00')")
            )
            await conn.execute(
                text(
                    "INSERT INTO files (id, tenant_id, kind, upstream_file_id, container_id,"
                    " filename, origin, state, tries, created_at, updated_at) VALUES"
                    " ('gwf_1', 'ten_a', 'container', 'cfile_1', 'cntr_a', 'report.csv',"
                    " 'citation', 'pending', 0, '2025-01-01 00:00:01', '2025-01-01 00:00:01')"
                )
            )
    finally:
        await engine.dispose()
    monkeypatch.undo()
    async with await MetadataStore.open(empty_database) as md:  # applies migration 5
        before = await md.get_file("ten_a", "gwf_1")
        assert before is not None
        assert (before.filename, before.path) == ("report.csv", None)
        kwargs = {
            "kind": "container",
            "upstream_file_id": "cfile_1",
            "container_id": "cntr_a",
            "response_id": None,
            "filename": "report.csv",
            "origin": "listing",
        }
        listed = await md.upsert_file("ten_a", path="/mnt/data/b/report.csv", **kwargs)  # type: ignore[arg-type]
        assert (listed.id, listed.path) == ("gwf_1", "/mnt/data/b/report.csv")
        again = await md.upsert_file("ten_a", path="/mnt/data/other", **kwargs)  # type: ignore[arg-type]
        assert again.path == "/mnt/data/b/report.csv"  # filled once, never moved
        odd = await md.upsert_file(
            "ten_a",
            kind="container",
            upstream_file_id="cfile_2",
            container_id="cntr_a",
            response_id=None,
            filename="x\x00\udcff",
            origin="listing",
            path="/mnt/data/d/x\x00\udcff",
        )
        assert odd.path is not None
        assert odd.path.startswith("/mnt/data/d/x")  # kept, but for what no database can store
        assert "\x00" not in odd.path
        odd.path.encode("utf-8")


async def test_migration_7_keeps_earlier_downloads_as_download_records_without_limits(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cigate.clock import Clock
    from cigate.storage import migrations

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:6])
    engine = create_engine(empty_database)
    try:
        await migrations.apply_migrations(engine, Clock())
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO tenants VALUES ('ten_a', 'a', '2025-01-01 00:00:00')")
            )
            await conn.execute(
                text(
                    "INSERT INTO downloads (tenant_id, file_id, actor, bytes_sent, status, at)"
                    " VALUES ('ten_a', 'gwf_1', 'tenant:ten_a', 5, 200, '2025-01-01 00:00:01')"
                )
            )
    finally:
        await engine.dispose()
    monkeypatch.undo()
    async with await MetadataStore.open(empty_database) as md:  # applies migration 7
        tenant = await md.get_tenant("ten_a")
        assert tenant is not None
        assert (tenant.quota_bytes, tenant.retention_days) == (None, None)
        [record] = await md.audit_page("ten_a")
        assert (record.action, record.detail, record.bytes_sent) == ("download", None, 5)
        assert [d.file_id for d in await md.list_downloads("ten_a")] == ["gwf_1"]
        assert await md.erased("ten_a", "cfile_1", "cntr_a") is None
