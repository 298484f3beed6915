"""What one cell produces: state, files, streams, values, errors, figures, timeouts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cigate.sandbox.kernel import Kernel

from .conftest import descendants

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(60),
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def test_variables_survive_between_cells(shared_kernel: Kernel) -> None:
    await shared_kernel.execute("answer = 6 * 7", timeout=10)
    result = await shared_kernel.execute("answer", timeout=10)
    assert result.result_text == "42"


async def test_a_file_written_to_mnt_data_appears_in_the_workdir(shared_kernel: Kernel) -> None:
    result = await shared_kernel.execute("open('/mnt/data/x.txt', 'w').write('hello')", timeout=10)
    assert result.error is None
    assert (shared_kernel.workdir / "x.txt").read_text() == "hello"


async def test_print_goes_to_stdout_and_the_value_to_result_text(shared_kernel: Kernel) -> None:
    result = await shared_kernel.execute("print('hi')\n1 + 1", timeout=10)
    assert result.stdout == "hi\n"
    assert result.result_text == "2"
    assert result.error is None
    assert result.logs == "hi\n2"


async def test_stderr_is_kept_apart_from_stdout(shared_kernel: Kernel) -> None:
    result = await shared_kernel.execute("import sys; print('oops', file=sys.stderr)", timeout=10)
    assert result.stderr == "oops\n"
    assert result.stdout == ""


async def test_an_exception_becomes_an_error_with_a_plain_traceback(shared_kernel: Kernel) -> None:
    result = await shared_kernel.execute("def f():\n    return 1 / 0\nf()", timeout=10)
    assert result.error is not None
    assert result.error.ename == "ZeroDivisionError"
    assert result.error.evalue == "division by zero"
    text = "\n".join(result.error.traceback)
    assert "ZeroDivisionError" in text
    assert "\x1b[" not in text
    assert "return 1 / 0" in text


async def test_plt_show_displays_exactly_one_png(shared_kernel: Kernel) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    result = await shared_kernel.execute(code, timeout=30)
    assert result.error is None, result.error
    assert len(result.images) == 1
    assert result.images[0].mime_type == "image/png"
    assert result.images[0].data.startswith(PNG_SIGNATURE)


async def test_two_concurrent_cells_run_one_after_the_other(shared_kernel: Kernel) -> None:
    first = shared_kernel.execute("import time; time.sleep(0.3); order = ['first']", timeout=10)
    second = shared_kernel.execute("order.append('second'); order", timeout=10)
    _, result = await asyncio.gather(first, second)
    assert result.result_text == "['first', 'second']"


async def test_a_cell_past_its_timeout_is_interrupted_and_the_kernel_keeps_working(
    fresh_kernel: Kernel,
) -> None:
    await fresh_kernel.execute("kept = 'still here'", timeout=10)
    started = time.monotonic()
    result = await fresh_kernel.execute("import time\nprint('before')\ntime.sleep(30)", timeout=1)
    assert time.monotonic() - started < 5
    assert result.timed_out
    assert result.stdout == "before\n"
    assert result.error is None  # the interrupt is reported as timed_out, not KeyboardInterrupt
    assert "timed out" in result.logs
    after = await fresh_kernel.execute("kept", timeout=10)
    assert after.result_text == "'still here'"
    assert not after.timed_out


def _switches(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


async def test_an_idle_container_does_not_wake_up(fresh_kernel: Kernel) -> None:
    """Hundreds of idle containers must cost no CPU: no thread polls between cells."""
    await fresh_kernel.execute("print('done')", timeout=10)
    assert fresh_kernel.pid is not None
    pids = [fresh_kernel.pid, *descendants(fresh_kernel.pid)]
    await asyncio.sleep(0.2)  # the cell's last flush
    before = _switches(pids)
    await asyncio.sleep(1.0)
    assert _switches(pids) - before == 0
