"""Erasure and quotas against a live upstream (the emulator), through the official SDK.

The container is still alive upstream in these tests: an erased file must stay erased even
though the upstream could hand it out again, and a file past the quota must stay recoverable.
"""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from cigate.storage.blobs import open_blob_store
from cigate.storage.metadata import MetadataStore
from tests.gateway.live import CODE_TOOL, LiveGateway, code_input

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

TWO_FILES = """
open('/mnt/data/keep.txt', 'w').write('keep me')
open('/mnt/data/erase.txt', 'w').write('erase me')
print('done')
"""


def _blob_count(gw: LiveGateway) -> int:
    async def count() -> int:
        blobs = open_blob_store(gw.settings.blobs_url)
        try:
            names = await blobs.list_names()
        finally:
            await blobs.close()
        return sum(len(n.rsplit("/", 1)[-1]) == 64 for n in names)

    return asyncio.run(count())


def test_an_erased_file_does_not_come_back_while_the_upstream_still_holds_it(
    live_gateway: LiveGateway,
) -> None:
    sdk = live_gateway.openai()
    response = sdk.responses.create(model="gpt-4.1", input=code_input(TWO_FILES), tools=CODE_TOOL)
    files = {f["filename"]: f for f in live_gateway.harvested(response.id, at_least=2)}
    gone, kept = files["erase.txt"], files["keep.txt"]
    http = live_gateway.http()
    assert http.delete(f"/files/{gone['id']}").status_code == 200

    # The same response seen again (its citation and its container's listing): not recorded.
    again = sdk.responses.retrieve(response.id)
    assert again.id == response.id
    for _ in range(20):  # the listing runs in the background: look for a while, bounded
        names = [f["filename"] for f in http.get(f"/responses/{response.id}/files").json()["data"]]
        assert names == ["keep.txt"]
        time.sleep(0.1)
    # Every path answers 404, the container paths too (they would relay to the live upstream).
    container_id, cfile = gone["container_id"], gone["upstream_file_id"]
    for path in (f"/files/{gone['id']}/content", f"/files/{cfile}/content"):
        assert http.get(path).status_code == 404
    with pytest.raises(openai.NotFoundError):
        sdk.containers.files.content.retrieve(cfile, container_id=container_id)
    with pytest.raises(openai.NotFoundError):
        sdk.containers.files.retrieve(cfile, container_id=container_id)
    got = sdk.containers.files.content.retrieve(kept["upstream_file_id"], container_id=container_id)
    assert got.read() == b"keep me"
    assert _blob_count(live_gateway) == 1


QUOTA_FILES = """
open('/mnt/data/one.bin', 'wb').write(b'1' * 600)
open('/mnt/data/two.bin', 'wb').write(b'2' * 600)
print('done')
"""


def test_files_past_the_quota_are_recorded_failed_and_copied_once_there_is_room(
    live_gateway: LiveGateway,
) -> None:
    async def limit() -> None:
        async with await MetadataStore.open(live_gateway.settings.database_url) as meta:
            await meta.set_limits(live_gateway.tenant.id, quota_bytes=1000)

    asyncio.run(limit())
    sdk = live_gateway.openai()
    response = sdk.responses.create(model="gpt-4.1", input=code_input(QUOTA_FILES), tools=CODE_TOOL)
    files = live_gateway.harvested(response.id, at_least=2)
    states = sorted((f["state"], (f["error"] or {}).get("kind")) for f in files)
    assert states == [("failed", "quota_exceeded"), ("stored", None)]
    stored = next(f for f in files if f["state"] == "stored")
    failed = next(f for f in files if f["state"] == "failed")
    assert "quota of 1000 bytes is full" in failed["error"]["message"]
    assert _blob_count(live_gateway) == 1  # the refused copy left no blob behind

    http = live_gateway.http()
    refused = http.get(f"/files/{failed['id']}/content")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "quota of 1000 bytes is full" in error["message"]
    with pytest.raises(openai.PermissionDeniedError):
        sdk.containers.files.content.retrieve(
            failed["upstream_file_id"], container_id=failed["container_id"]
        )

    assert http.delete(f"/files/{stored['id']}").status_code == 200
    got = http.get(f"/files/{failed['id']}/content")
    assert got.status_code == 200
    assert got.content == (b"1" if failed["filename"] == "one.bin" else b"2") * 600
