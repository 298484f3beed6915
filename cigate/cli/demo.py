"""``cigate demo``: seed 000's example, end to end, with no Azure account.

An in-process emulator (loopback, a generated key) stands in for Azure OpenAI; the prompt carries
the code (the emulator's scripted model runs fenced Python blocks), so the flow is exactly the
real one: upload the shipped CSV into a container, stream the response, download the chart and
the summary the moment they are cited, reconcile with the container's file list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from cigate.client._config import ClientConfig, resolve_config

__all__ = ["DEMO_CSV", "DEMO_PROMPT", "demo_data", "emulated_endpoint"]

DEMO_CSV = "operating_profit.csv"
DEMO_MODEL = "gpt-4.1"

DEMO_PROMPT = """Create a bar chart of operating profit by sector from the uploaded CSV, and \
save a CSV summary next to it.

```python
import glob

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

source = glob.glob("/mnt/data/*operating_profit.csv")[0]
df = pd.read_csv(source)
summary = (
    df.groupby("sector", as_index=False)["operating_profit"]
    .sum()
    .sort_values("operating_profit", ascending=False)
)
summary.to_csv("/mnt/data/operating_profit_by_sector.csv", index=False)

fig, ax = plt.subplots(figsize=(8, 4.5))
ax.bar(summary["sector"], summary["operating_profit"], color="#2b6cb0")
ax.set_title("Contoso: operating profit by sector (2024 H1)")
ax.set_ylabel("operating profit (millions)")
ax.tick_params(axis="x", rotation=30)
fig.tight_layout()
fig.savefig("/mnt/data/contoso_operating_profit.png", dpi=120)
print(summary.to_string(index=False))
```
"""


def demo_data() -> Path:
    """Path of the CSV shipped in ``cigate/data``."""
    return Path(str(resources.files("cigate") / "data" / DEMO_CSV))


@contextlib.contextmanager
def emulated_endpoint(*, out: str | None = None) -> Iterator[ClientConfig]:
    """Start the emulator on 127.0.0.1 (a free port) and yield a config that reaches it."""
    from cigate.emulator.app import create_app
    from cigate.emulator.server import run_in_thread
    from cigate.emulator.settings import EmulatorSettings

    settings = EmulatorSettings(pool_size=1)
    handle = run_in_thread(create_app(settings), "127.0.0.1", 0)
    try:
        yield resolve_config(
            endpoint=handle.url, api_key=settings.api_key, model=DEMO_MODEL, out=out, env={}
        )
    finally:
        handle.stop()
