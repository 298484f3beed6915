"""The self-hosted code interpreter against the emulator's hosted tool, in one run.

Two real uvicorn servers in this process: the emulator, and a gateway in ``self`` mode whose
upstream is that emulator acting only as a function-calling model. The same streamed
code-interpreter response goes (a) straight to the emulator's hosted tool, (b) through the
self-hosted gateway; for each, over ``--rounds`` rounds (medians):

* time to the first ``response.code_interpreter_call_code.delta``;
* time to ``response.completed``;
* files per second: ``--files`` files of 64 KiB written by one cell, from the request until the
  last one is downloaded (through the same server);
* container hand-out: ``POST /containers`` then a ``1+1`` response in it (a kernel from the pool).

Usage: ``python bench/self_hosted.py [--rounds N] [--files N]``. Figures depend on the machine's
load; both paths are measured in the same run so the ratio is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from openai import OpenAI

from cigate.emulator.app import create_app as create_emulator
from cigate.emulator.server import run_in_thread
from cigate.emulator.settings import EmulatorSettings
from cigate.gateway.app import SERVER_LOOP
from cigate.gateway.app import create_app as create_gateway
from cigate.gateway.settings import GatewaySettings
from cigate.storage.metadata import MetadataStore

KEY = "bench-key"
MODEL = "bench"
AUTO: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def _cell(files: int) -> str:
    code = (
        "import os\n"
        f"for i in range({files}):\n"
        "    open(f'/mnt/data/f{i:03}.bin', 'wb').write(os.urandom(65536))\n"
        "print('ok')"
    )
    return f"Write the files.\n```python\n{code}\n```\n"


def _tenant_key(database: str) -> str:
    async def make() -> str:
        async with await MetadataStore.open(database) as meta:
            tenant = await meta.create_tenant("bench")
            return await meta.add_key(tenant.id)

    return asyncio.run(make())


def one_round(client: OpenAI, files: int) -> dict[str, float]:
    started = time.perf_counter()
    first_delta = None
    final = None
    for event in client.responses.create(model=MODEL, input=_cell(files), tools=AUTO, stream=True):
        if event.type == "response.code_interpreter_call_code.delta" and first_delta is None:
            first_delta = time.perf_counter() - started
        if event.type == "response.completed":
            final = event.response
    completed = time.perf_counter() - started
    assert final is not None
    assert first_delta is not None
    container_id = final.output[0].container_id  # type: ignore[union-attr]
    listed = list(client.containers.files.list(container_id, limit=100))
    wanted = [f for f in listed if f.path.endswith(".bin")]
    for f in wanted:
        assert (
            len(client.containers.files.content.retrieve(f.id, container_id=container_id).read())
            == 65536
        )
    done = time.perf_counter() - started
    assert len(wanted) == files, (len(wanted), files)
    return {"first_delta": first_delta, "completed": completed, "files_per_s": files / done}


def hand_out(client: OpenAI) -> float:
    started = time.perf_counter()
    container = client.containers.create(name="bench")
    client.responses.create(
        model=MODEL,
        input="```python\n1+1\n```",
        tools=[{"type": "code_interpreter", "container": container.id}],
    )
    elapsed = time.perf_counter() - started
    client.containers.delete(container.id)
    return elapsed


def measure(label: str, client: OpenAI, rounds: int, files: int) -> dict[str, float]:
    one_round(client, files)  # warm-up
    runs = [one_round(client, files) for _ in range(rounds)]
    handouts = [hand_out(client) for _ in range(rounds)]
    row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    row["hand_out"] = statistics.median(handouts)
    print(
        f"{label:<22} first code delta {row['first_delta'] * 1000:7.1f} ms   "
        f"completed {row['completed'] * 1000:7.1f} ms   "
        f"{row['files_per_s']:6.1f} files/s   container hand-out {row['hand_out'] * 1000:6.1f} ms"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--files", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        emulator = run_in_thread(
            create_emulator(
                EmulatorSettings(api_keys=(KEY,), data_dir=root / "emulator", pool_size=2)
            ),
            "127.0.0.1",
            0,
        )
        database = f"sqlite+aiosqlite:///{root / 'gw.db'}"
        settings = GatewaySettings(
            upstream=emulator.url,
            upstream_key=KEY,
            database=database,
            blobs=str(root / "blobs"),
            code_interpreter="self",
            interpreter_dir=str(root / "interpreter"),
            interpreter_pool_size=2,
        )
        tenant_key = _tenant_key(database)
        gateway = run_in_thread(create_gateway(settings), "127.0.0.1", 0, loop=SERVER_LOOP)
        http = httpx2.Client(timeout=120, trust_env=False)
        try:
            hosted = measure(
                "emulator hosted tool",
                OpenAI(base_url=f"{emulator.url}/openai/v1/", api_key=KEY, http_client=http),
                args.rounds,
                args.files,
            )
            mine = measure(
                "self-hosted gateway",
                OpenAI(base_url=f"{gateway.url}/openai/v1/", api_key=tenant_key, http_client=http),
                args.rounds,
                args.files,
            )
            print(
                "self/hosted: "
                + "   ".join(
                    f"{k} x{mine[k] / hosted[k]:.2f}"
                    for k in ("first_delta", "completed", "files_per_s", "hand_out")
                )
            )
        finally:
            http.close()
            gateway.stop()
            emulator.stop()


if __name__ == "__main__":
    main()
