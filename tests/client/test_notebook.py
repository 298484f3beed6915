"""``cigate.run`` in a real Jupyter kernel (seed 000's home): live progress, then a rich result.

The kernel is a separate process started with jupyter_client, talking to the emulator over
real HTTP, exactly as a notebook cell would; the test reads what the notebook would display.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from cigate.testing.emulator import RunningEmulator

pytestmark = pytest.mark.timeout(180)

CELL = '''
import cigate
result = cigate.run("""Make a table and a chart.

```python
import pandas as pd, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
df = pd.DataFrame({"sector": ["Retail", "Energy"], "profit": [3, 5]})
df.to_csv("/mnt/data/profit.csv", index=False)
df.plot.bar(x="sector", y="profit").get_figure().savefig("/mnt/data/profit.png")
```
""", out=OUT)
result
'''


@pytest.fixture
def kernel(emulator: RunningEmulator, tmp_path: Path) -> Iterator[Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIGATE_", "AZURE_"))}
    env |= {
        "CIGATE_ENDPOINT": emulator.base_url,
        "CIGATE_API_KEY": emulator.api_key,
        "CIGATE_MODEL": "gpt-4.1",
        "CIGATE_HOME": str(tmp_path / "home"),
    }
    manager = KernelManager(kernel_name="python3")  # ipykernel's own spec: this interpreter
    manager.transport = "ipc"  # no TCP port (and no warning about plain TCP)
    manager.ip = str(tmp_path / "kernel")
    manager.start_kernel(env=env, cwd=str(tmp_path))
    client = manager.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(client: Any, code: str) -> list[dict[str, Any]]:
    msg_id = client.execute(code)
    messages = []
    while True:
        msg = client.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages


def test_a_run_in_a_notebook_shows_progress_live_then_the_answer_and_previews(
    kernel: Any, tmp_path: Path
) -> None:
    messages = run_cell(kernel, f"OUT = {str(tmp_path / 'downloads')!r}\n" + CELL)
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert errors == []
    progress = [
        m["content"]["data"]["text/html"]
        for m in messages
        if m["msg_type"] in ("display_data", "update_display_data")
        and "cigate-progress" in m["content"]["data"].get("text/html", "")
    ]
    assert len(progress) >= 3  # shown at once, then updated in place
    assert "[1/5]" in progress[1]  # the first step, right after the empty area appears
    assert "[5/5]" in progress[-1]
    assert "profit.png" in progress[-1]
    [result] = [m["content"]["data"] for m in messages if m["msg_type"] == "execute_result"]
    html = result["text/html"]
    assert "<pre style='white-space:pre-wrap'>" not in html
    assert "<a href=" in html  # the answer's links are links
    assert "<img src='data:image/png;base64," in html
    assert "<th>sector</th><th>profit</th>" in html  # the CSV's first rows
    assert "<td>Retail</td><td>3</td>" in html
