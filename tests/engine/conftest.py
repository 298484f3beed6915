"""Engine fixtures: a real ContainerBackend over an in-process fake kernel.

The fake runs cells with ``exec`` in one namespace per container (so state survives between
cells, as in a real kernel), with ``/mnt/data`` rewritten to the container's directory. It keeps
engine tests fast and independent of the sandbox; the emulator tests use real kernels.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cigate.clock import Clock
from cigate.engine.containers import ContainerBackend
from cigate.engine.store import ResponsesBackend
from cigate.sandbox.base import MOUNT_POINT, DisplayImage, ExecutionError, ExecutionResult

#: A 1x1 transparent PNG, shown by cells that call ``show_png()``.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6300010000050001a5f645400000000049454e44ae426082"
)
_STDOUT_LOCK = threading.Lock()


class FakeKernel:
    """A ``KernelSession`` that runs Python in this process (tests only: not a sandbox)."""

    isolated = False

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.images: list[DisplayImage] = []
        self.namespace: dict[str, Any] = {"show_png": self._show_png}
        self.executed: list[str] = []
        self.shut_down = False

    def _show_png(self) -> None:
        self.images.append(DisplayImage("image/png", PNG_1X1))

    async def execute(self, code: str, *, timeout: float) -> ExecutionResult:
        self.executed.append(code)
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._run, code), timeout)
        except TimeoutError:
            return ExecutionResult(timed_out=True, duration=timeout)

    def _run(self, code: str) -> ExecutionResult:
        self.images = []
        out = io.StringIO()
        error = None
        source = code.replace(MOUNT_POINT, str(self.workdir))
        with _STDOUT_LOCK, contextlib.redirect_stdout(out):
            try:
                exec(compile(source, "<cell>", "exec"), self.namespace)  # noqa: S102 - test double
            except Exception as exc:
                lines = traceback.format_exception(exc)
                error = ExecutionError(type(exc).__name__, str(exc), "".join(lines).splitlines())
        return ExecutionResult(stdout=out.getvalue(), images=list(self.images), error=error)

    async def shutdown(self) -> str:
        self.shut_down = True
        return "request"


class FakeKernels:
    """``KernelProvider``: a fresh fake kernel per container, each in its own directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[FakeKernel] = []

    async def acquire(self) -> FakeKernel:
        workdir = self.root / f"kernel-{len(self.started)}"
        workdir.mkdir(parents=True)
        kernel = FakeKernel(workdir)
        self.started.append(kernel)
        return kernel


class FakeFile:
    def __init__(self, filename: str, data: bytes) -> None:
        self.filename = filename
        self.data = data


class FakeFiles:
    """``FilesLookup`` over a dict; unknown ids raise the Files API's 404."""

    def __init__(self) -> None:
        self.records: dict[str, FakeFile] = {}

    def add(self, file_id: str, filename: str, data: bytes) -> str:
        self.records[file_id] = FakeFile(filename, data)
        return file_id

    def get(self, file_id: str) -> FakeFile:
        from cigate.engine.errors import NotFoundError

        if file_id not in self.records:
            raise NotFoundError(f"No such File object: {file_id}")
        return self.records[file_id]

    def read_bytes(self, file_id: str) -> bytes:
        return self.get(file_id).data


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kernels(tmp_path: Path) -> FakeKernels:
    return FakeKernels(tmp_path / "kernels")


@pytest.fixture
async def containers(
    tmp_path: Path, kernels: FakeKernels, clock: Clock
) -> AsyncIterator[ContainerBackend]:
    backend = ContainerBackend(root=tmp_path / "containers", kernels=kernels, clock=clock)
    yield backend
    await backend.close()


@pytest.fixture
def files() -> FakeFiles:
    return FakeFiles()


@pytest.fixture
async def backend(
    containers: ContainerBackend, files: FakeFiles, clock: Clock
) -> AsyncIterator[ResponsesBackend]:
    responses = ResponsesBackend(containers=containers, files=files, clock=clock, exec_timeout=5.0)
    yield responses
    await responses.close()
