"""Sandbox pool benchmark: a new container's first cell, from a cold template to a pooled fork.

Measured in this run, with the same isolation (bubblewrap when it works here, else unisolated)
and the default preload (numpy, pandas, matplotlib):

* ``cold``: a new pool (template start with its preload) until ``1+1`` answered in a kernel;
* ``forked``: ``acquire`` on an empty pool (``pool_size=0``): one fork of the template with its
  own namespaces, cgroup and volume, plus ``1+1``;
* ``pooled``: ``ContainerBackend.create`` + ``run_code(container, "1+1")`` with idle kernels
  waiting (what a fresh ``auto`` container costs a request);
* ``spawn rate``: kernels forked per second, one at a time and four at a time.

Medians of ``ROUNDS``. Last line: ``sandbox_pool: pooled/cold = 0.0XX (target <= 0.10)``.
Exits non-zero only on errors, never for missing the target.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cigate.clock import Clock
from cigate.engine.containers import ContainerBackend
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.pool import SandboxPool

ROUNDS = 20
TARGET = 0.10


async def cold_rounds(root: Path) -> list[float]:
    times = []
    for i in range(3):
        started = time.perf_counter()
        async with SandboxPool(SandboxSettings(root=root / f"cold-{i}", pool_size=0)) as pool:
            kernel = await pool.acquire()
            result = await kernel.execute("1+1", timeout=30)
            times.append(time.perf_counter() - started)
        if result.result_text != "2":
            raise RuntimeError(f"cold kernel answered {result!r}")
    return times


async def forked_and_pooled(root: Path) -> tuple[list[float], list[float], float, float, bool]:
    forked, pooled = [], []
    async with SandboxPool(SandboxSettings(root=root / "forked", pool_size=0)) as pool:
        await (await pool.acquire()).discard()  # the template is up
        for _ in range(ROUNDS):
            started = time.perf_counter()
            kernel = await pool.acquire()
            result = await kernel.execute("1+1", timeout=10)
            forked.append(time.perf_counter() - started)
            await kernel.discard()
            if result.result_text != "2":
                raise RuntimeError(f"forked kernel answered {result!r}")
        started = time.perf_counter()
        kernels = [await pool.acquire() for _ in range(ROUNDS)]
        sequential = ROUNDS / (time.perf_counter() - started)
        started = time.perf_counter()
        kernels += await asyncio.gather(*(pool.acquire() for _ in range(ROUNDS)))
        parallel = ROUNDS / (time.perf_counter() - started)
        await asyncio.gather(*(k.discard() for k in kernels))
        isolated = pool.isolated
    settings = SandboxSettings(root=root / "pool", pool_size=2)
    async with SandboxPool(settings) as pool:
        backend = ContainerBackend(root=root / "containers", kernels=pool, clock=Clock())
        try:
            for i in range(ROUNDS):
                await pool.wait_warm(timeout=120)
                started = time.perf_counter()
                container = backend.create(name=f"bench-{i}")
                run = await backend.run_code(container, "1+1", timeout=10)
                pooled.append(time.perf_counter() - started)
                if run.result.result_text != "2":
                    raise RuntimeError(f"pooled kernel answered {run.result!r}")
                await backend.delete(container.id)
        finally:
            await backend.close()
    return forked, pooled, sequential, parallel, isolated


async def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="cigate-bench-sandbox-"))
    try:
        cold = await cold_rounds(root)
        forked, pooled, sequential, parallel, isolated = await forked_and_pooled(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ms = {n: statistics.median(t) * 1000 for n, t in (("c", cold), ("f", forked), ("p", pooled))}
    print(f"isolation: {'bubblewrap' if isolated else 'none (bubblewrap unavailable)'}")
    print(f"cold   template start + 1+1: median {ms['c']:8.1f} ms  " + _all(cold))
    print(f"forked acquire + 1+1:        median {ms['f']:8.1f} ms  " + _all(forked))
    print(f"pooled create + 1+1:         median {ms['p']:8.1f} ms  " + _all(pooled))
    print(f"spawn rate: {sequential:.0f}/s one at a time, {parallel:.0f}/s {ROUNDS} at a time")
    print(f"sandbox_pool: pooled/cold = {ms['p'] / ms['c']:.3f} (target <= {TARGET:.2f})")
    return 0


def _all(times: list[float]) -> str:
    shown = ", ".join(f"{t * 1000:.1f}" for t in times[:8])
    return f"({shown}{', ...' if len(times) > 8 else ''})"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
