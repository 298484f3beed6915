"""Engine fixtures: the real ContainerBackend over real kernels from one shared sandbox pool.

Kernels come from a session-wide ``SandboxPool`` (bubblewrap when it is usable here, else
unisolated), so a test's first cell gets a warm kernel at once while the pool refills in the
background. Every test still gets fresh containers: its ``ContainerBackend`` acquires its own
kernels and shuts every one of them down at teardown. Files come from the real ``FilesBackend``.
Tests using these fixtures run on the session's event loop, where the pool lives
(``pytestmark = pytest.mark.asyncio(loop_scope="session")``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from cigate.clock import Clock
from cigate.emulator.files import FilesBackend
from cigate.engine.containers import ContainerBackend
from cigate.engine.store import ResponsesBackend
from cigate.sandbox.base import SandboxSettings
from cigate.sandbox.kernel import Kernel
from cigate.sandbox.pool import SandboxPool


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kernel_pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxPool]:
    """Real kernels for the whole session; nothing preloaded, so refills stay cheap."""
    settings = SandboxSettings(
        root=tmp_path_factory.mktemp("engine-kernels"), pool_size=2, isolation="auto", preload=()
    )
    async with SandboxPool(settings) as pool:
        yield pool


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(loop_scope="session")
async def containers(
    tmp_path: Path, kernel_pool: SandboxPool, clock: Clock
) -> AsyncIterator[ContainerBackend]:
    """This test's containers; at teardown every kernel they acquired must be shut down."""
    backend = ContainerBackend(root=tmp_path / "containers", kernels=kernel_pool, clock=clock)
    yield backend
    sessions = [c.session for c in backend.list() if c.session is not None]
    await backend.close()
    assert all(isinstance(s, Kernel) and s.stopped for s in sessions)


@pytest.fixture
def files(tmp_path: Path, clock: Clock) -> FilesBackend:
    return FilesBackend(root=tmp_path / "files", clock=clock)


@pytest_asyncio.fixture(loop_scope="session")
async def backend(
    containers: ContainerBackend, files: FilesBackend, clock: Clock
) -> AsyncIterator[ResponsesBackend]:
    responses = ResponsesBackend(containers=containers, files=files, clock=clock, exec_timeout=5.0)
    yield responses
    await responses.close()
