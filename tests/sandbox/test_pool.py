"""The pool hands out started kernels with fresh workdirs and refills in the background."""

from __future__ import annotations

from pathlib import Path

import pytest

from cigate.exceptions import SandboxCapacityError, SandboxError
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.pool import SandboxPool

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(60),
]


async def test_acquired_kernels_get_fresh_workdirs_under_root_and_the_pool_refills(
    plain_pool: SandboxPool,
) -> None:
    await plain_pool.wait_warm()
    first = await plain_pool.acquire()
    second = await plain_pool.acquire()
    try:
        assert first.workdir != second.workdir
        for kernel in (first, second):
            assert kernel.workdir.parent == plain_pool.settings.root
            assert kernel.workdir.is_dir()
            assert list(kernel.workdir.iterdir()) == []
        await plain_pool.wait_warm()
        assert plain_pool.idle_count == plain_pool.settings.pool_size
    finally:
        for kernel in (first, second):
            await kernel.discard()


async def test_a_pooled_kernel_has_the_preload_modules_imported(plain_pool: SandboxPool) -> None:
    await plain_pool.wait_warm()
    kernel = await plain_pool.acquire()
    try:
        result = await kernel.execute(
            "import sys\n'matplotlib.pyplot' in sys.modules, [n for n in dir() if 'cigate' in n]",
            timeout=10,
        )
        assert result.result_text == "(True, [])"
    finally:
        await kernel.discard()


async def test_forked_kernels_share_no_state_with_each_other(plain_pool: SandboxPool) -> None:
    first, second = await plain_pool.acquire(), await plain_pool.acquire()
    try:
        await first.execute("import sys; sys.cigate_mark = 'first'; marked = True", timeout=10)
        result = await second.execute(
            "import sys; getattr(sys, 'cigate_mark', None), 'marked' in dir()", timeout=10
        )
        assert result.result_text == "(None, False)"
    finally:
        await first.discard()
        await second.discard()


async def test_an_empty_pool_starts_a_kernel_on_demand(tmp_path: Path) -> None:
    settings = SandboxSettings(root=tmp_path, pool_size=0, isolation="none", preload=())
    async with SandboxPool(settings) as pool:
        kernel = await pool.acquire()
        result = await kernel.execute("1 + 1", timeout=10)
        assert result.result_text == "2"
        assert pool.idle_count == 0
    assert kernel.stopped


async def test_a_pool_with_an_unknown_isolation_mode_fails_at_start(tmp_path: Path) -> None:
    pool = SandboxPool(SandboxSettings(root=tmp_path, isolation="chroot"))
    with pytest.raises(SandboxError, match="unknown sandbox isolation"):
        await pool.start()
    await pool.close()


async def test_live_kernels_are_capped_per_host_and_per_owner(tmp_path: Path) -> None:
    settings = SandboxSettings(
        root=tmp_path, pool_size=0, isolation="none", preload=(), max_containers=3
    )
    limits = {"tenant-a": 1}
    async with SandboxPool(settings, owner_limit=limits.get) as pool:
        first = await pool.acquire(owner="tenant-a")
        with pytest.raises(SandboxCapacityError, match="'tenant-a' already runs its maximum of 1"):
            await pool.acquire(owner="tenant-a")
        others = [await pool.acquire(owner="tenant-b"), await pool.acquire()]
        assert pool.live_count == 3
        with pytest.raises(SandboxCapacityError, match="maximum of 3 live containers"):
            await pool.acquire(owner="tenant-b")
        await first.discard()  # a slot is free again, and tenant-a may have one more
        again = await pool.acquire(owner="tenant-a")
        assert pool.live_count == 3
        for kernel in (again, *others):
            await kernel.shutdown()  # stopped kernels do not count
        assert pool.live_count == 0
