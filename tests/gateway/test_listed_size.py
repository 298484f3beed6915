"""A cited file copied before its container was listed is checked against the listing's size.

A citation's copy starts while the answer streams; the container is listed once the response
is over. When the listing gives another size than the copy stored (the code wrote the file
again after citing it), the stored copy is not kept as the file: it is copied again against
the listing. Checked for a copy that ended before the listing and for one still running when
the listing comes, and a listing of the same size changes nothing and fetches nothing more.

The upstream is an ``httpx2.MockTransport`` (the network edge): its file is ``OLD`` until the
test says it was rewritten, then ``NEW``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cigate.storage.records import FileRow
from tests.gateway.conftest import DEAD_UPSTREAM, on_local_disk
from tests.gateway.harness import GatewayHarness

CONTAINER = "cntr_" + "d" * 32
FILE_ID = "cfile_" + "e" * 32
OLD = b"first version of the chart\n"
NEW = b"second, longer version of the chart\n"


class RewrittenFile:
    """One container file whose bytes the test can change, and a download it can hold."""

    def __init__(self) -> None:
        self.content = OLD
        self.downloads = 0
        #: Cleared: the next download waits until it is set (a copy still running).
        self.release = threading.Event()
        self.release.set()
        self.download_started = threading.Event()

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path.endswith("/content"):
            self.downloads += 1
            served = self.content  # the bytes as they were when the download began
            self.download_started.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return httpx2.Response(200, content=served)
        if path.endswith(f"/files/{FILE_ID}"):
            return httpx2.Response(200, json=self.record())
        if path.endswith("/files"):
            page = {"object": "list", "data": [self.record()], "has_more": False}
            return httpx2.Response(200, json=page)
        return httpx2.Response(404, json={"error": {"message": "no", "code": "not_found"}})

    def record(self) -> dict[str, Any]:
        return {
            "id": FILE_ID,
            "object": "container.file",
            "container_id": CONTAINER,
            "bytes": len(self.content),
            "path": "/mnt/data/chart.txt",
            "source": "assistant",
            "created_at": 1,
        }


@pytest.fixture
def world(tmp_path: Path) -> Any:
    upstream = RewrittenFile()
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    settings = on_local_disk(
        tmp_path, upstream=DEAD_UPSTREAM, upstream_auth="none", harvest_backoff=0.01
    )
    with GatewayHarness(settings, upstream_client=client) as gw:
        yield gw, upstream, gw.add_tenant("acme")


def _cite(gw: GatewayHarness, tenant_id: str) -> FileRow:
    """The citation of a streamed answer: the row, and its copy started."""

    async def cite() -> FileRow:
        annotation = {
            "type": "container_file_citation",
            "container_id": CONTAINER,
            "file_id": FILE_ID,
            "filename": "chart.txt",
        }
        row = await gw.services.recorder.record_citation(tenant_id, "resp_1", annotation)
        assert row is not None
        return row

    return gw.call(cite)


def _list_and_settle(gw: GatewayHarness, tenant_id: str) -> FileRow:
    """The response is over: its container is listed; the row once every copy has ended."""

    async def conclude() -> FileRow:
        svc = gw.services
        await svc.recorder.reconcile(tenant_id, "resp_1", [CONTAINER])
        for _ in range(3):  # a check may start a copy, which ends before the next round
            await svc.tasks.idle()
        row = await svc.meta.get_file(tenant_id, FILE_ID, container_id=CONTAINER)
        assert row is not None
        return row

    return gw.call(conclude)


def _stored_bytes(gw: GatewayHarness, tenant: Any, row: FileRow) -> bytes:
    r = gw.client.get(f"/v1/files/{row.id}/content", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.content


def _wait_copy(gw: GatewayHarness, row: FileRow) -> FileRow:
    async def wait() -> FileRow:
        task = gw.services.tasks.running(f"copy-{row.id}")
        assert task is not None
        result = await task
        assert isinstance(result, FileRow)
        return result

    return gw.call(wait)


def test_a_copy_stored_before_the_listing_of_another_size_is_copied_again(world: Any) -> None:
    gw, upstream, tenant = world
    first = _wait_copy(gw, _cite(gw, tenant.id))
    assert (first.state, first.size) == ("stored", len(OLD))
    upstream.content = NEW  # the code wrote the file again after citing it
    row = _list_and_settle(gw, tenant.id)
    assert (row.state, row.size) == ("stored", len(NEW))
    assert row.sha256 == hashlib.sha256(NEW).hexdigest()
    assert _stored_bytes(gw, tenant, row) == NEW
    assert upstream.downloads == 2


def test_a_copy_still_running_when_the_listing_comes_is_checked_once_it_ends(
    world: Any,
) -> None:
    gw, upstream, tenant = world
    upstream.release.clear()  # the citation's download hangs
    _cite(gw, tenant.id)
    assert upstream.download_started.wait(10)
    upstream.content = NEW  # rewritten while the old bytes were on their way

    async def conclude_while_copying() -> FileRow:
        svc = gw.services
        await svc.recorder.reconcile(tenant.id, "resp_1", [CONTAINER])
        row = await svc.meta.get_file(tenant.id, FILE_ID, container_id=CONTAINER)
        assert row is not None
        assert row.state == "pending"  # the listing came while the copy ran
        upstream.release.set()
        for _ in range(3):
            await svc.tasks.idle()
        settled = await svc.meta.get_file(tenant.id, FILE_ID, container_id=CONTAINER)
        assert settled is not None
        return settled

    row = gw.call(conclude_while_copying)
    assert (row.state, row.size) == ("stored", len(NEW))
    assert _stored_bytes(gw, tenant, row) == NEW
    assert upstream.downloads == 2


def test_a_listing_of_the_stored_size_changes_nothing_and_fetches_nothing(world: Any) -> None:
    gw, upstream, tenant = world
    first = _wait_copy(gw, _cite(gw, tenant.id))
    row = _list_and_settle(gw, tenant.id)
    assert (row.state, row.size, row.sha256) == ("stored", len(OLD), first.sha256)
    assert row.path == "/mnt/data/chart.txt"  # the listing filled in the path
    assert upstream.downloads == 1
    assert _stored_bytes(gw, tenant, row) == OLD
