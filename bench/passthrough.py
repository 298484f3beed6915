"""Per-event latency the gateway adds to an SSE stream, vs calling the emulator directly.

The emulator and the gateway run as separate processes (as in production). The same streamed
request (a plain-text answer: many ``response.output_text.delta`` events) is sent N times
directly and N times through the gateway, interleaved. For every event index k the arrival time
is recorded. The gateway's fixed per-request cost (key check, one more loopback hop) shows in the
time to the first event and is printed apart; the added latency of event k is its arrival after
the first event via the gateway minus the same direct (medians over the runs).

Last line: p50 and p95 of the added per-event latency, with their targets.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway import CIGATE, free_port, start, stop

RUNS = 25
BODY = {
    "model": "gpt-4.1",
    "stream": True,
    "input": " ".join(f"word{i}" for i in range(60)),
}


async def make_tenant(database: str) -> str:
    from cigate.storage.metadata import MetadataStore

    async with await MetadataStore.open(database) as meta:
        tenant = await meta.create_tenant("bench")
        return await meta.add_key(tenant.id)


def arrivals(client: httpx2.Client, url: str, headers: dict[str, str]) -> list[float]:
    """Seconds from sending the request to each event's ``data:`` line."""
    times: list[float] = []
    started = time.perf_counter()
    with client.stream("POST", url, json=BODY, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cigate-bench-"))
    upstream_key = "bench-" + secrets.token_hex(8)
    emu_port, gw_port = free_port(), free_port()
    procs = []
    try:
        emulator = start(
            [
                *CIGATE,
                "emulator",
                "serve",
                "--port",
                str(emu_port),
                "--api-key",
                upstream_key,
                "--pool-size",
                "1",
                "--data-dir",
                str(tmp / "emu"),
            ],
            {"CIGATE_HOME": str(tmp / "emu-home")},
            f"http://127.0.0.1:{emu_port}/_emulator/health",
        )
        procs.append(emulator)
        database = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
        key = asyncio.run(make_tenant(database))
        gateway = start(
            [
                *CIGATE,
                "gateway",
                "serve",
                "--upstream",
                f"http://127.0.0.1:{emu_port}",
                "--upstream-key",
                upstream_key,
                "--database",
                database,
                "--blobs",
                str(tmp / "blobs"),
                "--port",
                str(gw_port),
            ],
            {"CIGATE_HOME": str(tmp / "gw-home")},
            f"http://127.0.0.1:{gw_port}/healthz",
        )
        procs.append(gateway)
        direct_url = f"http://127.0.0.1:{emu_port}/openai/v1/responses"
        gw_url = f"http://127.0.0.1:{gw_port}/openai/v1/responses"
        direct_h = {"api-key": upstream_key}
        gw_h = {"authorization": f"Bearer {key}"}
        direct_runs, gw_runs = [], []
        with httpx2.Client(timeout=60, trust_env=False) as client:
            for _ in range(3):  # warm-up: connections, caches, first-request imports
                arrivals(client, direct_url, direct_h)
                arrivals(client, gw_url, gw_h)
            for _ in range(RUNS):
                direct_runs.append(arrivals(client, direct_url, direct_h))
                gw_runs.append(arrivals(client, gw_url, gw_h))
        events = min(len(r) for r in direct_runs + gw_runs)

        def median_at(runs: list[list[float]], k: int, since_first: bool) -> float:
            return statistics.median(r[k] - (r[0] if since_first else 0.0) for r in runs)

        first_ms = 1000 * (median_at(gw_runs, 0, False) - median_at(direct_runs, 0, False))
        # Event k's own added latency: how much later than the first event it arrives via the
        # gateway, beyond how much later it arrives direct (the fixed per-request cost above
        # cancels out; what remains is the relay's cost per event, queueing included).
        added_ms = [
            1000 * (median_at(gw_runs, k, True) - median_at(direct_runs, k, True))
            for k in range(1, events)
        ]
        print(f"{RUNS} streams each way, {events} events per stream")
        print(f"time to first event: +{first_ms:.2f} ms (key check, one more loopback hop)")
        p50, p95 = percentile(added_ms, 0.5), percentile(added_ms, 0.95)
        ok = p50 < 1 and p95 < 3
        print(
            f"passthrough: added per-event latency p50 {p50:.2f} ms (target < 1 ms), "
            f"p95 {p95:.2f} ms (target < 3 ms) -> {'PASS' if ok else 'FAIL'}"
        )
    finally:
        for proc in reversed(procs):
            stop(proc)


if __name__ == "__main__":
    main()
