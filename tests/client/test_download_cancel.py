"""Downloads that are cancelled or hit local errors leave nothing behind and stop nothing else."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest

from cigate.client._atomic import TempFile
from cigate.client._config import resolve_config
from cigate.client._download import Downloader
from cigate.exceptions import CigateError, StorageError
from cigate.harvest.refs import FileRef

from .conftest import fast, leftovers

SIZE = 4 * 1024 * 1024


class _Stalls(httpx2.AsyncByteStream):
    """Two MiB of the body, then nothing (a stalled connection), until cancelled."""

    def __init__(self, arrived: anyio.Event) -> None:
        self.arrived = arrived

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"x" * (2 * 1024 * 1024)
        self.arrived.set()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover


def _transport(arrived: anyio.Event) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/content"):
            return httpx2.Response(200, stream=_Stalls(arrived))
        if request.url.path.endswith("/files"):
            record = {"id": "cfile_1", "bytes": SIZE, "path": "/mnt/data/big.bin"}
            return httpx2.Response(200, json={"object": "list", "data": [record]})
        return httpx2.Response(404)

    return httpx2.MockTransport(handler)


async def test_a_download_cancelled_mid_body_leaves_no_part_file(tmp_path: Path) -> None:
    config = fast(resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", env={}))
    arrived = anyio.Event()
    ref = FileRef("cfile_1", "big.bin", "cntr_1")
    async with (
        httpx2.AsyncClient(transport=_transport(arrived)) as client,
        Downloader(config, tmp_path, client=client) as downloader,
    ):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(downloader.fetch, ref)
                await arrived.wait()
                await anyio.sleep(0.05)  # the first batch reaches the temporary file
                assert leftovers(tmp_path)  # the test really cancels mid-body
                tg.cancel_scope.cancel()
    assert leftovers(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


async def test_a_disk_error_on_one_file_is_recorded_and_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/cfile_bad/content"):
            return httpx2.Response(200, content=b"BAD" * 100)
        if request.url.path.endswith("/cfile_good/content"):
            return httpx2.Response(200, content=b"good" * 100)
        return httpx2.Response(404, json={"error": {"message": "no record"}})

    real = TempFile._hash_and_write

    def disk_full_for_bad(self: TempFile, chunk: bytes) -> None:
        if chunk.startswith(b"BAD"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, chunk)

    monkeypatch.setattr(TempFile, "_hash_and_write", disk_full_for_bad)
    config = fast(resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", env={}))
    refs = [FileRef("cfile_bad", "bad.bin", "cntr_1"), FileRef("cfile_good", "good.bin", "cntr_1")]
    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client,
        Downloader(config, tmp_path, client=client) as downloader,
    ):
        harvest = await downloader.fetch_all(refs)
    bad, good = harvest.results
    assert isinstance(bad.error, StorageError)
    assert "No space left on device" in bad.error.message
    assert good.ok, good.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.bin"]


async def test_a_file_cited_twice_is_downloaded_once_even_concurrently(tmp_path: Path) -> None:
    calls: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/content"):
            calls.append(request.url.path)
            return httpx2.Response(200, content=b"chart")
        return httpx2.Response(404, json={"error": {"message": "no record"}})

    config = fast(resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", env={}))
    ref = FileRef("cfile_1", "chart.png", "cntr_1")
    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client,
        Downloader(config, tmp_path, client=client) as downloader,
    ):
        harvest = await downloader.fetch_all([ref, FileRef("cfile_1", "chart.png", "cntr_1")])
        async with anyio.create_task_group() as tg:  # the runner starts one fetch per citation
            tg.start_soon(downloader.fetch, FileRef("cfile_2", "b.png", "cntr_1"))
            tg.start_soon(downloader.fetch, FileRef("cfile_2", "b.png", "cntr_1"))
    assert [r.path for r in harvest.results] == [tmp_path / "chart.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "chart.png"]
    assert len(calls) == 2


@pytest.mark.timeout(10)  # the loop it guards against has no checkpoint fail_after could use
async def test_a_listing_whose_server_ignores_after_ends_instead_of_looping() -> None:
    pages: list[str | None] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        pages.append(request.url.params.get("after"))
        data = [{"id": "cfile_1", "path": "/mnt/data/a.png"}, {"id": "cfile_2", "path": "/b"}]
        return httpx2.Response(200, json={"object": "list", "data": data, "has_more": True})

    config = fast(resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", env={}))
    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client,
        Downloader(config, ".", client=client) as downloader,
    ):
        with anyio.fail_after(5):
            records = await downloader.list_files("cntr_1")
    assert [r["id"] for r in records] == ["cfile_1", "cfile_2"]
    assert pages == [None, "cfile_2"]


async def test_a_body_that_cannot_be_decoded_is_a_failed_file_not_a_crash(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/cfile_bad/content"):
            headers = {"content-encoding": "gzip"}
            return httpx2.Response(200, content=b"not gzip at all", headers=headers)
        if request.url.path.endswith("/cfile_good/content"):
            return httpx2.Response(200, content=b"good")
        return httpx2.Response(404, json={"error": {"message": "no record"}})

    config = fast(resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", env={}))
    refs = [FileRef("cfile_bad", "bad.bin", "cntr_1"), FileRef("cfile_good", "good.bin", "cntr_1")]
    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client,
        Downloader(config, tmp_path, client=client) as downloader,
    ):
        harvest = await downloader.fetch_all(refs)
    bad, good = harvest.results
    assert isinstance(bad.error, CigateError)
    assert "DecodingError" in bad.error.message
    assert good.ok, good.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.bin"]
