"""Harvest benchmark: ten 10 MiB files from one response, all at once vs the slowest single one.

DESIGN.md's budget: harvesting N files takes close to the slowest single download, not the sum.
Everything runs in this process against the emulator on a real loopback server (uvicorn in a
thread), so the ratio compares like with like on this machine. Reference and harvest are measured
in the same run, repeated, and medians are compared, in two settings:

* ``loopback``: no latency at all. Server and client share one interpreter (and, here, two
  cores), so moving 100 MiB is CPU-bound and no amount of concurrency can hide it; printed for
  honesty, not judged.
* ``remote``: every content request first waits ``LATENCY_MS`` (the emulator's ``latency_ms``
  fault), as a remote service's time to first byte does. This is the situation the budget is
  about — the harvest must overlap the waits instead of adding them up — and the last line.

Last line: ``harvest: all10/slowest_single = X.XX (target <= 1.5)``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cigate.config import ClientConfig, resolve_config
from cigate.download import Downloader
from cigate.emulator.app import create_app
from cigate.emulator.server import run_in_thread
from cigate.emulator.settings import EmulatorSettings
from cigate.refs import FileRef, find_files

FILES = 10
SIZE = 10 * 1024 * 1024
ROUNDS = 5
TARGET = 1.5
LATENCY_MS = 1000
PROMPT = f"""Write {FILES} files of {SIZE} bytes.

```python
import os
for i in range({FILES}):
    with open(f"/mnt/data/blob_{{i:02d}}.bin", "wb") as fh:
        fh.write(os.urandom({SIZE}))
```
"""


async def _timed_fetch(config: ClientConfig, out: Path, refs: list[FileRef]) -> float:
    async with Downloader(config, out) as downloader:
        start = time.perf_counter()
        harvest = await downloader.fetch_all(refs)
        elapsed = time.perf_counter() - start
    if not harvest.ok or len(harvest.paths) != len(refs):
        raise SystemExit(f"download failed: {harvest.errors}")
    return elapsed


async def measure(config: ClientConfig, refs: list[FileRef], work: Path) -> tuple[float, float]:
    """(median slowest single download, median time to harvest all) over ROUNDS rounds."""
    slowest: list[float] = []
    together: list[float] = []
    for n in range(ROUNDS):
        singles = []
        for i, ref in enumerate(refs):
            singles.append(await _timed_fetch(config, work / f"s{n}-{i}", [ref]))
        slowest.append(max(singles))
        together.append(await _timed_fetch(config, work / f"all{n}", refs))
        shutil.rmtree(work)
        work.mkdir()
    return statistics.median(slowest), statistics.median(together)


def _add_latency(root: str) -> None:
    rule = {"method": "GET", "path": "**/containers/*/files/*/content", "latency_ms": LATENCY_MS}
    request = urllib.request.Request(
        f"{root}/_emulator/faults",
        data=json.dumps(rule).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as reply:
        reply.read()


def main() -> int:
    settings = EmulatorSettings(pool_size=1)
    handle = run_in_thread(create_app(settings), "127.0.0.1", 0)
    work = Path(tempfile.mkdtemp(prefix="cigate-bench-"))
    try:
        config = resolve_config(
            endpoint=handle.url, api_key=settings.api_key, concurrency=FILES, env={}
        )
        client = config.openai_client()
        response = client.responses.create(
            model="bench",
            input=PROMPT,
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        )
        client.close()
        refs = find_files(response)
        if len(refs) != FILES:
            print(f"expected {FILES} cited files, got {len(refs)}", file=sys.stderr)
            return 1
        loop_slowest, loop_together = asyncio.run(measure(config, refs, work))
        _add_latency(handle.url)
        slowest, together = asyncio.run(measure(config, refs, work))
    finally:
        handle.stop()
        shutil.rmtree(work, ignore_errors=True)
    total_mib = FILES * SIZE / 2**20
    print(f"files: {FILES} x {SIZE // 2**20} MiB from one response ({len(refs)} citations)")
    for label, one, every in (
        ("loopback", loop_slowest, loop_together),
        (f"remote ({LATENCY_MS} ms to first byte)", slowest, together),
    ):
        print(
            f"{label}: slowest single {one * 1000:.0f} ms, all {FILES} at once "
            f"{every * 1000:.0f} ms ({total_mib / every:.0f} MiB/s), ratio {every / one:.2f} "
            f"(medians of {ROUNDS})"
        )
    ratio = together / slowest
    print(f"harvest: all{FILES}/slowest_single = {ratio:.2f} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
