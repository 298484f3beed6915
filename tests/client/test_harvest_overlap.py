"""A harvest overlaps its downloads (DESIGN.md: wall time close to the slowest single one).

Each container download is bounded by the remote service per connection, so what matters is
that a response's files go out in one wave with the default settings, and that the body is
handed to the writer in ~1 MiB batches whose progress adds up to the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx2

from cigate.client._config import ClientConfig
from cigate.client._download import CHUNK
from cigate.client._responses import adownload
from cigate.client._results import DownloadResult
from cigate.harvest.refs import FileRef
from cigate.testing.plugin import RunningEmulator

from .conftest import upload

CONTENT = "**/containers/*/files/*/content"
LATENCY_S = 0.8


class _InFlight(httpx2.AsyncBaseTransport):
    """Real HTTP, counting requests that are waiting for their response headers."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.now = self.peak = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.now -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_ten_files_download_in_one_wave_with_the_default_concurrency(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    """Every download waits LATENCY_S for its headers: with the default concurrency all ten
    wait at once (counted by the transport, not timed: these machines are noisy)."""
    first = upload(emulator, "f0.txt", b"file 0")
    assert first.container_id is not None
    refs = [first] + [
        upload(emulator, f"f{i}.txt", f"file {i}".encode(), first.container_id)
        for i in range(1, 10)
    ]
    emulator.control.add_fault(method="GET", path=CONTENT, latency_ms=int(LATENCY_S * 1000))
    counting = _InFlight()
    async with httpx2.AsyncClient(transport=counting, timeout=30) as http:
        harvest = await adownload(refs, out=tmp_path, config=config, http_client=http)
    assert harvest.ok, harvest.errors
    assert len(harvest.paths) == 10
    assert counting.peak == 10, f"at most {counting.peak} downloads were in flight together"


class _Progress:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def started(self, ref: FileRef, total: int | None) -> None:
        pass

    def advanced(self, ref: FileRef, nbytes: int) -> None:
        self.steps.append(nbytes)

    def finished(self, result: DownloadResult) -> None:
        pass


async def test_progress_comes_in_batches_that_add_up_to_the_file(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    data = os.urandom(3 * CHUNK + 4567)
    ref = upload(emulator, "big.bin", data)
    progress = _Progress()
    harvest = await adownload([ref], out=tmp_path, config=config, observer=progress)
    assert harvest.ok, harvest.errors
    assert harvest.paths[0].read_bytes() == data
    assert harvest.results[0].sha256 == hashlib.sha256(data).hexdigest()
    assert sum(progress.steps) == len(data)
    assert all(step >= CHUNK for step in progress.steps[:-1])  # batches, not socket reads
