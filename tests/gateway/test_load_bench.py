"""The load benchmark (``bench/load.py --quick``) runs end to end and loses no file.

Timings are the benchmark's business, never asserted here (the machine is shared).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"


def test_the_quick_load_bench_streams_through_the_gateway_and_direct_and_loses_no_file() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cited = re.search(r"^files: (\d+) cited through the gateway, (\d+) lost$", run.stdout, re.M)
    assert cited is not None, run.stdout
    assert (int(cited[1]), int(cited[2])) == (20, 0)
    assert re.search(r"^gateway +20 streams, 200 events", run.stdout, re.M), run.stdout
    assert re.search(r"^direct +20 streams, 200 events", run.stdout, re.M), run.stdout
    assert run.stdout.splitlines()[-1].startswith("load: added per-event latency")
