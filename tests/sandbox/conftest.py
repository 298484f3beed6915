"""Real kernels, shared where the tests allow it: a session pool per isolation mode."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.bwrap import probe_bwrap
from cigate.sandbox.kernel import Kernel
from cigate.sandbox.pool import SandboxPool

#: Small preload: the plot tests need pyplot; pandas would only slow the suite's refills.
TEST_PRELOAD = ("matplotlib.pyplot",)


def require_bwrap() -> None:
    if probe_bwrap() is None:
        pytest.skip("bubblewrap is not usable here (apt-get install bubblewrap)")


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (read from /proc, no psutil needed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the kernel inside bwrap, its children...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return [p for p in out if process_alive(p)]


async def _pool(root: Path, isolation: str) -> AsyncIterator[SandboxPool]:
    settings = SandboxSettings(root=root, pool_size=1, isolation=isolation, preload=TEST_PRELOAD)
    async with SandboxPool(settings) as pool:
        yield pool


def tmp_pool(root: Path, isolation: str = "bwrap", **settings: Any) -> SandboxPool:
    """A pool of its own for one test (nothing preloaded unless asked, nothing pre-forked)."""
    if isolation == "bwrap":
        require_bwrap()
    settings.setdefault("pool_size", 0)
    settings.setdefault("preload", ())
    return SandboxPool(SandboxSettings(root=root, isolation=isolation, **settings))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bwrap_pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxPool]:
    require_bwrap()
    async for pool in _pool(tmp_path_factory.mktemp("bwrap-pool"), "bwrap"):
        yield pool


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def plain_pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxPool]:
    async for pool in _pool(tmp_path_factory.mktemp("plain-pool"), "none"):
        yield pool


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shared_kernel(bwrap_pool: SandboxPool) -> AsyncIterator[Kernel]:
    """One bwrap kernel for a whole module of tests that do not break it."""
    kernel = await bwrap_pool.acquire()
    yield kernel
    await kernel.discard()


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_kernel(bwrap_pool: SandboxPool) -> AsyncIterator[Kernel]:
    """A bwrap kernel of its own, for tests that time out, kill or stop it."""
    kernel = await bwrap_pool.acquire()
    yield kernel
    await kernel.discard()
