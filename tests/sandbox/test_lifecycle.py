"""Kernels stop when asked, when they misbehave, when killed, and when their owner dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cigate.exceptions import SandboxError
from cigate.sandbox import reaper, volumes
from cigate.sandbox.bwrap import probe_bwrap
from cigate.sandbox.kernel import Kernel
from cigate.sandbox.pool import SandboxPool

from .conftest import descendants, process_alive, require_bwrap, tmp_pool

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


def _container_pids(kernel: Kernel) -> list[int]:
    assert kernel.pid is not None
    return [kernel.pid, *descendants(kernel.pid)]


async def test_shutdown_leaves_no_container_process_keeps_the_files_and_is_idempotent(
    fresh_kernel: Kernel, bwrap_pool: SandboxPool
) -> None:
    await fresh_kernel.execute("open('/mnt/data/kept.txt', 'w').write('kept')", timeout=10)
    pids = _container_pids(fresh_kernel)
    assert len(pids) >= 2  # the container's init and the kernel under it
    step = await fresh_kernel.shutdown()
    assert step == "kill"
    assert await _wait_gone(pids, 1.0) == []
    assert not set(pids) & reaper.tracked()
    assert await fresh_kernel.shutdown() == step
    with pytest.raises(SandboxError, match="shut down"):
        await fresh_kernel.execute("1", timeout=5)
    # A container's files outlive its kernel (readable until the container expires) ...
    assert (fresh_kernel.workdir / "kept.txt").read_text() == "kept"
    # ... and go with discard() (in the background: settle() waits for that).
    await fresh_kernel.discard()
    await bwrap_pool.settle()
    assert not fresh_kernel.workdir.exists()


async def test_shutdown_ends_background_threads_and_child_processes(fresh_kernel: Kernel) -> None:
    code = (
        "import subprocess, threading\n"
        "def burn():\n"
        "    while True:\n"
        "        pass\n"
        "threading.Thread(target=burn, daemon=True).start()\n"
        "new = {'start_new_session': True}\n"
        "children = [subprocess.Popen(['sleep', '300'], **new) for _ in range(3)]\n"
        "print(len(children))\n"
    )
    result = await fresh_kernel.execute(code, timeout=10)
    assert result.stdout == "3\n", result
    pids = _container_pids(fresh_kernel)
    assert len(pids) >= 5  # init, kernel, three sleeps (in their own sessions)
    assert await fresh_kernel.shutdown() == "kill"
    assert await _wait_gone(pids, 2.0) == []


@pytest.mark.parametrize("target", ["init", "kernel"])
async def test_a_kernel_killed_from_outside_ends_its_cell_with_an_error_and_is_replaced(
    fresh_kernel: Kernel, target: str
) -> None:
    await fresh_kernel.execute("state = 'old'", timeout=10)
    pids = _container_pids(fresh_kernel)
    victim = pids[0] if target == "init" else pids[1]
    running = asyncio.create_task(
        fresh_kernel.execute(
            "import time\nprint('started', flush=True)\ntime.sleep(30)", timeout=30
        )
    )
    await asyncio.sleep(0.5)
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    result = await running
    # "At once": the init's pidfd fires; far inside the cell's own 30 s deadline.
    assert time.monotonic() - started < 5
    assert result.stdout == "started\n"
    assert result.error is not None
    assert result.error.ename == "KernelDied"
    assert "state was reset" in result.error.evalue
    if target == "kernel":
        assert "killed by SIGKILL" in result.error.evalue
    assert await _wait_gone(pids) == []
    again = await fresh_kernel.execute("'state' in dir(), 6 * 7", timeout=10)
    assert again.result_text == "(False, 42)"  # a new kernel: state reset, files kept
    assert fresh_kernel.restarts == 1


async def test_a_kernel_that_ignores_its_interrupt_is_killed_and_replaced(
    fresh_kernel: Kernel,
) -> None:
    await fresh_kernel.execute(
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)", timeout=10
    )
    pids = _container_pids(fresh_kernel)
    started = time.monotonic()
    result = await fresh_kernel.execute("while True: pass", timeout=1)
    assert time.monotonic() - started < 10  # 1 s deadline + 3 s grace, loose for busy hosts
    assert result.timed_out
    assert result.error is not None
    assert result.error.ename == "KernelRestarted"
    assert await _wait_gone(pids) == []
    after = await fresh_kernel.execute("1 + 1", timeout=10)
    assert after.result_text == "2"


async def test_a_container_whose_kernel_keeps_dying_stops_being_restarted(tmp_path: Path) -> None:
    async with tmp_pool(tmp_path, "none") as pool:
        kernel = await pool.acquire()
        for _ in range(11):  # MAX_RESTARTS (10) new kernels, then no more
            result = await kernel.execute("import os; os._exit(3)", timeout=10)
            assert result.error is not None
            assert result.error.ename == "KernelDied"
            assert "exited with status 3" in result.error.evalue
        with pytest.raises(SandboxError, match="died 11 times"):
            await kernel.execute("1", timeout=10)


async def test_closing_a_pool_with_outstanding_sessions_stops_and_removes_everything(
    tmp_path: Path,
) -> None:
    pool = tmp_pool(tmp_path, pool_size=1)
    await pool.start()
    first, second = await pool.acquire(), await pool.acquire()
    await pool.wait_warm()
    running = asyncio.create_task(first.execute("import time; time.sleep(30)", timeout=30))
    await asyncio.sleep(0.2)
    assert pool.live_count == 2
    assert pool.idle_count == 1
    pids = [*_container_pids(first), *_container_pids(second)]
    idle = pool._idle[0]
    pids += _container_pids(idle)
    steps = await pool.shutdown_all()
    assert await _wait_gone(pids, 2.0) == []
    assert not reaper.tracked() & set(pids)
    with pytest.raises(SandboxError):
        await running
    assert first.stopped
    assert second.stopped
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("kernel-")] == []
    with pytest.raises(SandboxError, match="closed"):
        await pool.acquire()
    assert steps == {"kill": 3}
    await pool.close()  # closing again is harmless


async def test_an_acquire_cancelled_mid_start_leaves_no_process_directory_or_cgroup(
    tmp_path: Path,
) -> None:
    async with tmp_pool(tmp_path) as pool:
        await (await pool.acquire()).discard()  # the template is up
        template = pool._template
        assert template is not None
        assert template.pid is not None
        before = set(descendants(template.pid))
        for delay in (0.0, 0.002, 0.005, 0.01, 0.02):  # cancel at several points of the start
            task = asyncio.create_task(pool.acquire())
            await asyncio.sleep(delay)
            task.cancel()
            try:
                kernel = await task
            except asyncio.CancelledError:
                pass
            else:
                await kernel.discard()
        await asyncio.sleep(0.5)  # done-callbacks undo what threads made after the cancel
        await pool.settle()
        assert await _wait_gone(sorted(set(descendants(template.pid)) - before)) == []
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("kernel-")] == []
        assert pool.live_count == 0


_OWNER = """
import asyncio, json, sys
from pathlib import Path
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.pool import SandboxPool

