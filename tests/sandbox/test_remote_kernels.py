"""Remote kernels through a real Jupyter Kernel Gateway process (``cigate.sandbox.remote``).

The provider is driven as the engine drives any kernel: ``acquire``, ``execute``, files in the
``workdir`` mirror before and after a cell, ``discard``. The gateway process is real (started by
the ``kernel_gateway`` fixture); nothing of it is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from cigate.sandbox.remote import CHUNK, RemoteKernel, RemoteKernels, decode_v1, encode_v1
from tests.sandbox.kernel_gateway import CANARY, KernelGatewayProcess, kernel_gateway

__all__ = ["kernel_gateway"]  # the fixture, used by name below


@pytest_asyncio.fixture
async def kernels(
    kernel_gateway: KernelGatewayProcess, tmp_path: Path
) -> AsyncIterator[RemoteKernels]:
    provider = RemoteKernels(kernel_gateway.url, kernel_gateway.token, root=tmp_path / "mirrors")
    try:
        yield provider
    finally:
        await provider.close()


@pytest_asyncio.fixture
async def kernel(kernels: RemoteKernels) -> AsyncIterator[RemoteKernel]:
    session = await kernels.acquire()
    try:
        yield session
    finally:
        await session.discard()


async def test_a_cell_runs_and_its_output_comes_back(kernel: RemoteKernel) -> None:
    result = await kernel.execute("print('hi')\n6 * 7", timeout=60)
    assert result.logs == "hi\n42"
    failed = await kernel.execute("1/0", timeout=60)
    assert failed.error is not None
    assert failed.error.ename == "ZeroDivisionError"


async def test_files_cross_both_ways_byte_for_byte_across_chunk_boundaries(
    kernel: RemoteKernel,
) -> None:
    data = os.urandom(CHUNK + 12345)
    (kernel.workdir / "in.bin").write_bytes(data)  # an upload into the container
    code = (
        "import hashlib\n"
        "raw = open('/mnt/data/in.bin', 'rb').read()\n"
        "open('/mnt/data/out/rev.bin', 'wb').write(raw[::-1]) if __import__('os').makedirs("
        "'/mnt/data/out', exist_ok=True) is None else None\n"
        "print(hashlib.sha256(raw).hexdigest())"
    )
    result = await kernel.execute(code, timeout=120)
    assert result.error is None, result.logs
    assert result.stdout.strip() == hashlib.sha256(data).hexdigest()
    assert (kernel.workdir / "out" / "rev.bin").read_bytes() == data[::-1]
    gone = await kernel.execute("import os; os.remove('/mnt/data/out/rev.bin')", timeout=60)
    assert gone.error is None
    assert not (kernel.workdir / "out" / "rev.bin").exists()
    assert (kernel.workdir / "in.bin").read_bytes() == data  # untouched, not fetched back


async def test_the_kernel_never_sees_the_gateways_environment(kernel: RemoteKernel) -> None:
    result = await kernel.execute(
        f"import os; print(os.environ.get({CANARY!r}), 'KG_AUTH_TOKEN' in os.environ)",
        timeout=60,
    )
    assert result.stdout.strip() == "None False"


async def test_a_cell_past_its_deadline_is_interrupted_and_the_kernel_lives_on(
    kernel: RemoteKernel,
) -> None:
    result = await kernel.execute("import time; time.sleep(30)", timeout=1)
    assert result.timed_out
    assert (await kernel.execute("print('still here')", timeout=60)).stdout == "still here\n"


async def test_a_hostile_listing_writes_nothing_outside_the_mirror(
    kernel: RemoteKernel, tmp_path: Path
) -> None:
    absolute = tmp_path / "absolute-evil"  # an absolute name the mirror must not follow
    names = [b"../escape.txt", bytes(absolute), b"a/../../x", b"", b"ok.txt\x00.png"]
    entries = [[n.hex(), 3, 1, 1] for n in names] + [["zz-not-hex", 1, 1, 1], "junk", [1, 2]]
    code = (
        "import _cigate\n"
        f"_cigate.ls = lambda limit: _cigate._J({{'files': {json.dumps(entries)}, "
        "'complete': True})\n"
        "_cigate.read = lambda name, offset, size: "
        "_cigate._J({'data': 'YWJj' if not offset else ''})"
    )
    result = await kernel.execute(code, timeout=60)
    assert result.error is None, result.logs
    assert not (kernel.workdir.parent / "escape.txt").exists()
    assert not (tmp_path / "x").exists()
    assert not absolute.exists()
    assert sorted(p.name for p in kernel.workdir.rglob("*")) == []


async def test_the_kernel_cap_is_the_services_capacity_error(
    kernel_gateway: KernelGatewayProcess, tmp_path: Path
) -> None:
    from cigate.exceptions import SandboxCapacityError

    provider = RemoteKernels(
        kernel_gateway.url, kernel_gateway.token, root=tmp_path / "m", owner_limit=1
    )
    try:
        first = await provider.acquire(owner="tenant-a")
        with pytest.raises(SandboxCapacityError):
            await provider.acquire(owner="tenant-a")
        other = await provider.acquire(owner="tenant-b")
        await other.discard()
        await first.discard()
    finally:
        await provider.close()


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x01" * 7, (2).to_bytes(8, "little") + b"\x00" * 16, (10**9).to_bytes(8, "little")],
    ids=["empty", "short", "too-few-offsets", "absurd-count"],
)
def test_malformed_frames_are_refused_not_crashing(frame: bytes) -> None:
    with pytest.raises(ValueError, match=r"frame|offset"):
        decode_v1(frame)


def test_a_frame_round_trips() -> None:
    msg = {
        "header": {"msg_id": "1"},
        "parent_header": {},
        "metadata": {},
        "content": {"code": "x"},
        "buffers": [b"\x00\xff"],
    }
    assert decode_v1(encode_v1("shell", msg)) == ("shell", msg)
