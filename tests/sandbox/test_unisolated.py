"""Without bubblewrap: same results, /mnt/data mapped to the workdir by rewriting text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from cigate.sandbox.kernel import Kernel
from cigate.sandbox.pool import SandboxPool

from .conftest import tmp_pool

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(60),
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def plain_kernel(plain_pool: SandboxPool) -> AsyncIterator[Kernel]:
    kernel = await plain_pool.acquire()
    yield kernel
    await kernel.discard()


async def test_an_unisolated_kernel_says_so(plain_kernel: Kernel) -> None:
    assert not plain_kernel.isolated


async def test_mnt_data_in_code_reaches_the_workdir(plain_kernel: Kernel) -> None:
    code = "open('/mnt/data/y.txt', 'w').write('unisolated')\nprint(open('y.txt').read())"
    result = await plain_kernel.execute(code, timeout=10)
    assert result.error is None, result.error
    assert result.stdout == "unisolated\n"
    assert (plain_kernel.workdir / "y.txt").read_text() == "unisolated"


async def test_the_workdir_path_is_shown_as_mnt_data(plain_kernel: Kernel) -> None:
    code = "import os\nprint(os.getcwd())\nos.path.abspath('z.csv')"
    result = await plain_kernel.execute(code, timeout=10)
    assert result.stdout == "/mnt/data\n"
    assert result.result_text == "'/mnt/data/z.csv'"
    assert str(plain_kernel.workdir) not in result.logs


async def test_paths_in_errors_are_shown_as_mnt_data(plain_kernel: Kernel) -> None:
    result = await plain_kernel.execute("open('/mnt/data/missing.txt')", timeout=10)
    assert result.error is not None
    assert result.error.ename == "FileNotFoundError"
    assert "/mnt/data/missing.txt" in result.error.evalue
    assert str(plain_kernel.workdir) not in "\n".join(result.error.traceback)


async def test_state_output_and_values_work_as_under_bubblewrap(plain_kernel: Kernel) -> None:
    await plain_kernel.execute("items = [1, 2]", timeout=10)
    result = await plain_kernel.execute("print(len(items))\nitems", timeout=10)
    assert (result.stdout, result.result_text) == ("2\n", "[1, 2]")


async def test_an_unisolated_kernel_still_gets_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unisolated-secret")
    async with tmp_pool(tmp_path, "none") as pool:
        kernel = await pool.acquire()
        result = await kernel.execute(
            "import os, json; print(json.dumps(dict(os.environ)))", timeout=10
        )
    env = json.loads(result.stdout)
    assert "OPENAI_API_KEY" not in env
