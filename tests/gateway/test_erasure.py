"""Erasure: a tenant erases its files, the operator a tenant; nothing of them is left or served.

Every test runs on SQLite + local disk and on PostgreSQL + Azurite (the ``gateway`` fixture).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx2
import pytest

from cigate import ids
from cigate.exceptions import BadInputError
from cigate.gateway.erasure import erase, purge_tenant
from cigate.gateway.quotas import blob_present
from cigate.gateway.retention import RetentionSweep
from cigate.gateway.settings import GatewaySettings
from cigate.storage.blobs import read_all
from cigate.storage.errors import NotFoundError
from cigate.storage.records import FileRow
from tests.gateway.conftest import DEAD_UPSTREAM, Backend, serving_settings
from tests.gateway.harness import GatewayHarness, Tenant

pytestmark = pytest.mark.storage


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayHarness]:
    """The serving harness without background sweeps: these tests drive copies, erasures and
    retention themselves and count what they did."""
    settings = serving_settings(
        backend, resume_interval=3600, retention_interval=0, connect_timeout=1.0
    )
    with GatewayHarness(settings) as harness:
        yield harness


def _blob_names(gateway: GatewayHarness) -> set[str]:
    """Names of stored blobs (temporary and staging objects excluded)."""
    names = gateway.call(gateway.services.blobs.list_names)
    return {n.rsplit("/", 1)[-1] for n in names if len(n.rsplit("/", 1)[-1]) == 64}


def _download_paths(gateway: GatewayHarness, tenant: Tenant, row: FileRow, link: str) -> dict:
    """Every way the gateway serves ``row``: path -> (status, body)."""
    c = gateway.client
    paths = {
        "gateway id": f"/files/{row.id}/content",
        "cfile id": f"/files/{row.upstream_file_id}/content",
        "facade": f"/openai/v1/containers/{row.container_id}/files/{row.upstream_file_id}/content",
        "facade metadata": f"/openai/v1/containers/{row.container_id}/files/{row.upstream_file_id}",
        "metadata": f"/files/{row.id}",
    }
    found = {name: c.get(path, headers=tenant.headers) for name, path in paths.items()}
    parts = urlsplit(link)
    found["signed link"] = c.get(f"{parts.path}?{parts.query}")
    found["by-path"] = c.get(
        f"/responses/{row.response_id}/files/by-path/{row.filename}", headers=tenant.headers
    )
    return {name: (r.status_code, r.content) for name, r in found.items()}


def _stored(gateway: GatewayHarness, tenant: Tenant, data: bytes, name: str) -> FileRow:
    """A stored file of a response in a container the tenant owns."""
    cid, rid = ids.container_id(), f"resp_{ids.container_id()[5:]}"
    gateway.call(gateway.services.meta.claim, tenant.id, "container", cid)
    return gateway.put_file(tenant, data, name, container_id=cid, response_id=rid)


def test_an_erased_file_is_gone_from_every_download_path_and_the_blob_store(
    gateway: GatewayHarness,
) -> None:
    tenant = gateway.add_tenant("acme")
    row = _stored(gateway, tenant, b"secret,data\n1,2\n", "table.csv")
    link = gateway.client.post(f"/files/{row.id}/links", headers=tenant.headers).json()["url"]
    before = _download_paths(gateway, tenant, row, link)
    assert {k: v[0] for k, v in before.items()} == dict.fromkeys(before, 200)
    assert row.sha256 in _blob_names(gateway)

    r = gateway.client.delete(f"/files/{row.id}", headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["deleted"] is True

    after = _download_paths(gateway, tenant, row, link)
    statuses = {k: v[0] for k, v in after.items()}
    # A validly signed link answers like its erased file: 404 (a wrong one still gets 403).
    assert statuses == dict.fromkeys(after, 404)
    assert not any(b"secret" in body for _, body in after.values())
    assert row.sha256 not in _blob_names(gateway)
    again = gateway.client.delete(f"/files/{row.id}", headers=tenant.headers)
    assert again.status_code == 404
    assert again.json()["error"]["message"] == f"No file found with id '{row.id}'."


def test_erasure_by_cfile_id_is_audited_with_what_was_erased(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("acme")
    row = _stored(gateway, tenant, b"abc", "a.txt")
    gateway.client.get(f"/files/{row.id}/content", headers=tenant.headers)
    r = gateway.client.delete(f"/files/{row.upstream_file_id}", headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["id"] == row.id
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = gateway.client.get("/audit", headers=tenant.headers).json()["data"]
        if len(log) == 2:
            break
        time.sleep(0.05)
    assert [(e["action"], e["file_id"]) for e in log] == [
        ("download", row.id),
        ("erase", row.id),
    ]
    erased = log[1]
    assert erased["actor"] == f"tenant:{tenant.id}"
    assert erased["detail"] == {
        "reason": "request",
        "upstream_file_id": row.upstream_file_id,
        "container_id": row.container_id,
        "response_id": row.response_id,
        "sha256": row.sha256,
        "bytes": 3,
        "blob_deleted": True,
    }


def test_a_blob_shared_by_files_of_two_tenants_goes_with_the_last_of_them(
    gateway: GatewayHarness,
) -> None:
    a, b = gateway.add_tenant("a"), gateway.add_tenant("b")
    data = b"the same bytes, harvested three times"
    rows = [
        (a, _stored(gateway, a, data, "x.txt")),
        (a, _stored(gateway, a, data, "y.txt")),
        (b, _stored(gateway, b, data, "z.txt")),
    ]
    sha = rows[0][1].sha256
    assert {r.sha256 for _, r in rows} == {sha}
    for i, (tenant, row) in enumerate(rows):
        r = gateway.client.delete(f"/files/{row.id}", headers=tenant.headers)
        assert r.status_code == 200
        last = i == len(rows) - 1
        assert (sha in _blob_names(gateway)) is not last
        for other_tenant, other in rows[i + 1 :]:
            got = gateway.client.get(f"/files/{other.id}/content", headers=other_tenant.headers)
            assert (got.status_code, got.content) == (200, data)
    log = gateway.client.get("/audit", headers=b.headers).json()["data"]
    assert [e["detail"]["blob_deleted"] for e in log if e["action"] == "erase"] == [True]


def _ids_of(row: FileRow) -> list[str]:
    return [row.id, row.upstream_file_id]


@pytest.mark.parametrize("seed", range(3), ids=lambda s: f"seed{s}")
def test_a_tenant_can_never_erase_list_or_audit_another_tenants_files(
    gateway: GatewayHarness, seed: int
) -> None:
    rng = random.Random(seed)
    a, b = gateway.add_tenant("a"), gateway.add_tenant("b")
    a_rows = [_stored(gateway, a, rng.randbytes(rng.randint(1, 64)), f"f{i}") for i in range(3)]
    gateway.client.get(f"/files/{a_rows[0].id}/content", headers=a.headers)
    unknown = {
        "gwf_" + rng.randbytes(16).hex(),
        ids.container_file_id(),
        "assistant-" + rng.randbytes(8).hex(),
    }
    # B's answer for each of A's ids is exactly the answer for an id nobody has.
    for target in [i for row in a_rows for i in _ids_of(row)] + sorted(unknown):
        r = gateway.client.delete(f"/files/{target}", headers=b.headers)
        assert r.status_code == 404, target
        assert r.json() == {
            "error": {
                "message": f"No file found with id '{target}'.",
                "type": "invalid_request_error",
                "param": None,
                "code": "bad_input",
            }
        }
    for row in a_rows:
        r = gateway.client.get(f"/files/{row.id}/content", headers=a.headers)
        assert r.status_code == 200
    # B's audit log is empty, whatever cursor it sends; A's has A's records only.
    for after in ["", "0", "1", str(rng.randint(2, 10**6))]:
        page = gateway.client.get(f"/audit?after={after}", headers=b.headers).json()
        assert page["data"] == []
    deadline = time.monotonic() + 5
    while not gateway.client.get("/audit", headers=a.headers).json()["data"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert {
        e["tenant_id"] for e in gateway.client.get("/audit", headers=a.headers).json()["data"]
    } == {a.id}
    # Without a key nothing at all.
    assert gateway.client.delete(f"/files/{a_rows[0].id}").status_code == 401
    assert gateway.client.get("/audit").status_code == 401


def test_the_audit_log_pages_in_order_and_refuses_bad_cursors(gateway: GatewayHarness) -> None:
    tenant = gateway.add_tenant("acme")
    rows = [_stored(gateway, tenant, f"{i}".encode() * 10, f"f{i}") for i in range(5)]
    for row in rows:
        assert gateway.client.delete(f"/files/{row.id}", headers=tenant.headers).status_code == 200
    seen, after = [], ""
    while True:
        page = gateway.client.get(f"/audit?limit=2&after={after}", headers=tenant.headers).json()
        seen += [e["file_id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = str(page["last_id"])
    assert seen == [r.id for r in rows]
    for bad in ["limit=0", "limit=1001", "limit=x", "after=-1", "after=1e3", "after=%00"]:
        r = gateway.client.get(f"/audit?{bad}", headers=tenant.headers)
        assert r.status_code == 400, bad
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_purging_a_tenant_erases_its_files_and_keys_and_keeps_the_others(
    gateway: GatewayHarness,
) -> None:
    a, b = gateway.add_tenant("a"), gateway.add_tenant("b")
    shared = b"shared by a and b"
    a_rows = [_stored(gateway, a, shared, "s"), _stored(gateway, a, b"only a", "o")]
    b_row = _stored(gateway, b, shared, "s")
    svc = gateway.services
    count = gateway.call(purge_tenant, svc.meta, svc.blobs, a.id, actor="operator:purge")
    assert count == 2
    names = _blob_names(gateway)
    assert a_rows[1].sha256 not in names
    assert b_row.sha256 in names
    assert gateway.client.get(f"/files/{a_rows[0].id}", headers=a.headers).status_code == 401
    got = gateway.client.get(f"/files/{b_row.id}/content", headers=b.headers)
    assert (got.status_code, got.content) == (200, shared)
    log = gateway.call(svc.meta.audit_page, a.id)
    assert sorted(r.file_id for r in log if r.action == "erase") == sorted(r.id for r in a_rows)
    assert gateway.call(svc.meta.list_files, a.id) == []


async def _copy(
    gateway: GatewayHarness,
    row: FileRow,
    data: bytes,
    pause: asyncio.Event | None,
    put_done: asyncio.Event,
) -> list[str]:
    """What the harvester does with a copy: put the bytes, then record them (again if an
    erasure took the blob meanwhile). ``pause``: wait for it between the first put and its
    record; ``put_done`` is set after the first put."""
    svc = gateway.services

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    results = []
    for _ in range(3):
        info = await svc.blobs.put_stream(chunks(), expected_size=len(data))
        put_done.set()
        if pause is not None:
            await pause.wait()
            pause = None
        await asyncio.sleep(random.random() / 1000)
        outcome = await svc.meta.store_copy(
            row.id,
            info.sha256,
            info.size,
            None,
            blob_present=lambda info=info: blob_present(svc.blobs, info),
            delete_blob=svc.blobs.delete,
        )
        results.append(outcome.result)
        if outcome.result != "blob_missing":
            break
    return results


def test_erasure_racing_a_copy_of_the_same_bytes_neither_loses_nor_keeps_a_blob(
    gateway: GatewayHarness,
) -> None:
    """40 rounds: an erasure of X and a copy of Y with X's bytes at once. Every 4th round the
    erasure runs exactly between Y's put and its record (the window that loses the blob);
    every 4th+1 Y itself (with bytes of its own) is erased in that window (the window that
    keeps a dead one)."""
    a, b = gateway.add_tenant("a"), gateway.add_tenant("b")
    svc = gateway.services
    rng = random.Random(13)
    outcomes: list[list[str]] = []

    async def round_(i: int) -> None:
        data = f"round {i} ".encode() * 50
        x = await _stored_async(gateway, a, data)
        y = await gateway.cited_file(b.id, "y.bin")
        await svc.meta.claim_file(y.id, "race-test", 600)  # leased, as a copy's row is
        target = y if i % 4 == 1 else x
        forced = asyncio.Event() if i % 4 in (0, 1) else None

        put_done = asyncio.Event()

        async def erasing() -> None:
            if forced is not None:
                await put_done.wait()
            await asyncio.sleep(rng.random() / 500)
            await erase(svc.meta, svc.blobs, target, actor="test", reason="race")
            if forced is not None:
                forced.set()

        y_data = data + b"y" if i % 4 == 1 else data  # nobody else has Y's bytes then
        copy_task = asyncio.create_task(_copy(gateway, y, y_data, forced, put_done))
        await erasing()
        outcomes.append(await copy_task)
        if outcomes[-1] == ["gone"]:
            y_sha = hashlib.sha256(y_data).hexdigest()
            assert await svc.blobs.stat(y_sha) is None, f"round {i}: a dead blob was kept"
        now_y = await svc.meta.get_file(b.id, y.id)
        blob = await svc.blobs.stat(x.sha256 or "")
        if now_y is not None and now_y.state == "stored":
            assert blob is not None, f"round {i}: a stored row lost its blob"
            assert await read_all(svc.blobs, x.sha256 or "") == data
        for row in (x, y):
            await erase(svc.meta, svc.blobs, row, actor="test", reason="cleanup")
        assert await svc.blobs.stat(x.sha256 or "") is None, f"round {i}: a dead blob was kept"

    for i in range(40):
        gateway.call(round_, i)
    forced_missing = [o for i, o in enumerate(outcomes) if i % 4 == 0]
    forced_gone = [o for i, o in enumerate(outcomes) if i % 4 == 1]
    assert all(o[:2] == ["blob_missing", "stored"] for o in forced_missing), outcomes
    print(f"race outcomes: {sorted(map(str, outcomes))}")
    assert all(o == ["gone"] for o in forced_gone), forced_gone
    assert _blob_names(gateway) == set()


async def _stored_async(gateway: GatewayHarness, tenant: Tenant, data: bytes) -> FileRow:
    svc = gateway.services
    row = await gateway.cited_file(tenant.id, "x.bin")

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    info = await svc.blobs.put_stream(chunks(), expected_size=len(data))
    return await svc.meta.mark_stored(row.id, info.sha256, info.size, None)


def test_only_a_citation_by_a_new_response_records_an_erased_file_again(
    gateway: GatewayHarness,
) -> None:
    tenant = gateway.add_tenant("acme")
    row = _stored(gateway, tenant, b"cited", "c.txt")
    assert gateway.client.delete(f"/files/{row.id}", headers=tenant.headers).status_code == 200
    svc = gateway.services
    annotation = {
        "type": "container_file_citation",
        "container_id": row.container_id,
        "file_id": row.upstream_file_id,
        "filename": "c.txt",
    }
    record = svc.recorder.record_citation
    assert gateway.call(record, tenant.id, row.response_id, annotation) is None
    assert gateway.call(record, tenant.id, None, annotation) is None
    listing = gateway.call(
        lambda: svc.meta.record_file(
            tenant.id,
            kind="container",
            upstream_file_id=row.upstream_file_id,
            container_id=row.container_id,
            response_id="resp_new",
            filename="c.txt",
            origin="listing",
            citation=False,
        )
    )
    assert listing is None  # a listing never brings an erased file back
    assert gateway.call(svc.meta.list_files, tenant.id) == []
    again = gateway.call(record, tenant.id, "resp_new", annotation)
    assert again is not None
    assert again.id != row.id
    assert [r.id for r in gateway.call(svc.meta.list_files, tenant.id)] == [again.id]


def test_the_retention_sweep_erases_only_files_older_than_their_tenants_period(
    gateway: GatewayHarness,
) -> None:
    svc = gateway.services
    short, keep = gateway.add_tenant("short"), gateway.add_tenant("keep")
    gateway.call(svc.meta.set_limits, short.id, retention_days=30)
    shared = b"bytes both tenants hold"
    old = [_stored(gateway, short, shared, "s"), _stored(gateway, short, b"old own", "o")]
    kept = _stored(gateway, keep, shared, "k")
    svc.meta._clock.advance(31 * 86400)
    fresh = _stored(gateway, short, b"fresh", "f")
    sweep = RetentionSweep(svc.meta, svc.blobs, svc.tasks, interval=0)
    assert gateway.call(sweep.once) == 2
    assert gateway.call(sweep.once) == 0
    assert {r.id for r in gateway.call(svc.meta.list_files, short.id)} == {fresh.id}
    assert {r.id for r in gateway.call(svc.meta.list_files, keep.id)} == {kept.id}
    names = _blob_names(gateway)
    assert old[1].sha256 not in names
    assert {kept.sha256, fresh.sha256} <= names
    log = [r for r in gateway.call(svc.meta.audit_page, short.id) if r.action == "erase"]
    assert {(r.file_id, r.actor) for r in log} == {(o.id, "retention") for o in old}


def test_retention_and_quota_must_be_sensible_numbers(gateway: GatewayHarness) -> None:
    svc = gateway.services
    tenant = gateway.add_tenant("acme")
    for kwargs in ({"retention_days": 0}, {"retention_days": -1}, {"quota_bytes": -1}):
        with pytest.raises(BadInputError):
            gateway.call(svc.meta.set_limits, tenant.id, **kwargs)
    with pytest.raises(NotFoundError):
        gateway.call(svc.meta.set_limits, "ten_nobody", quota_bytes=1)
    gateway.call(svc.meta.set_limits, tenant.id, quota_bytes=0, retention_days=1)
    got = gateway.call(svc.meta.get_tenant, tenant.id)
    assert (got.quota_bytes, got.retention_days) == (0, 1)
    gateway.call(svc.meta.set_limits, tenant.id, quota_bytes=None)
    got = gateway.call(svc.meta.get_tenant, tenant.id)
    assert (got.quota_bytes, got.retention_days) == (None, 1)


def test_concurrent_copies_never_store_past_a_quota_together(gateway: GatewayHarness) -> None:
    """20 rounds: two copies of 60 bytes for a tenant with 100 bytes left, recorded at once:
    exactly one is stored, the other fails with ``quota_exceeded`` and leaves no blob."""
    svc = gateway.services
    tenant = gateway.add_tenant("acme")

    async def round_(i: int) -> None:
        await svc.meta.set_limits(tenant.id, quota_bytes=await svc.meta.usage(tenant.id) + 100)
        rows, infos = [], []
        for n in range(2):
            row = await gateway.cited_file(tenant.id, f"{i}-{n}")
            data = f"{i}-{n}".encode().ljust(60, b".")

            async def chunks(data: bytes = data) -> AsyncIterator[bytes]:
                yield data

            rows.append(row)
            infos.append(await svc.blobs.put_stream(chunks(), expected_size=60))
        outcomes = await asyncio.gather(
            *(
                svc.meta.store_copy(
                    row.id,
                    info.sha256,
                    info.size,
                    None,
                    blob_present=lambda info=info: blob_present(svc.blobs, info),
                    delete_blob=svc.blobs.delete,
                )
                for row, info in zip(rows, infos, strict=True)
            )
        )
        assert sorted(o.result for o in outcomes) == ["quota", "stored"], i
        for outcome, info in zip(outcomes, infos, strict=True):
            kept = await svc.blobs.stat(info.sha256) is not None
            assert kept is (outcome.result == "stored"), i
            if outcome.result == "quota":
                assert outcome.row is not None
                assert (outcome.row.state, outcome.row.error_kind) == ("failed", "quota_exceeded")

    for i in range(20):
        gateway.call(round_, i)
    assert gateway.call(svc.meta.usage, tenant.id) == 20 * 60


def test_the_gateway_applies_retention_in_the_background(backend: Backend) -> None:
    settings = GatewaySettings(
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
        database=backend.database,
        blobs=backend.blobs,
        resume_interval=3600,
        retention_interval=0.1,
    )
    with GatewayHarness(settings) as gateway:
        svc = gateway.services
        tenant = gateway.add_tenant("acme")
        gateway.call(svc.meta.set_limits, tenant.id, retention_days=1)
        row = _stored(gateway, tenant, b"expires", "e.txt")
        assert gateway.call(svc.meta.list_files, tenant.id) != []
        svc.meta._clock.advance(2 * 86400)
        for _ in range(200):  # bounded: the sweep runs every 0.1 s
            if not gateway.call(svc.meta.list_files, tenant.id):
                break
            time.sleep(0.05)
        assert gateway.call(svc.meta.list_files, tenant.id) == []
        assert row.sha256 not in _blob_names(gateway)
        r = gateway.client.get(f"/files/{row.id}/content", headers=tenant.headers)
        assert r.status_code == 404


def test_downloads_racing_an_erasure_get_the_whole_file_or_a_404(gateway: GatewayHarness) -> None:
    """30 rounds: three downloads and the erasure of the file at once (random order). Each
    download is the whole file or the unknown-file 404; never another status, never other bytes
    (a body cut short by the erasure counts separately and must be a prefix of the file)."""
    tenant = gateway.add_tenant("acme")
    rng = random.Random(7)
    seen: dict[str, int] = {}

    async def round_(i: int) -> None:
        data = f"race {i} ".encode() * 20_000
        row = await _stored_async(gateway, tenant, data)
        transport = httpx2.ASGITransport(app=gateway.app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://gw", headers=tenant.headers
        ) as client:

            async def download() -> str:
                await asyncio.sleep(rng.random() / 200)
                r = await client.get(f"/files/{row.id}/content")
                if r.status_code == 200:
                    if r.content != data:  # the erasure deleted the blob while it was sent
                        assert data.startswith(r.content), i
                        return "cut short"
                    return "200"
                assert r.status_code == 404, (i, r.status_code, r.text)
                assert r.json()["error"]["message"] == f"No file found with id '{row.id}'."
                return "404"

            async def erasing() -> str:
                await asyncio.sleep(rng.random() / 200)
                r = await client.delete(f"/files/{row.id}")
                assert r.status_code == 200, i
                return "erased"

            for outcome in await asyncio.gather(download(), download(), erasing(), download()):
                seen[outcome] = seen.get(outcome, 0) + 1

    for i in range(30):
        gateway.call(round_, i)
    print(f"downloads racing erasures: {seen}")
    assert seen["erased"] == 30
    assert seen.get("200", 0) + seen.get("404", 0) + seen.get("cut short", 0) == 90
    assert _blob_names(gateway) == set()
