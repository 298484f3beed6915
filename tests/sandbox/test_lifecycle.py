"""Kernels stop when asked, when they misbehave, when killed, and when their owner dies."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cigate.exceptions import SandboxError
from cigate.sandbox import reaper
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.bwrap import plan_launch, probe_bwrap
from cigate.sandbox.kernel import Kernel
from cigate.sandbox.pool import SandboxPool

from .conftest import descendants, process_alive, require_bwrap

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(60),
]


async def _wait_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        alive = [p for p in pids if process_alive(p)]
        if not alive:
            return []
        await asyncio.sleep(0.05)
    return [p for p in pids if process_alive(p)]


async def test_shutdown_leaves_no_kernel_process_and_is_idempotent(fresh_kernel: Kernel) -> None:
    assert fresh_kernel.pid is not None
    pids = [fresh_kernel.pid, *descendants(fresh_kernel.pid)]
    assert len(pids) >= 2  # bwrap and the interpreter it runs
    step = await fresh_kernel.shutdown()
    assert step in ("request", "terminate")
    assert await _wait_gone(pids, 1.0) == []
    assert not fresh_kernel.runtime_dir.exists()
    assert fresh_kernel.pid not in reaper.tracked()
    assert await fresh_kernel.shutdown() == step
    with pytest.raises(SandboxError, match="shut down"):
        await fresh_kernel.execute("1", timeout=5)


@pytest.mark.parametrize("target", ["bwrap", "interpreter"])
async def test_a_kernel_killed_from_outside_fails_the_running_and_next_cells_quickly(
    fresh_kernel: Kernel, target: str
) -> None:
    assert fresh_kernel.pid is not None
    inner = descendants(fresh_kernel.pid)
    victim = fresh_kernel.pid if target == "bwrap" else inner[-1]
    running = asyncio.create_task(fresh_kernel.execute("import time; time.sleep(30)", timeout=30))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    # "Quickly": well inside the cells' own 30 s and 10 s deadlines, loose for loaded machines.
    with pytest.raises(SandboxError, match="died"):
        await running
    assert time.monotonic() - started < 5
    started = time.monotonic()
    with pytest.raises(SandboxError, match="cannot run code"):
        await fresh_kernel.execute("1 + 1", timeout=10)
    assert time.monotonic() - started < 5
    assert await fresh_kernel.shutdown() == "exited"
    assert await _wait_gone([fresh_kernel.pid, *inner]) == []


async def test_a_kernel_that_ignores_shutdown_and_sigterm_is_killed(
    plain_pool: SandboxPool,
) -> None:
    kernel = await plain_pool.acquire()
    try:
        await kernel.execute(
            "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)", timeout=10
        )
        busy = asyncio.create_task(kernel.execute("while True: pass", timeout=30))
        await asyncio.sleep(0.3)
        assert await kernel.shutdown() == "kill"
        with pytest.raises(SandboxError):
            await busy
        assert kernel.pid is not None
        assert not process_alive(kernel.pid)
    finally:
        await kernel.shutdown()
        shutil.rmtree(kernel.workdir, ignore_errors=True)


async def test_closing_a_pool_with_outstanding_sessions_stops_everything(tmp_path: Path) -> None:
    require_bwrap()
    before = reaper.tracked()
    settings = SandboxSettings(root=tmp_path, pool_size=1, isolation="bwrap", preload=())
    pool = SandboxPool(settings)
    await pool.start()
    first, second = await pool.acquire(), await pool.acquire()
    await pool.wait_warm()
    running = asyncio.create_task(first.execute("import time; time.sleep(30)", timeout=30))
    await asyncio.sleep(0.2)
    ours = sorted(reaper.tracked() - before)
    assert len(ours) == 3  # two handed out, one idle
    pids = ours + [d for p in ours for d in descendants(p)]
    steps = await pool.shutdown_all()
    assert await _wait_gone(pids, 1.0) == []
    assert not (reaper.tracked() & set(ours))
    with pytest.raises(SandboxError):
        await running
    assert first.stopped
    assert second.stopped
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.workdir.name, second.workdir.name]  # the idle kernel's workdir is removed
    )
    with pytest.raises(SandboxError, match="closed"):
        await pool.acquire()
    assert sum(steps.values()) == 3
    assert "failed" not in steps
    await pool.close()  # closing again is harmless


def _kernels_in(workdir: Path) -> list[int]:
    """Live processes whose working directory is ``workdir`` (an unisolated kernel's)."""
    out = []
    for pid in descendants(os.getpid()):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(workdir):
                out.append(pid)
        except OSError:
            continue
    return out


async def test_a_start_cancelled_after_its_process_launched_leaves_no_process_behind(
    tmp_path: Path,
) -> None:
    # The window: jupyter_client's start_kernel still awaits after launching the process.
    workdir = tmp_path / "w"
    start = asyncio.create_task(Kernel.start(plan=plan_launch("none"), workdir=workdir))
    launched: list[int] = []
    while not launched and not start.done():
        await asyncio.sleep(0.001)
        launched = _kernels_in(workdir)
    assert launched, "the kernel was ready before its process was seen"
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert await _wait_gone(launched, 2.0) == []
    gc.collect()  # a manager left to the GC warns of its unclosed zmq context (or hangs)


_OWNER = """
import asyncio, json, sys
from pathlib import Path
from cigate.sandbox import reaper
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.pool import SandboxPool

async def main():
    pool = SandboxPool(SandboxSettings(root=Path(sys.argv[1]), pool_size=0,
                                       isolation=sys.argv[2], preload=()))
    await pool.start()
    kernel = await pool.acquire()
    await kernel.execute("1", timeout=10)
    print(json.dumps(sorted(reaper.tracked())), flush=True)
    if sys.argv[3] == "hang":
        await asyncio.sleep(60)

asyncio.run(main())  # "exit": leaves without closing the pool
"""


@pytest.mark.parametrize(
    ("isolation", "ending"),
    [("bwrap", "sigkill"), ("none", "sigkill"), ("none", "exit")],
    ids=["bwrap-owner-killed", "unisolated-owner-killed", "unisolated-owner-exits-unclosed"],
)
async def test_no_kernel_outlives_the_process_that_started_it(
    tmp_path: Path, isolation: str, ending: str
) -> None:
    if isolation == "bwrap" and probe_bwrap() is None:
        pytest.skip("bubblewrap is not usable here (apt-get install bubblewrap)")
    mode = "hang" if ending == "sigkill" else "exit"
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path), isolation, mode],
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 40)
        pids = json.loads(line)
        assert len(pids) == 1
        pids += [d for p in pids for d in descendants(p)]
        if ending == "sigkill":
            owner.kill()
        owner.wait(timeout=20)
        assert await _wait_gone(pids) == []
