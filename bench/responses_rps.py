"""Responses per second through the emulator for a trivial cell (``1+1``), via the openai SDK.

Four loops against one real uvicorn server, sequential requests on one client:

* reuse, non-streaming: the same container every time (explicit container id);
* reuse, streaming: the same, with ``stream=True`` and every event read;
* fresh ``auto`` container per request, non-streaming and streaming: each needs a kernel from
  the warm pool, so this measures the pool's hand-out (and, once drained, its refill).

The reference for the ratio is measured in the same run: streaming vs non-streaming on the
reused container. Usage: ``python bench/responses_rps.py [--requests N] [--fresh N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from openai import OpenAI

from cigate.emulator.app import create_app
from cigate.emulator.server import run_in_thread
from cigate.emulator.settings import EmulatorSettings

CELL = "```python\n1+1\n```"
MODEL = "bench"


def measure(label: str, count: int, once: Callable[[], None]) -> float:
    started = time.perf_counter()
    for _ in range(count):
        once()
    elapsed = time.perf_counter() - started
    rps = count / elapsed
    print(f"{label:<40} {count:>4} requests  {elapsed:7.2f} s  {rps:8.1f} rps")
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per reuse loop")
    parser.add_argument("--fresh", type=int, default=6, help="requests per fresh-container loop")
    parser.add_argument("--pool-size", type=int, default=4)
    args = parser.parse_args()

    settings = EmulatorSettings(
        api_keys=("bench-key",),
        data_dir=Path(tempfile.mkdtemp(prefix="cigate-bench-rps-")),
        pool_size=args.pool_size,
    )
    with (
        run_in_thread(create_app(settings)) as server,
        httpx2.Client(trust_env=False, timeout=120) as http,
    ):
        client = OpenAI(base_url=server.url + "/openai/v1/", api_key="bench-key", http_client=http)
        container = client.containers.create(name="bench")
        reuse: list[Any] = [{"type": "code_interpreter", "container": container.id}]
        auto: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]

        def plain(tools: list[Any]) -> Callable[[], None]:
            def once() -> None:
                response = client.responses.create(model=MODEL, input=CELL, tools=tools)
                assert response.status == "completed", response.status

            return once

        def streamed(tools: list[Any]) -> Callable[[], None]:
            def once() -> None:
                with client.responses.create(
                    model=MODEL, input=CELL, tools=tools, stream=True
                ) as stream:
                    last = None
                    for event in stream:
                        last = event.type
                assert last == "response.completed", last

            return once

        for _ in range(5):  # warm up: the container's kernel, imports, connections
            plain(reuse)()
            streamed(reuse)()
        time.sleep(1.0)  # let the pool finish refilling before the fresh-container loops
        non_streaming = measure("reuse container, non-streaming", args.requests, plain(reuse))
        streaming = measure("reuse container, streaming", args.requests, streamed(reuse))
        fresh_plain = measure("fresh auto container, non-streaming", args.fresh, plain(auto))
        time.sleep(1.0)
        fresh_stream = measure("fresh auto container, streaming", args.fresh, streamed(auto))

    print(
        f"fresh/reuse (non-streaming) = {fresh_plain / non_streaming:.2f}x; "
        f"fresh streaming {fresh_stream:.1f} rps"
    )
    print(
        f"responses_rps: streaming/non-streaming = {streaming / non_streaming:.2f}x; "
        f"non-streaming {non_streaming:.0f} rps (trivial cell)"
    )


if __name__ == "__main__":
    main()
