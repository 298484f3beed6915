"""Per-event latency the gateway adds to an SSE stream, vs calling the emulator directly.

What is measured: for every SSE event, the time from when the **emulator wrote it to its socket**
to when the **client parsed it**, once directly and once through the gateway, in the same run.

* The emulator runs ``run_in_thread`` in a child interpreter (so it shares no GIL with the
  client) with its ASGI app wrapped in ``EmitStamps``: as each ``http.response.body`` message
  of a ``text/event-stream`` response is handed to uvicorn's ``send`` (which writes it to the
  socket before returning), it records
  ``time.perf_counter_ns()`` with the chunk. At the end the parent asks for the stamps and gets,
  per response id, the emission time of every ``sequence_number``. ``perf_counter`` is
  ``CLOCK_MONOTONIC`` on Linux, one clock for every process on the machine, so the child's emit
  times and the client's receive times can be subtracted.
* The gateway runs as a separate process, as in production, with SQLite and a blob directory;
  its harvester runs as usual. The gateway's streams use a container created through the gateway
  (so it belongs to the bench tenant), the direct streams one created directly.
* Each request runs ``CELLS`` small python cells (``time.sleep(0.02)``, a print) and the last cell
  writes one small file, ``bench_<n>.txt``, that the answer cites, so the gateway's harvester
  records and copies one file per stream. The events go out in many bursts while the stream is
  live (not in one burst at the end), so relay delays show.
* ``RUNS`` streams each way, interleaved direct/gateway, after ``WARMUP`` discarded pairs. The
  client reads the raw SSE with ``httpx2`` and stamps each ``data:`` line as it is yielded.

Reported: p50/p95 of the per-event emit-to-receive latency of each path over all events, and the
added latency as the difference of the two distributions (added p50 = gateway p50 - direct p50,
added p95 = gateway p95 - direct p95; events are not paired one to one). The fixed
time-to-first-event difference (key check, request forwarding) is printed on its own line.

Last line: ``passthrough: added per-event latency p50 X.XX ms (target < 1 ms), p95 Y.YY ms
(target < 3 ms) -> PASS|FAIL``. Exits non-zero only on errors (a server that does not start,
a stream that fails, an event with no emission stamp), not on FAIL.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway import ChildEmulator, free_port, start_gateway, stop

RUNS = 25
WARMUP = 2
CELLS = 5
#: Every stream must end within this; the whole run within ``DEADLINE``.
STREAM_TIMEOUT = 60.0
DEADLINE = 600.0
STARTUP_TIMEOUT = 120.0
TARGET_P50_MS, TARGET_P95_MS = 1.0, 3.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class EmitStamps:
    """ASGI middleware: when each SSE body chunk was written, kept raw (parsed only by ``dump``).

    The hot path only appends ``(perf_counter_ns, bytes)``: no parsing while streams are live.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.chunks: list[list[tuple[int, bytes]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[tuple[int, bytes]] | None = None

        async def stamped(message: Message) -> None:
            nonlocal chunks
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    chunks = []
                    self.chunks.append(chunks)
            if chunks is not None and message["type"] == "http.response.body":
                # Stamped as the chunk is handed to uvicorn, which writes it to the socket at
                # once; a stamp after ``send`` returns can come after the client already has it.
                chunks.append((time.perf_counter_ns(), bytes(message.get("body", b""))))
            await send(message)

        await self.app(scope, receive, stamped)

    def dump(self) -> dict[str, dict[int, int]]:
        """Per response id: ``sequence_number`` -> emit time (ns) of the chunk that carried it."""
        out: dict[str, dict[int, int]] = {}
        for chunks in self.chunks:
            rid = ""
            seqs: dict[int, int] = {}
            for stamp, body in chunks:
                for event in sse_data(body):
                    seqs[event["sequence_number"]] = stamp
                    rid = rid or event.get("response", {}).get("id", "")
            if rid:
                out[rid] = seqs
        return out


def sse_data(body: bytes) -> list[dict[str, Any]]:
    """The JSON of every ``data:`` line of a chunk of whole events."""
    return [
        json.loads(line[5:])
        for line in body.decode().splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]


def serve_emulator(api_key: str, data_dir: str) -> None:
    """The child: the stamped emulator; prints its URL, dumps stamps on ``dump``, ends on EOF."""
    from cigate.emulator.app import create_app
    from cigate.emulator.server import run_in_thread
    from cigate.emulator.settings import EmulatorSettings

    app = create_app(EmulatorSettings(api_keys=(api_key,), pool_size=1, data_dir=Path(data_dir)))
    stamps = EmitStamps(app)
    handle = run_in_thread(stamps)
    print(handle.url, flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "dump":
                print(json.dumps(stamps.dump()), flush=True)
    finally:
        handle.stop()


class Emulator(ChildEmulator):
    """The child process, which also hands over its emission stamps on request."""

    def __init__(self, api_key: str, data_dir: Path) -> None:
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            f"import passthrough; passthrough.serve_emulator({api_key!r}, {str(data_dir)!r})"
        )
        super().__init__(code, STARTUP_TIMEOUT)

    def stamps(self) -> dict[str, dict[int, int]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("dump\n")
        self.proc.stdin.flush()
        raw = self._readline(60)
        if not raw:
            raise RuntimeError("the emulator did not hand over its emission stamps")
        return {rid: {int(k): v for k, v in seqs.items()} for rid, seqs in json.loads(raw).items()}


def prompt(n: int) -> str:
    cells = [f"```python\nimport time; time.sleep(0.02); print({i})\n```" for i in range(CELLS - 1)]
    cells.append(
        "```python\nimport time; time.sleep(0.02)\n"
        f"open('/mnt/data/bench_{n}.txt', 'w').write('{n}')\n```"
    )
    return "Run these cells.\n\n" + "\n\n".join(cells) + "\n"


class Stream:
    """One streamed request: its response id, first-event delay and ``seq -> receive ns``."""

    def __init__(self, rid: str, first_ns: int, received: dict[int, int]) -> None:
        self.rid, self.first_ns, self.received = rid, first_ns, received


def stream(
    client: httpx2.Client, url: str, headers: dict[str, str], container: str, n: int
) -> Stream:
    body = {
        "model": "gpt-4.1",
        "stream": True,
        "input": prompt(n),
        "tools": [{"type": "code_interpreter", "container": container}],
    }
    received: dict[int, int] = {}
    rid = ""
    sent = time.perf_counter_ns()
    first = 0
    with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            now = time.perf_counter_ns()
            first = first or now
            event = json.loads(line[5:])
            received[event["sequence_number"]] = now
            rid = rid or event.get("response", {}).get("id", "")
    if not rid or not received:
        raise RuntimeError(f"{url}: a stream without a response id or events")
    return Stream(rid, first - sent, received)


def make_container(client: httpx2.Client, base: str, headers: dict[str, str]) -> str:
    reply = client.post(f"{base}/containers", json={"name": "bench"}, headers=headers)
    reply.raise_for_status()
    return str(reply.json()["id"])


def harvested(
    client: httpx2.Client, gw: str, headers: dict[str, str], streams: list[Stream]
) -> int:
    """How many of the gateway streams' cited files the harvester stored (waits up to 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        stored = 0
        for s in streams:
            reply = client.get(f"{gw}/responses/{s.rid}/files", headers=headers)
            reply.raise_for_status()
            stored += any(f["state"] == "stored" for f in reply.json()["data"])
        if stored == len(streams) or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latencies(streams: list[Stream], emitted: dict[str, dict[int, int]]) -> list[float]:
    """Emit-to-receive milliseconds of every event of ``streams``."""
    out: list[float] = []
    for s in streams:
        stamps = emitted.get(s.rid)
        if stamps is None or set(stamps) != set(s.received):
            raise RuntimeError(f"{s.rid}: the events received and emitted differ")
        for seq, recv in s.received.items():
            delta = (recv - stamps[seq]) / 1e6
            if delta < 0:
                raise RuntimeError(f"{s.rid} event {seq}: received before it was emitted")
            out.append(delta)
    return out


def main() -> int:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cigate-bench-"))
    upstream_key = "bench-" + secrets.token_hex(8)
    gw_port = free_port()
    emulator = Emulator(upstream_key, tmp / "emu")
    gateway = None
    try:
        gateway, key = start_gateway(emulator.url, upstream_key, tmp, gw_port)
        direct_base = f"{emulator.url}/openai/v1"
        gw_base = f"http://127.0.0.1:{gw_port}/openai/v1"
        direct_h = {"api-key": upstream_key}
        gw_h = {"authorization": f"Bearer {key}"}
        direct: list[Stream] = []
        via_gw: list[Stream] = []
        with httpx2.Client(timeout=STREAM_TIMEOUT, trust_env=False) as client:
            direct_box = make_container(client, direct_base, direct_h)
            gw_box = make_container(client, gw_base, gw_h)
            for n in range(WARMUP + RUNS):
                if time.monotonic() - began > DEADLINE:
                    raise RuntimeError(f"the benchmark ran past {DEADLINE:.0f} s")
                d = stream(client, f"{direct_base}/responses", direct_h, direct_box, n)
                g = stream(client, f"{gw_base}/responses", gw_h, gw_box, n)
                if n >= WARMUP:
                    direct.append(d)
                    via_gw.append(g)
            stored = harvested(client, f"http://127.0.0.1:{gw_port}", gw_h, via_gw)
        emitted = emulator.stamps()
    finally:
        if gateway is not None:
            stop(gateway)
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    d_ms, g_ms = latencies(direct, emitted), latencies(via_gw, emitted)
    bursts = sorted(len(set(emitted[s.rid].values())) for s in direct + via_gw)
    spans = [
        (max(emitted[s.rid].values()) - min(emitted[s.rid].values())) / 1e6 for s in direct + via_gw
    ]
    print(
        f"{RUNS} streams each way (interleaved, after {WARMUP} warm-up pairs), {CELLS} cells "
        f"each (the last writes one small file), {len(d_ms)} + {len(g_ms)} events; "
        f"{stored}/{len(via_gw)} gateway files harvested; {bursts[0]}-{bursts[-1]} socket "
        f"writes per stream spread over {percentile(spans, 0.5):.0f} ms (median)"
    )
    d50, d95 = percentile(d_ms, 0.5), percentile(d_ms, 0.95)
    g50, g95 = percentile(g_ms, 0.5), percentile(g_ms, 0.95)
    print(f"emit->receive direct:  p50 {d50:.2f} ms, p95 {d95:.2f} ms, max {max(d_ms):.2f} ms")
    print(f"emit->receive gateway: p50 {g50:.2f} ms, p95 {g95:.2f} ms, max {max(g_ms):.2f} ms")
    print("added = gateway percentile - direct percentile (distributions, not per-event pairs)")
    first_d = percentile([s.first_ns / 1e6 for s in direct], 0.5)
    first_g = percentile([s.first_ns / 1e6 for s in via_gw], 0.5)
    print(
        f"time to first event (median): direct {first_d:.2f} ms, gateway {first_g:.2f} ms, "
        f"+{first_g - first_d:.2f} ms (key check, container check, one more hop; fixed)"
    )
    p50, p95 = g50 - d50, g95 - d95
    ok = p50 < TARGET_P50_MS and p95 < TARGET_P95_MS
    print(
        f"passthrough: added per-event latency p50 {p50:.2f} ms (target < 1 ms), "
        f"p95 {p95:.2f} ms (target < 3 ms) -> {'PASS' if ok else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
