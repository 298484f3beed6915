"""Responses per second through the emulator, reused container vs a fresh one, and density.

One real uvicorn server, the openai SDK, sequential requests on one client, a trivial cell
(``1+1``):

* reuse, non-streaming and streaming: the same container every time (explicit container id);
* fresh ``auto`` container per request, non-streaming and streaming: each needs a new kernel,
  forked from the preloaded template and handed out by the pool, which refills in the
  background. The loops are long enough (``--fresh``, default 200) to measure the *sustained*
  rate once the pool's idle kernels are used up, not a burst from the pool;
* density: ``--idle`` containers that ran one cell and wait; for each, the unique (USS) and
  proportional (PSS) memory of its processes (the container's init and kernel, from
  ``/proc/PID/smaps_rollup``) and what its memory cgroup is charged (kernel memory and page
  tables included), and how many such idle containers fit in 24 GiB.

The reference for the ratio is measured in the same run: fresh vs reused, per mode. DESIGN.md's
budget is fresh/reuse >= 0.25. Usage: ``python bench/responses_rps.py [--requests N]
[--fresh N] [--pool-size N] [--idle N]``.
"""

from __future__ import annotations

import argparse
import statistics
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
from cigate.emulator.state import emulator_state

CELL = "```python\n1+1\n```"
MODEL = "bench"
TARGET = 0.25
GIB = 1 << 30


def measure(label: str, count: int, once: Callable[[], None]) -> float:
    started = time.perf_counter()
    for _ in range(count):
        once()
    elapsed = time.perf_counter() - started
    rps = count / elapsed
    print(f"{label:<40} {count:>5} requests  {elapsed:7.2f} s  {rps:8.1f} rps")
    return rps


def _children(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            kids = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found.append(kid)
            todo.append(kid)
    return found


def _rollup(pid: int) -> tuple[int, int]:
    """(USS, PSS) of one process in bytes."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name] = int(parts[0]) * 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return uss, fields.get("Pss", 0)


def density(app: Any, container_ids: list[str]) -> None:
    """Memory of idle containers, measured from /proc and their cgroups."""
    uss, pss, charged = [], [], []
    for cid in container_ids:
        session = emulator_state(app).backends().containers.get(cid).session
        if session is None or session.pid is None:
            continue
        pids = [session.pid, *_children(session.pid)]
        sizes = [_rollup(p) for p in pids]
        uss.append(sum(u for u, _ in sizes))
        pss.append(sum(p for _, p in sizes))
        group = getattr(session, "cgroup", None)
        path = None if group is None else group.dirs.get("memory") or group.dirs.get("v2")
        if path is not None:
            name = "memory.usage_in_bytes" if "memory" in group.dirs else "memory.current"
            charged.append(int((path / name).read_text()))
    if not uss:
        print("density: no container processes found")
        return
    mib = 1 << 20
    med_uss, med_pss = statistics.median(uss) / mib, statistics.median(pss) / mib
    line = f"idle container ({len(uss)} measured): USS {med_uss:.1f} MiB, PSS {med_pss:.1f} MiB"
    if charged:
        line += f", cgroup-charged {statistics.median(charged) / mib:.1f} MiB"
    print(line)
    worst = max(med_pss, statistics.median(charged) / mib if charged else 0)
    print(f"idle containers in 24 GiB: ~{int(24 * 1024 / worst)} (by the larger of PSS, charged)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per reuse loop")
    parser.add_argument("--fresh", type=int, default=200, help="requests per fresh loop")
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--idle", type=int, default=50, help="idle containers measured")
    args = parser.parse_args()

    settings = EmulatorSettings(
        api_keys=("bench-key",),
        data_dir=Path(tempfile.mkdtemp(prefix="cigate-bench-rps-")),
        pool_size=args.pool_size,
        max_containers=max(128, args.idle + 8),
    )
    app = create_app(settings)
    with run_in_thread(app) as server, httpx2.Client(trust_env=False, timeout=120) as http:
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

        for _ in range(10):  # warm up: the container's kernel, imports, connections
            plain(reuse)()
            streamed(reuse)()
            plain(auto)()
        time.sleep(1.0)  # let the pool finish refilling before the fresh-container loops
        reuse_plain = measure("reuse container, non-streaming", args.requests, plain(reuse))
        reuse_stream = measure("reuse container, streaming", args.requests, streamed(reuse))
        fresh_plain = measure("fresh auto container, non-streaming", args.fresh, plain(auto))
        fresh_stream = measure("fresh auto container, streaming", args.fresh, streamed(auto))
        client.containers.delete(container.id)
        print(
            f"responses_rps: fresh/reuse = {fresh_plain / reuse_plain:.2f}x non-streaming, "
            f"{fresh_stream / reuse_stream:.2f}x streaming (target >= {TARGET}); "
            f"reuse {reuse_plain:.0f} rps, fresh {fresh_plain:.0f} rps (trivial cell)"
        )
        print(
            f"responses_rps: streaming/non-streaming = {reuse_stream / reuse_plain:.2f}x "
            "(reused container)"
        )
        http.post(server.url + "/_emulator/reset").raise_for_status()  # all containers gone
        idle = []
        for _ in range(args.idle):
            response = client.responses.create(model=MODEL, input=CELL, tools=auto)
            idle.append(next(i for i in response.output if i.type == "code_interpreter_call"))
        time.sleep(1.0)
        density(app, [call.container_id for call in idle])


if __name__ == "__main__":
    main()
