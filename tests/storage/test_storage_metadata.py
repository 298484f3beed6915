"""The metadata store on both backends: tenants, keys, files, leases, links, audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from cigate.clock import Clock
from cigate.exceptions import BadInputError
from cigate.storage import MetadataStore, NotFoundError, Tenant, migrations, schema
from cigate.storage._db import create_engine
from cigate.testing.storage_fixtures import StorageBackend, Stores

pytestmark = pytest.mark.storage


async def container_file(
    store: MetadataStore,
    tenant: Tenant,
    file_id: str = "cfile_1",
    container: str = "cntr_1",
    *,
    response: str | None = "resp_1",
    filename: str = "plot.png",
) -> str:
    row = await store.upsert_file(
        tenant.id,
        kind="container",
        upstream_file_id=file_id,
        container_id=container,
        response_id=response,
        filename=filename,
        origin="citation",
    )
    return row.id


async def test_tenant_names_are_unique_and_listed(stores: Stores) -> None:
    a = await stores.metadata.create_tenant("acme")
    b = await stores.metadata.create_tenant("beta")
    with pytest.raises(BadInputError):
        await stores.metadata.create_tenant("acme")
    assert [t.name for t in await stores.metadata.list_tenants()] == ["acme", "beta"]
    assert await stores.metadata.get_tenant(a.id) == a
    assert await stores.metadata.tenant_by_name("beta") == b


async def test_a_key_authenticates_its_tenant_until_revoked(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    key = await md.add_key(tenant.id)
    assert key.startswith("cgk_")
    assert len(key) > 40
    assert await md.tenant_for_key(key) == tenant
    (record,) = await md.list_keys(tenant.id)
    assert key.startswith(record.prefix)
    other = await md.create_tenant("other")
    assert await md.revoke_key(other.id, record.id) is False
    assert await md.revoke_key(tenant.id, record.id) is True
    assert await md.tenant_for_key(key) is None


@pytest.mark.parametrize(
    "presented",
    ["", "cgk_", "cgk_wrong", "Bearer cgk_x", "cgk_" + "a" * 500, "sk-not-ours"],
    ids=["empty", "prefix-only", "wrong", "with-scheme", "huge", "foreign"],
)
async def test_unknown_or_malformed_keys_find_no_tenant(stores: Stores, presented: str) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    await stores.metadata.add_key(tenant.id)
    assert await stores.metadata.tenant_for_key(presented) is None


async def test_the_plaintext_key_is_nowhere_in_the_database(stores: Stores) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    key = await stores.metadata.add_key(tenant.id)
    async with stores.metadata._read("dump") as conn:
        for table in schema.metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                assert key not in repr(tuple(row)), table.name
                assert key[4:] not in repr(tuple(row)), table.name


async def test_adding_a_key_to_an_unknown_tenant_fails(stores: Stores) -> None:
    with pytest.raises(NotFoundError):
        await stores.metadata.add_key("ten_missing")


async def test_upserting_a_file_twice_returns_the_same_row_and_the_citation_wins(
    stores: Stores,
) -> None:
    """A listing only guesses which response wrote a file; the one that cites it made it."""
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    first = await md.upsert_file(
        tenant.id,
        kind="container",
        upstream_file_id="cfile_1",
        container_id="cntr_1",
        response_id=None,
        filename="a.csv",
        origin="listing",
    )
    again = await md.upsert_file(
        tenant.id,
        kind="container",
        upstream_file_id="cfile_1",
        container_id="cntr_1",
        response_id="resp_1",
        filename="renamed.csv",
        origin="citation",
    )
    assert first.id == again.id
    assert first.id.startswith("gwf_")
    assert len(first.id) == 36
    assert (again.state, again.response_id, again.filename, again.origin) == (
        "pending",
        "resp_1",
        "renamed.csv",
        "citation",
    )
    later = await md.upsert_file(
        tenant.id,
        kind="container",
        upstream_file_id="cfile_1",
        container_id="cntr_1",
        response_id="resp_2",
        filename="other.csv",
        origin="listing",
    )
    assert (later.response_id, later.filename, later.origin) == (
        "resp_1",
        "renamed.csv",
        "citation",
    )


async def test_concurrent_upserts_of_one_file_agree_on_one_row(stores: Stores) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    ids = await asyncio.gather(*(container_file(stores.metadata, tenant) for _ in range(8)))
    assert len(set(ids)) == 1
    assert len(await stores.metadata.list_files(tenant.id)) == 1


@pytest.mark.parametrize(
    ("kind", "container"),
    [("container", None), ("files_api", "cntr_1"), ("bogus", "cntr_1")],
    ids=["container-without-id", "files-api-with-container", "unknown-kind"],
)
async def test_inconsistent_file_records_are_refused(
    stores: Stores, kind: str, container: str | None
) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    with pytest.raises(BadInputError):
        await stores.metadata.upsert_file(
            tenant.id,
            kind=kind,  # type: ignore[arg-type]
            upstream_file_id="cfile_1",
            container_id=container,
            response_id=None,
            filename="x",
            origin="citation",
        )


async def test_a_file_resolves_by_gateway_cfile_and_files_api_ids(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    gwf = await container_file(md, tenant)
    files_api = await md.upsert_file(
        tenant.id,
        kind="files_api",
        upstream_file_id="assistant-Abc123",
        container_id=None,
        response_id=None,
        filename="report.pdf",
        origin="assistants",
    )
    assert (await md.get_file(tenant.id, gwf)).upstream_file_id == "cfile_1"  # type: ignore[union-attr]
    assert (await md.get_file(tenant.id, "cfile_1")).id == gwf  # type: ignore[union-attr]
    assert (await md.get_file(tenant.id, "cfile_1", container_id="cntr_1")).id == gwf  # type: ignore[union-attr]
    assert await md.get_file(tenant.id, "cfile_1", container_id="cntr_other") is None
    found = await md.get_file(tenant.id, "assistant-Abc123")
    assert found is not None
    assert found.id == files_api.id
    assert found.container_id is None
    assert await md.get_file(tenant.id, "gwf_" + "0" * 32) is None


async def test_another_tenant_never_sees_a_file_response_link_or_download(stores: Stores) -> None:
    md = stores.metadata
    a = await md.create_tenant("a")
    b = await md.create_tenant("b")
    gwf = await container_file(md, a)
    await md.record_response(a.id, "resp_1", "https://up", "gpt-4.1", ["cntr_1"])
    link = await md.create_link(a.id, gwf, datetime.now(UTC) + timedelta(hours=1))
    await md.record_download(a.id, gwf, "key_x", 10, 200)
    for any_id in (gwf, "cfile_1"):
        assert await md.get_file(b.id, any_id) is None
        assert await md.get_file(b.id, any_id, container_id="cntr_1") is None
        with pytest.raises(NotFoundError):
            await md.create_link(b.id, any_id, datetime.now(UTC) + timedelta(hours=1))
    assert await md.list_files(b.id) == []
    assert await md.list_files(b.id, container_id="cntr_1") == []
    assert await md.list_files(b.id, response_id="resp_1") == []
    assert await md.get_response(b.id, "resp_1") is None
    assert await md.revoke_link(b.id, link.id) is False
    assert await md.list_downloads(b.id) == []
    with pytest.raises(NotFoundError):
        await md.list_files(b.id, after=gwf)


async def test_a_file_moves_from_pending_to_stored(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    gwf = await container_file(md, tenant)
    (claimed,) = await md.claim_pending("w1", 60)
    assert claimed.lease_owner == "w1"
    stored = await md.mark_stored(gwf, "a" * 64, 1234, "image/png")
    assert (stored.state, stored.sha256, stored.size, stored.content_type) == (
        "stored",
        "a" * 64,
        1234,
        "image/png",
    )
    assert stored.lease_owner is None
    assert await md.list_pending() == []
    assert await md.claim_pending("w2", 60) == []


async def test_a_file_retries_fails_and_can_be_requeued(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    gwf = await container_file(md, tenant)
    retrying = await md.mark_retrying(gwf, 1, error_kind="upstream_unavailable", message="500")
    assert (retrying.state, retrying.tries, retrying.error_kind) == (
        "pending",
        1,
        "upstream_unavailable",
    )
    failed = await md.mark_failed(gwf, "container_expired", "gone", 3)
    assert (failed.state, failed.tries, failed.error_kind, failed.error_message) == (
        "failed",
        3,
        "container_expired",
        "gone",
    )
    assert (await md.requeue(gwf)).state == "pending"
    with pytest.raises(NotFoundError):
        await md.mark_stored("gwf_missing", "a" * 64, 1, None)


async def test_two_stores_on_one_database_never_claim_the_same_row(
    stores: Stores, storage_backend: StorageBackend, storage_clock: Clock
) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    ids = {await container_file(md, tenant, f"cfile_{i}", response=None) for i in range(20)}
    other = await MetadataStore.open(storage_backend.database_url, clock=storage_clock)
    try:
        mine, theirs = await asyncio.gather(
            md.claim_pending("w1", 60, limit=20), other.claim_pending("w2", 60, limit=20)
        )
        mine_ids = {r.id for r in mine}
        theirs_ids = {r.id for r in theirs}
        assert not mine_ids & theirs_ids
        assert mine_ids | theirs_ids == ids
        assert await other.claim_pending("w2", 60, limit=20) == []  # leases still held
        # Either may have won every row (one transaction can run before the other starts):
        # a row held by one worker cannot be claimed by the other.
        if mine_ids:
            assert await other.claim_file(next(iter(mine_ids)), "w2", 60) is None
        else:
            assert await md.claim_file(next(iter(theirs_ids)), "w1", 60) is None
        storage_clock.advance(61)  # every lease expired (say w1 died): w2 takes them all
        retaken = await other.claim_pending("w2", 60, limit=20)
        assert {r.id for r in retaken} == ids
        assert all(r.lease_owner == "w2" for r in retaken)
    finally:
        await other.close()


async def test_a_worker_renews_its_own_lease_and_releases_it(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    gwf = await container_file(md, tenant)
    first = await md.claim_file(gwf, "w1", 10)
    renewed = await md.claim_file(gwf, "w1", 100)
    assert first is not None
    assert renewed is not None
    assert renewed.lease_expires_at > first.lease_expires_at  # type: ignore[operator]
    assert await md.claim_file(gwf, "w2", 10) is None
    await md.release(gwf, "w1")
    assert (await md.claim_file(gwf, "w2", 10)) is not None


async def test_pending_files_of_all_tenants_are_listed_for_resume(stores: Stores) -> None:
    md = stores.metadata
    a = await md.create_tenant("a")
    b = await md.create_tenant("b")
    one = await container_file(md, a)
    two = await container_file(md, b)
    done = await container_file(md, b, "cfile_2")
    await md.mark_stored(done, "b" * 64, 1, None)
    assert [r.id for r in await md.list_pending()] == [one, two]
    assert [r.id for r in await md.list_pending(limit=1)] == [one]


async def test_files_list_by_response_and_container_with_pagination(
    stores: Stores, storage_clock: Clock
) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    ids = []
    for i in range(5):
        storage_clock.advance(1)
        container = "cntr_a" if i < 3 else "cntr_b"
        ids.append(
            await container_file(md, tenant, f"cfile_{i}", container, response=f"resp_{i % 2}")
        )
    assert [r.id for r in await md.list_files(tenant.id)] == ids
    assert [r.id for r in await md.list_files(tenant.id, container_id="cntr_a")] == ids[:3]
    assert [r.id for r in await md.list_files(tenant.id, response_id="resp_1")] == [ids[1], ids[3]]
    page = await md.list_files(tenant.id, limit=2)
    page2 = await md.list_files(tenant.id, limit=2, after=page[-1].id)
    page3 = await md.list_files(tenant.id, limit=2, after=page2[-1].upstream_file_id)
    assert [r.id for r in page + page2 + page3] == ids
    newest = await md.list_files(tenant.id, order="desc", limit=2)
    assert [r.id for r in newest] == ids[:2:-1][:2] or [r.id for r in newest] == [ids[4], ids[3]]
    older = await md.list_files(tenant.id, order="desc", after=ids[3])
    assert [r.id for r in older] == [ids[2], ids[1], ids[0]]


async def test_responses_are_recorded_once_and_merge_container_ids(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    await md.record_response(tenant.id, "resp_1", "https://up", "gpt-4.1", ["cntr_1"])
    merged = await md.record_response(tenant.id, "resp_1", "https://up", None, ["cntr_2", "cntr_1"])
    assert merged.container_ids == ("cntr_1", "cntr_2")
    assert merged.model == "gpt-4.1"
    assert await md.get_response(tenant.id, "resp_1") == merged


async def test_links_are_recorded_resolved_and_revoked(stores: Stores) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    gwf = await container_file(md, tenant)
    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    link = await md.create_link(tenant.id, "cfile_1", expires)
    assert link.id.startswith("gwl_")
    assert link.file_id == gwf
    fetched = await md.get_link(link.id)
    assert fetched == link
    assert fetched.expires_at == expires
    assert await md.revoke_link(tenant.id, link.id) is True
    assert await md.revoke_link(tenant.id, link.id) is False
    revoked = await md.get_link(link.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await md.get_link("gwl_unknown") is None


async def test_downloads_are_audited_newest_first(stores: Stores, storage_clock: Clock) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    one = await container_file(md, tenant)
    two = await container_file(md, tenant, "cfile_2")
    await md.record_download(tenant.id, one, "key_a", 100, 200)
    storage_clock.advance(5)
    await md.record_download(tenant.id, two, "link:gwl_x", 50, 206)
    records = await md.list_downloads(tenant.id)
    assert [(r.file_id, r.actor, r.bytes_sent, r.status) for r in records] == [
        (two, "link:gwl_x", 50, 206),
        (one, "key_a", 100, 200),
    ]
    assert [r.file_id for r in await md.list_downloads(tenant.id, one)] == [one]


async def test_timestamps_are_utc_and_follow_the_injected_clock(
    stores: Stores, storage_clock: Clock
) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    storage_clock.advance(86_400)
    later = await stores.metadata.create_tenant("later")
    assert tenant.created_at.tzinfo == UTC
    fetched = await stores.metadata.get_tenant(later.id)
    assert fetched is not None
    assert fetched.created_at.tzinfo == UTC
    assert (
        timedelta(seconds=86_399)
        < fetched.created_at - tenant.created_at
        < timedelta(seconds=86_401)
    )


@pytest.mark.parametrize(
    "filename",
    [
        "quote\"and'apostrophe.csv",
        "crlf\r\nSet-Cookie: x=1.txt",
        "../../etc/passwd",
        "/abs/path.png",
        "x" * 10_000 + ".txt",
        "unicodé 数据 📈.xlsx",
    ],
    ids=["quotes", "crlf", "traversal", "absolute", "very-long", "unicode"],
)
async def test_hostile_filenames_are_stored_verbatim(stores: Stores, filename: str) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    gwf = await container_file(stores.metadata, tenant, filename=filename)
    row = await stores.metadata.get_file(tenant.id, gwf)
    assert row is not None
    assert row.filename == filename


async def test_a_nul_in_a_filename_is_replaced_because_no_database_stores_it(
    stores: Stores,
) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    gwf = await container_file(stores.metadata, tenant, filename="a\x00b")
    row = await stores.metadata.get_file(tenant.id, gwf)
    assert row is not None
    assert row.filename == "a\ufffdb"


@pytest.mark.parametrize(
    "upstream_id",
    ["", "x" * 201, "cfile\r\n1", "cfile\x001"],
    ids=["empty", "too-long", "crlf", "nul"],
)
async def test_malformed_upstream_ids_are_refused(stores: Stores, upstream_id: str) -> None:
    tenant = await stores.metadata.create_tenant("acme")
    with pytest.raises(BadInputError):
        await container_file(stores.metadata, tenant, upstream_id)
    assert await stores.metadata.get_file(tenant.id, "x" * 500) is None


async def test_transiently_failed_rows_are_claimed_again_after_their_backoff(
    stores: Stores, storage_backend: StorageBackend, storage_clock: Clock
) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    transient = await container_file(md, tenant, "cfile_t")
    late = await container_file(md, tenant, "cfile_late")
    denied = await container_file(md, tenant, "cfile_d")
    spent = await container_file(md, tenant, "cfile_s")
    pending = await container_file(md, tenant, "cfile_p")
    await md.mark_failed(transient, "upstream_unavailable", "500", 3)
    await md.mark_failed(late, "rate_limited", "429", 6)  # second round: waits longer
    await md.mark_failed(denied, "access_denied", "checkaccess", 1)
    await md.mark_failed(spent, "integrity", "cut", 12)  # at the cap

    def claim(store: MetadataStore, worker: str) -> Any:
        return store.claim_retryable(
            worker,
            60,
            kinds=("upstream_unavailable", "rate_limited", "integrity"),
            max_tries=12,
            delay=lambda tries: 30.0 * 2 ** max(0, tries // 3 - 1),
        )

    assert await claim(md, "w1") == []  # nothing waited long enough
    storage_clock.advance(31)
    other = await MetadataStore.open(storage_backend.database_url, clock=storage_clock)
    try:
        mine, theirs = await asyncio.gather(claim(md, "w1"), claim(other, "w2"))
        (row,) = mine + theirs  # exactly one of the racing processes wins it
        assert (row.id, row.state, row.tries) == (transient, "pending", 3)
        assert row.lease_owner in ("w1", "w2")
        assert await md.claim_file(transient, row.lease_owner, 60) is not None
        assert await claim(md, "w1") == []
        storage_clock.advance(30)
        (row,) = await claim(other, "w2")
        assert row.id == late
        storage_clock.advance(3600)
        assert await claim(md, "w1") == []  # access_denied and spent rows stay failed
        states = {r.id: r.state for r in await md.list_files(tenant.id)}
        assert (states[denied], states[spent], states[pending]) == ("failed", "failed", "pending")
    finally:
        await other.close()


async def test_unlisted_responses_are_claimed_once_when_old_enough_and_until_listed(
    stores: Stores, storage_backend: StorageBackend, storage_clock: Clock
) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    for rid in ("resp_listed", "resp_dead", "resp_young"):
        await md.record_response(
            tenant.id, rid, upstream="u", model=None, container_ids=[f"cntr_{rid[5:]}"]
        )
        if rid == "resp_dead":
            storage_clock.advance(100)
    await md.mark_listed(tenant.id, "resp_listed")

    def claim(store: MetadataStore, worker: str, lease: float = 60) -> Any:
        return store.claim_unlisted(worker, lease, older_than=90, horizon=1000)

    other = await MetadataStore.open(storage_backend.database_url, clock=storage_clock)
    try:
        mine, theirs = await asyncio.gather(claim(md, "w1"), claim(other, "w2"))
        (record,) = mine + theirs  # old enough, never listed; exactly one process wins it
        assert (record.response_id, record.container_ids) == ("resp_dead", ("cntr_dead",))
        assert await claim(md, "w3") == []  # leased
        storage_clock.advance(61)  # the lister died too: its lease runs out
        assert [r.response_id for r in await claim(md, "w3")] == ["resp_dead"]
        await md.mark_listed(tenant.id, "resp_dead")
        assert await claim(md, "w3") == []  # listed; resp_young is 61 s old
        storage_clock.advance(30)  # resp_young is now 91 s old
        assert [r.response_id for r in await claim(other, "w2")] == ["resp_young"]
        storage_clock.advance(2000)  # past the horizon: its containers are long gone
        assert await claim(md, "w1") == []
    finally:
        await other.close()


async def test_migration_4_counts_responses_recorded_before_it_as_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
    engine = create_engine(url)
    await migrations.apply_migrations(engine, Clock())
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO tenants VALUES ('ten_a', 'a', '2025-01-01 00:00:00')"))
        await conn.execute(
            text(
                "INSERT INTO responses (tenant_id, response_id, upstream, container_ids,"
                " created_at) VALUES ('ten_a', 'resp_old', 'u', '[\"cntr_old\"]',"
                " '2025-01-01 00:00:01')"
            )
        )
    await engine.dispose()
    monkeypatch.undo()
    async with await MetadataStore.open(url) as md:  # applies migration 4
        async with md._read("inspect") as conn:
            query = select(schema.responses).where(schema.responses.c.response_id == "resp_old")
            row = (await conn.execute(query)).one()
        assert row.listed_at == row.created_at
        assert await md.claim_unlisted("w", 60, older_than=0, horizon=10**10) == []


async def test_migration_6_leaves_rows_stored_before_it_unverified_and_every_new_store_verified(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
    engine = create_engine(empty_database_url)
    await migrations.apply_migrations(engine, Clock())
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO tenants VALUES ('ten_a', 'a', '2025-01-01 00:00:00')"))
        await conn.execute(
            text(
                "INSERT INTO files (id, tenant_id, kind, upstream_file_id, container_id,"
                " filename, origin, state, sha256, size, tries, created_at, updated_at) VALUES"
                " ('gwf_old', 'ten_a', 'container', 'cfile_1', 'cntr_a', 'f.bin', 'citation',"
                " 'stored', :sha, 3, 1, '2025-01-01 00:00:01', '2025-01-01 00:00:01')"
            ),
            {"sha": "a" * 64},
        )
    await engine.dispose()
    monkeypatch.undo()
    async with await MetadataStore.open(empty_database_url) as md:  # applies migration 6
        old = await md.get_file("ten_a", "gwf_old")
        assert old is not None
        assert (old.state, old.verified_at, old.servable) == ("stored", None, False)
        new = await container_file(md, Tenant("ten_a", "a", old.created_at), "cfile_2")
        stored = await md.mark_stored(new, "b" * 64, 5, None)
        assert stored.verified_at is not None
        assert stored.servable
        assert [r.id for r in await md.claim_unverified("w", 60)] == ["gwf_old"]


@pytest.fixture
def empty_database_url(
    storage_backend: StorageBackend, tmp_path: Path, request: pytest.FixtureRequest
) -> str:
    """A database of the test's backend that nobody migrated yet."""
    if storage_backend.database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'legacy.db'}"
    postgres = request.getfixturevalue("postgres_server")
    url: str = postgres.create_database()
    return url


