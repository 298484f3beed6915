"""Sandbox pool benchmark: first cell of a new container, pooled kernel vs a cold start.

DESIGN.md's budget: a new container answers its first code cell fast because kernels are
pre-started. Both numbers are measured in this run, with the same isolation (bubblewrap when it
works here, else unisolated):

* ``cold``: start a kernel from scratch (no preload) and run ``1+1`` in it.
* ``pooled``: ``ContainerBackend.create`` + ``run_code(container, "1+1")`` with a warm
  ``SandboxPool`` (default preload) as the backend's kernel provider; the pool refills between
  rounds, as it does between requests on a server.

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
from cigate.sandbox.bwrap import plan_launch
from cigate.sandbox.kernel import Kernel
from cigate.sandbox.pool import SandboxPool

ROUNDS = 5
TARGET = 0.10


async def cold_round(root: Path, isolation: str, i: int) -> float:
    plan = plan_launch(isolation)
    started = time.perf_counter()
    kernel = await Kernel.start(plan=plan, workdir=root / f"cold-{i}")
    result = await kernel.execute("1+1", timeout=10)
    elapsed = time.perf_counter() - started
    await kernel.shutdown()
    if result.result_text != "2":
        raise RuntimeError(f"cold kernel answered {result!r}")
    return elapsed


async def pooled_rounds(root: Path, isolation: str) -> list[float]:
    settings = SandboxSettings(root=root / "pool", pool_size=2, isolation=isolation)
    times = []
    async with SandboxPool(settings) as pool:
        backend = ContainerBackend(root=root / "containers", kernels=pool, clock=Clock())
        try:
            for i in range(ROUNDS):
                await pool.wait_warm(timeout=120)
                started = time.perf_counter()
                container = backend.create(name=f"bench-{i}")
                run = await backend.run_code(container, "1+1", timeout=10)
                times.append(time.perf_counter() - started)
                if run.result.result_text != "2":
                    raise RuntimeError(f"pooled kernel answered {run.result!r}")
                await backend.delete(container.id)
        finally:
            await backend.close()
    return times


async def main() -> int:
    isolation = "auto"
    isolated = plan_launch(isolation).isolated
    root = Path(tempfile.mkdtemp(prefix="cigate-bench-sandbox-"))
    try:
        cold = [await cold_round(root, isolation, i) for i in range(ROUNDS)]
        pooled = await pooled_rounds(root, isolation)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cold_ms, pooled_ms = statistics.median(cold) * 1000, statistics.median(pooled) * 1000
    print(f"isolation: {'bubblewrap' if isolated else 'none (bubblewrap unavailable)'}")
    print(f"cold   start + 1+1:  median {cold_ms:8.1f} ms  " + _all(cold))
    print(f"pooled create + 1+1: median {pooled_ms:8.1f} ms  " + _all(pooled))
    print(f"sandbox_pool: pooled/cold = {pooled_ms / cold_ms:.3f} (target <= {TARGET:.2f})")
    return 0


def _all(times: list[float]) -> str:
    return "(" + ", ".join(f"{t * 1000:.1f}" for t in times) + ")"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
