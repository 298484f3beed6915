"""The engine's second lock on containers: a response never uses another owner's container."""

from __future__ import annotations

from pathlib import Path

import pytest

from cigate.clock import Clock
from cigate.engine.containers import ContainerBackend
from cigate.engine.errors import NotFoundError
from cigate.engine.store import ResponsesBackend
from cigate.sandbox.base import KernelSession


class NoKernels:
    async def acquire(
        self, *, memory: int | None = None, owner: str | None = None
    ) -> KernelSession:
        raise AssertionError("no kernel is needed to refuse")


def _backends(tmp_path: Path) -> tuple[ContainerBackend, ResponsesBackend]:
    clock = Clock()
    containers = ContainerBackend(root=tmp_path, kernels=NoKernels(), clock=clock)
    responses = ResponsesBackend(containers=containers, files=None, clock=clock, exec_timeout=1)
    return containers, responses


async def test_an_explicit_container_of_another_owner_is_an_unknown_one(tmp_path: Path) -> None:
    containers, responses = _backends(tmp_path)
    theirs = containers.create(name="x", owner="tenant-a")
    body = {
        "model": "m",
        "input": "hi",
        "tools": [{"type": "code_interpreter", "container": theirs.id}],
    }
    with pytest.raises(NotFoundError):
        await responses.create(body, owner="tenant-b")
    await responses.close()


async def test_an_auto_container_belongs_to_the_owner_of_the_request(tmp_path: Path) -> None:
    _, responses = _backends(tmp_path)
    body = {
        "model": "m",
        "input": "hi",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
    }
    run = await responses.create(body, owner="tenant-b")
    assert run.plan.container is not None
    assert run.plan.container.owner == "tenant-b"
    await run.finished.wait()
    await responses.close()