async def test_unverified_rows_are_claimed_once_and_end_verified_or_back_to_pending(
    stores: Stores, storage_backend: StorageBackend, storage_clock: Clock
) -> None:
    md = stores.metadata
    tenant = await md.create_tenant("acme")
    ids = []
    for i in range(12):
        file_id = await container_file(md, tenant, f"cfile_{i}", response=None)
        await md.mark_stored(file_id, f"{i:064x}", 10, None)
        ids.append(file_id)
    async with md._write("forget verification") as conn:  # as rows stored before migration 6
        await conn.execute(schema.files.update().values(verified_at=None))
    other = await MetadataStore.open(storage_backend.database_url, clock=storage_clock)
    try:
        mine, theirs = await asyncio.gather(
            md.claim_unverified("w1", 60), other.claim_unverified("w2", 60)
        )
        assert not {r.id for r in mine} & {r.id for r in theirs}
        assert {r.id for r in mine} | {r.id for r in theirs} == set(ids)
        assert await md.claim_unverified("w1", 60) == []  # leases held
    finally:
        await other.close()
    ok = await md.mark_verified(ids[0], f"{0:064x}")
    assert (ok.verified_at is not None, ok.lease_owner) == (True, None)
    stale = await md.mark_verified(ids[1], "f" * 64)  # the bytes changed meanwhile: untouched
    assert stale.verified_at is None
    bad = await md.mark_suspect(ids[2], f"{2:064x}", "an error document", "w1", 60)
    assert (bad.state, bad.sha256, bad.size, bad.error_kind) == ("pending", None, None, "integrity")
    assert bad.lease_owner == "w1"
    assert await md.claim_file(ids[2], "w2", 60) is None  # the suspect's copy is w1's
    again = await md.mark_suspect(ids[2], f"{2:064x}", "twice", "w2", 60)  # no longer stored
    assert (again.state, again.lease_owner) == ("pending", "w1")