async def main():
    pool = SandboxPool(SandboxSettings(root=Path(sys.argv[1]), pool_size=0,
                                       isolation=sys.argv[2], preload=()))
    await pool.start()
    kernel = await pool.acquire()
    await kernel.execute("import subprocess; subprocess.Popen(['sleep', '300'])", timeout=10)
    print(json.dumps([kernel.pid, pool._template.pid]), flush=True)
    if sys.argv[3] == "hang":
        await asyncio.sleep(60)
    sys.stdin.readline()  # the test looked at our processes: now leave

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
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        assert owner.stdin is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 40)
        init, template = json.loads(line)
        kernels = [init, template, *descendants(template)]
        background = [p for p in descendants(init) if _comm(p) == "sleep"]
        assert len(background) == 1  # the process the model code started
        if ending == "sigkill":
            owner.kill()
        else:
            owner.stdin.write("leave\n")
            owner.stdin.flush()
        owner.wait(timeout=20)
    if isolation == "bwrap":  # everything dies with the pid namespace
        assert await _wait_gone(sorted({*kernels, *background})) == []
        return
    # Unisolated: the template, inits and kernels die by parent-death signals; what the code
    # started in the background is killed with its cgroup when the next pool starts.
    assert await _wait_gone(sorted(set(kernels) - set(background))) == []
    async with tmp_pool(tmp_path / "next", "none"):
        pass
    assert await _wait_gone(background) == []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def test_the_next_pool_removes_what_a_killed_owner_left_behind(tmp_path: Path) -> None:
    require_bwrap()
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "first"), "bwrap", "hang"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 40)
        left = [p for p in (tmp_path / "first").iterdir() if p.name.startswith("kernel-")]
        assert len(left) == 1
        mounted = os.path.ismount(left[0])
        owner.kill()
        owner.wait(timeout=20)
    groups = _cgroup_dirs(owner.pid)
    assert groups  # a SIGKILLed owner cannot clean up: its cgroups ...
    assert mounted == (volumes.available() is None)  # ... and its volume stay
    assert os.path.ismount(left[0]) == mounted
    async with tmp_pool(tmp_path / "second"):
        pass  # ... the next pool's start does
    assert not os.path.ismount(left[0])
    assert not [g for g in groups if g.exists()]


def _cgroup_dirs(pid: int) -> list[Path]:
    found = []
    for base in Path("/sys/fs/cgroup").glob("*"):
        found += list(base.rglob(f"cigate-sbx-{pid}-*"))
    return found


async def test_a_template_that_dies_takes_its_kernels_along_and_is_started_again(
    tmp_path: Path,
) -> None:
    async with tmp_pool(tmp_path) as pool:
        kernel = await pool.acquire()
        await kernel.execute("x = 1", timeout=10)
        template = pool._template
        assert template is not None
        assert template.pid is not None
        pids = [template.pid, *descendants(template.pid)]
        os.killpg(template.pid, signal.SIGKILL)
        assert await _wait_gone(pids) == []  # every container went with its pid namespace
        result = await kernel.execute("'x' in dir(), 6 * 7", timeout=30)
        assert result.result_text == "(False, 42)"  # a new template, a new kernel
        assert template.starts == 2
        assert kernel.restarts == 1
