"""Load: many concurrent streaming responses that cite files, through the gateway and direct.

Issue 14 item 4. Goal: added per-event latency p50 < 0.5 ms and p99 < 3 ms at 200 concurrent
streams, no file lost.

Four processes: three as deployed, and a reference:

* **upstream**: a scripted Responses upstream (this file, ``--serve-upstream``) under uvicorn.
  It runs no code: each ``POST /responses`` streams ``--events`` events ``--gap-ms`` apart
  (``response.created`` … text deltas … one ``output_text.annotation.added`` per cited file …
  ``response.completed`` with the citations), and serves the cited container files (listing,
  record, content; the bytes derive from the file id). The emulator's real interpreter with 200
  live kernels would measure the sandbox, not the gateway; this upstream costs a few µs an
  event, so 200 streams fit on the shared 2 cores next to the gateway.
* **gateway**: ``cigate gateway serve`` (uvicorn, SQLite + blob directory), its tap, keeper and
  harvester running as usual: every cited file is copied into its store.
* **relay** (the reference, ``--serve-relay``): a bare asyncio byte relay between client and
  upstream, no HTTP parsing. Any proxy adds at least what it adds: one more process on the
  path, woken, reading and writing once per event. The report gives what the gateway adds over
  it too, so a slow machine (a VM's wake-ups, a loaded core) shows as such.
* **client**: this process, a bare asyncio HTTP/1.1 client (one connection per stream). On each
  ``data_received`` it only stamps ``perf_counter_ns()`` and keeps the bytes; parsing waits
  until the phase is over, so the client does almost nothing while streams are live.

Per-event latency: the upstream writes ``"emitted_ns": perf_counter_ns()`` into every event just
before handing it to uvicorn (which writes it to the socket at once); the client's stamp of the
read that completed the event minus that is the event's emit-to-receive latency.
``perf_counter`` is ``CLOCK_MONOTONIC``, one clock for all processes on the machine. The gateway
relays the bytes unchanged, so the same method measures both paths. Added latency = gateway
percentile - direct percentile over all events of each path (the two paths carry different
requests, so events are not paired). Time to first event: request written to first event read.

Phases alternate direct / relay / gateway (``--rounds`` each), each phase ``--streams``
requests with at most ``--concurrency`` open at once; requests per second is a phase's
streams over its wall time (bounded above by the upstream's pacing: the ratio shows what the
gateway costs, not a maximum). Afterwards every file the gateway streams cited is looked up in
``GET /responses/{id}/files`` until stored and downloaded from ``/files/{id}/content``: a file
not stored, or whose bytes differ from the upstream's, is **lost** (must be 0; exit status 1
otherwise, also on any failed stream).

The first ``--concurrency`` streams of a phase start spread over ``--ramp-ms`` (default: one
stream's length), each later one as soon as another ends: a steady ``--concurrency`` streams
open, as at an organisation's peak, rather than one burst (``--ramp-ms 0`` measures that).

The upstream's timers (``--upstream-loop``). ``asyncio`` (epoll) and ``uvloop`` wait in whole
milliseconds: every event due within the same millisecond leaves together, about ten at a
time at 200 streams, and a proxy relays each such burst one event after another (the last
waits for all before it). That window is one process's timer granularity, shared by every
stream it paces. By default the upstream runs asyncio's loop on ``select(2)``, whose wait takes
microseconds (the kernel's timer slack, 50 µs, still applies), so its events are less bunched:
no whole-millisecond windows. They are not independent: the ramp puts streams into a few
phases, and the kernel and the upstream's own cost still group them. Real upstreams are bursty
in their own ways (a batched model emits a token for each request of a batch at once; content
filtering releases text in chunks), so ``asyncio`` stays as the stress variant. The report
prints how bunched the events were (the share sent within 50 µs of the one before, what
independent streams at the same rate would give, the burst an event left in) and names the
loop on its last line. The loop is always named, so that installing uvloop (the gateway's
extra) never changes the reference. ``select`` watches descriptors below 1,024, so above
``--concurrency 400`` the default is asyncio's loop.

CPUs (``--cpus split``, the default where there are two or more): the gateway and the relay
run on one half of the CPUs, the client and the upstream on the other, as a deployed gateway
has CPUs of its own. Sharing them (``--cpus shared``) measures the scheduler's wake-up delays
between busy processes on one CPU: on a 2-CPU machine, the gateway's added p50 with no
tap, keeper or harvest at all was 0.90 / 1.00 ms shared against 0.23 / 0.28 ms split. This
is consistent with, though it does not prove, why the upstream's loop (its CPU an event)
moved the gateway's figures when the CPUs were shared.

Usage: ``python bench/load.py [--concurrency 200] [--streams 400] [--rounds 2] [--events 250]
[--gap-ms 20] [--ramp-ms MS] [--files 1] [--upstream-loop select|asyncio|uvloop]
[--cpus split|shared] [--quick]``. Last line: ``load: ... -> PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import itertools
import json
import math
import os
import secrets
import selectors
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway import free_port, pin, split_cpus, start, start_gateway, stop

TARGET_P50_MS, TARGET_P99_MS = 0.5, 3.0
#: Two events emitted closer than this count as one burst (``bunched``).
BURST_NS = 50_000
#: The span over which ``bunched`` takes the upstream's rate as steady (a ramp changes it).
RATE_WINDOW_NS = 100_000_000
#: ``select(2)`` watches descriptors below 1,024. At 400 streams the upstream holds at most
#: ~560: a socket for each open stream, up to 50 idle pooled connections of the gateway (kept
#: across phases), up to 100 harvest connections (``CIGATE_GATEWAY_HARVEST_CONNECTIONS``),
#: the listening socket, the loop's pipe and the standard streams; it would break near 860.
SELECT_MAX_CONCURRENCY = 400
FILE_SIZE = 4096
#: Bounds on waiting (never on what is measured): one stream, the files after the run.
STREAM_TIMEOUT = 120.0
FILES_TIMEOUT = 120.0

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def file_bytes(file_id: str) -> bytes:
    """The content of a scripted container file: derived from its id, so anyone can check it."""
    block = hashlib.sha256(file_id.encode()).digest()
    return (block * (FILE_SIZE // len(block) + 1))[:FILE_SIZE]


# -- the scripted upstream ------------------------------------------------------------------


class ScriptedUpstream:
    """A raw ASGI app: the Responses stream and container-file endpoints the harvest reads."""

    def __init__(self, events: int, gap_ms: float, files: int) -> None:
        self.events, self.gap, self.files = events, gap_ms / 1000, files
        #: container id -> its file ids
        self.containers: dict[str, list[str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                if kind == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif kind == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        parts = scope["path"].strip("/").split("/")
        if parts[:2] == ["openai", "v1"]:
            parts = parts[2:]
        if scope["method"] == "POST" and parts == ["responses"]:
            while (await receive()).get("more_body"):
                pass
            await self.stream(send)
        elif scope["method"] == "GET" and parts[:1] == ["containers"] and len(parts) >= 3:
            await self.container(parts[1], parts[2:], send)
        elif scope["method"] == "GET" and parts == ["healthz"]:
            await _send(send, 200, b'{"ok":true}')
        else:
            await _send(
                send,
                404,
                _error("not found"),
            )

    async def stream(self, send: Send) -> None:
        rid = "resp_" + secrets.token_hex(24)
        cid = "cntr_" + secrets.token_hex(24)
        fids = ["cfile_" + secrets.token_hex(16) for _ in range(self.files)]
        self.containers[cid] = fids
        call = {
            "type": "code_interpreter_call",
            "id": "ci_" + secrets.token_hex(8),
            "status": "completed",
            "container_id": cid,
            "code": "...",
            "outputs": None,
        }
        anns = [
            {
                "type": "container_file_citation",
                "container_id": cid,
                "file_id": f,
                "filename": f"{f}.bin",
                "start_index": 0,
                "end_index": 1,
            }
            for f in fids
        ]
        message = {
            "type": "message",
            "id": "msg_" + secrets.token_hex(8),
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "x", "annotations": anns}],
        }

        def response(status: str, output: list[Any]) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": "bench",
                "output": output,
            }

        script: list[dict[str, Any]] = [
            {"type": "response.created", "response": response("in_progress", [])},
            {"type": "response.output_item.added", "output_index": 0, "item": call},
        ]
        deltas = max(1, self.events - len(script) - len(anns) - 1)
        script += [
            {
                "type": "response.output_text.delta",
                "item_id": message["id"],
                "output_index": 1,
                "content_index": 0,
                "delta": "x",
            }
        ] * deltas
        script += [
            {
                "type": "response.output_text.annotation.added",
                "item_id": message["id"],
                "output_index": 1,
                "content_index": 0,
                "annotation_index": i,
                "annotation": a,
            }
            for i, a in enumerate(anns)
        ]
        script.append(
            {"type": "response.completed", "response": response("completed", [call, message])}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        for seq, event in enumerate(script):
            if seq:
                await asyncio.sleep(self.gap)
            body = json.dumps({**event, "sequence_number": seq, "emitted_ns": 0})
            # Stamped last: the chunk goes to the socket inside this ``send``.
            body = body.replace('"emitted_ns": 0', f'"emitted_ns": {time.perf_counter_ns()}')
            chunk = f"event: {event['type']}\ndata: {body}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def container(self, cid: str, rest: list[str], send: Send) -> None:
        fids = self.containers.get(cid)
        if fids is None:
            await _send(
                send,
                404,
                _error("no such container"),
            )
            return

        def record(f: str) -> dict[str, Any]:
            return {
                "id": f,
                "object": "container.file",
                "container_id": cid,
                "path": f"/mnt/data/{f}.bin",
                "bytes": FILE_SIZE,
                "source": "assistant",
                "created_at": 0,
            }

        if rest == ["files"]:
            page = {"object": "list", "data": [record(f) for f in fids], "has_more": False}
            await _send(send, 200, json.dumps(page).encode())
        elif len(rest) == 2 and rest[1] in fids:
            await _send(send, 200, json.dumps(record(rest[1])).encode())
        elif len(rest) == 3 and rest[1] in fids and rest[2] == "content":
            await _send(send, 200, file_bytes(rest[1]), b"application/octet-stream")
        else:
            await _send(
                send,
                404,
                _error("no such file"),
            )


def _error(message: str) -> bytes:
    """An OpenAI error envelope."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return json.dumps({"error": error}).encode()


async def _send(send: Send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def select_loop() -> asyncio.AbstractEventLoop:
    """asyncio's loop on ``select(2)``: its wait takes a timeout in microseconds, where
    epoll's (asyncio's default on Linux, and libuv's) takes whole milliseconds, so a timer
    fires when it is due (within the kernel's timer slack), not with every other timer due
    in the same millisecond. Each wait scans every socket: ~10 µs with 200 open."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def serve_upstream(port: int, events: int, gap_ms: float, files: int, loop: str) -> None:
    import uvicorn

    uvicorn.run(
        ScriptedUpstream(events, gap_ms, files),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # Always named, so that what is installed never changes the reference.
        loop=f"{__name__}:select_loop" if loop == "select" else loop,
        http="h11",
    )


# -- the reference relay ---------------------------------------------------------------------


class _RelayHalf(asyncio.Protocol):
    """One side of a bare byte relay: what it receives goes to its peer's transport as is."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _RelayHalf | None = None
        self.early: list[bytes] = []  # bytes that came before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def link(self, peer: _RelayHalf) -> None:
        self.peer, peer.peer = peer, self
        for half in (self, peer):
            assert half.peer is not None
            assert half.peer.transport is not None
            for data in half.early:
                half.peer.transport.write(data)
            half.early.clear()


def serve_relay(port: int, upstream_port: int) -> None:
    """The reference: a process that only copies bytes between client and upstream (asyncio
    protocols, no HTTP parsing). What it adds over direct is the cost of one more process on
    the path on this machine (a wake-up, a read and a write per event), which any relay pays;
    what the gateway adds over it is the gateway's own."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        connecting: set[asyncio.Task[None]] = set()

        def accepted() -> _RelayHalf:
            client = _RelayHalf()

            async def connect() -> None:
                try:
                    _, upstream = await loop.create_connection(
                        _RelayHalf, "127.0.0.1", upstream_port
                    )
                except OSError:
                    if client.transport is not None:
                        client.transport.close()
                    return
                client.link(upstream)

            task = loop.create_task(connect())
            connecting.add(task)
            task.add_done_callback(connecting.discard)
            return client

        server = await loop.create_server(accepted, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


# -- the client ------------------------------------------------------------------------------


@dataclass
class Stream:
    """One stream as read: when each read arrived and what it carried (parsed afterwards)."""

    sent_ns: int = 0
    reads: list[tuple[int, bytes]] = field(default_factory=list)
    done: asyncio.Future[None] | None = None


class _Reader(asyncio.Protocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        self.stream.reads.append((time.perf_counter_ns(), data))

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.stream.done is not None
        if not self.stream.done.done():
            self.stream.done.set_result(None)


async def one_stream(port: int, path: str, headers: dict[str, str], body: bytes) -> Stream:
    loop = asyncio.get_running_loop()
    stream = Stream(done=loop.create_future())
    transport, _ = await loop.create_connection(lambda: _Reader(stream), "127.0.0.1", port)
    head = [
        f"POST {path} HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "connection: close",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    stream.sent_ns = time.perf_counter_ns()
    transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    try:
        await asyncio.wait_for(stream.done, STREAM_TIMEOUT)
    finally:
        transport.close()
    return stream


@dataclass
class Parsed:
    response_id: str
    first_ms: float
    latencies_ms: list[float]
    emitted_ns: list[int]  # when the upstream sent each event (its ``emitted_ns``)
    cited: list[tuple[str, str]]  # (container id, file id)
    completed: bool


def parse(stream: Stream) -> Parsed:
    """Dechunk the raw reads; each event's receive time is the read that completed it."""
    raw = b"".join(data for _, data in stream.reads)
    ends, total = [], 0
    for _, data in stream.reads:
        total += len(data)
        ends.append(total)
    head_end = raw.find(b"\r\n\r\n")
    status = raw[: raw.find(b"\r\n")]
    if head_end < 0 or b" 200 " not in status:
        raise RuntimeError(f"a stream failed: {raw[:300]!r}")
    # (raw offset of segment start, body offset of segment start); body = dechunked bytes
    segments: list[tuple[int, int]] = []
    body = bytearray()
    pos = head_end + 4
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        if size == 0:
            break
        segments.append((eol + 2, len(body)))
        body += raw[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
    starts = [b for _, b in segments]
    out = Parsed("", 0.0, [], [], [], False)
    cursor = 0
    while (end := body.find(b"\n\n", cursor)) >= 0:
        event = bytes(body[cursor:end])
        cursor = end + 2
        data = next((ln[5:] for ln in event.split(b"\n") if ln.startswith(b"data:")), None)
        if data is None:
            continue
        seg = bisect.bisect_right(starts, end + 1) - 1
        raw_at = segments[seg][0] + (end + 1 - segments[seg][1])
        received = stream.reads[bisect.bisect_right(ends, raw_at)][0]
        doc = json.loads(data)
        latency = (received - doc["emitted_ns"]) / 1e6
        if latency < 0:
            raise RuntimeError("an event was received before it was emitted")
        out.latencies_ms.append(latency)
        out.emitted_ns.append(doc["emitted_ns"])
        if not out.first_ms:
            out.first_ms = (received - stream.sent_ns) / 1e6
        if doc["type"] == "response.created":
            out.response_id = doc["response"]["id"]
        if doc["type"] == "response.output_text.annotation.added":
            ann = doc["annotation"]
            out.cited.append((ann["container_id"], ann["file_id"]))
        out.completed = out.completed or doc["type"] == "response.completed"
    if not out.completed or not out.response_id:
        raise RuntimeError(f"a stream ended without response.completed ({len(body)} bytes)")
    return out


@dataclass
class Phase:
    parsed: list[Parsed]
    seconds: float
    #: CPU seconds (user + system) the path's own process used during the phase: the
    #: upstream (direct), the relay or the gateway. ``None`` without ``/proc``.
    cpu: float | None = None


async def phase(
    port: int, path: str, headers: dict[str, str], streams: int, concurrency: int, *, ramp: float
) -> Phase:
    """``streams`` streams, at most ``concurrency`` at once; the first ``concurrency`` start
    spread evenly over ``ramp`` seconds, each later one as soon as another ends."""
    body = json.dumps(
        {
            "model": "bench",
            "stream": True,
            "input": "Write the files.",
            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        }
    )
    began = time.perf_counter()
    raw = await ramped(
        streams, concurrency, ramp, lambda _: one_stream(port, path, headers, body.encode())
    )
    seconds = time.perf_counter() - began
    return Phase([parse(s) for s in raw], seconds)


async def ramped(
    count: int, concurrency: int, ramp: float, run: Callable[[int], Awaitable[T]]
) -> list[T]:
    """``run(n)`` for ``n`` in ``range(count)``, started in order, at most ``concurrency`` at
    once: the first ``concurrency`` slots open one by one over ``ramp`` seconds, and each run
    that ends hands its slot to the next. (Later runs must not take slots the ramp has not
    opened yet: they would all start at once, the burst the ramp is there to avoid.)"""
    slots = asyncio.Semaphore(0)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    results: dict[int, T] = {}

    async def open_slots() -> None:
        for i in range(concurrency):
            slots.release()
            if i + 1 < concurrency:
                await asyncio.sleep(ramp / concurrency)

    async def worker() -> None:
        await slots.acquire()  # a slot, opened by the ramp; kept for one run after another
        while not queue.empty():
            n = queue.get_nowait()
            results[n] = await run(n)

    await asyncio.gather(open_slots(), *(worker() for _ in range(min(concurrency, count))))
    return [results[n] for n in range(count)]


# -- files lost --------------------------------------------------------------------------------


def files_lost(gw: str, key: str, parsed: list[Parsed]) -> tuple[int, int]:
    """(cited, lost): a cited file is lost unless stored and byte-identical to the upstream's."""
    import httpx2

    headers = {"authorization": f"Bearer {key}"}
    cited = sum(len(p.cited) for p in parsed)
    good: set[str] = set()
    deadline = time.monotonic() + FILES_TIMEOUT
    with httpx2.Client(base_url=gw, headers=headers, timeout=60, trust_env=False) as client:
        while True:
            for p in parsed:
                want = {f for _, f in p.cited} - good
                if not want:
                    continue
                reply = client.get(f"/responses/{p.response_id}/files")
                reply.raise_for_status()
                for row in reply.json()["data"]:
                    up = row["upstream_file_id"]
                    if up in want and row["state"] == "stored":
                        content = client.get(f"/files/{row['id']}/content")
                        if content.status_code == 200 and content.content == file_bytes(up):
                            good.add(up)
            if len(good) == cited or time.monotonic() > deadline:
                return cited, cited - len(good)
            time.sleep(0.5)


# -- the run ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``), else ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_phase(pid: int, run: Callable[[], Phase]) -> Phase:
    """``run()``, with the CPU time process ``pid`` used meanwhile."""
    before = cpu_seconds(pid)
    result = run()
    after = cpu_seconds(pid)
    if before is not None and after is not None:
        result.cpu = after - before
    return result


@dataclass
class Bunching:
    """How bunched the upstream sent its events (``bunched``)."""

    #: Share of events sent within ``within_ns`` of the one before.
    close: float
    #: The share independent streams at the same rate would give.
    independent: float
    #: The size of the burst (events each within ``within_ns`` of the one before) an event
    #: was sent in, on average over events: how many a proxy relays back to back.
    burst: float


def bunched(
    emitted_ns: list[int], within_ns: int = BURST_NS, window_ns: int = RATE_WINDOW_NS
) -> Bunching:
    """How much the upstream's timers bunch its events, against independent streams.

    Independent streams merge into a Poisson stream, whose gaps are exponential: a gap is
    shorter than ``w`` with probability ``1 - exp(-rate * w)``. The rate is taken in each
    ``window_ns`` span (the ramp and the phases change it), then averaged over events."""
    ordered = sorted(emitted_ns)
    if len(ordered) < 2:
        return Bunching(0.0, 0.0, float(len(ordered)))
    per_window: dict[int, int] = {}
    for t in ordered:
        per_window[t // window_ns] = per_window.get(t // window_ns, 0) + 1
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    close = sum(1 for gap in gaps if gap < within_ns) / len(gaps)
    independent = sum(
        1 - math.exp(-per_window[t // window_ns] / window_ns * within_ns) for t in ordered[1:]
    ) / len(gaps)
    bursts, run = [], 1
    for gap in gaps:
        if gap < within_ns:
            run += 1
        else:
            bursts.append(run)
            run = 1
    bursts.append(run)
    return Bunching(close, independent, sum(b * b for b in bursts) / len(ordered))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200, help="streams open at once")
    parser.add_argument("--streams", type=int, default=400, help="streams per phase")
    parser.add_argument("--rounds", type=int, default=2, help="direct, relay, gateway phase rounds")
    parser.add_argument("--events", type=int, default=250, help="events per stream")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="upstream pause per event")
    parser.add_argument(
        "--ramp-ms", type=float, help="first streams' start spread (default: one stream's length)"
    )
    parser.add_argument("--files", type=int, default=1, help="files each stream cites")
    parser.add_argument("--quick", action="store_true", help="20 streams, 1 round (smoke)")
    parser.add_argument(
        "--upstream-loop",
        choices=("select", "asyncio", "uvloop"),
        help="the scripted upstream's event loop: select (timers in microseconds, no "
        "whole-millisecond bursts; the default up to --concurrency "
        f"{SELECT_MAX_CONCURRENCY}), asyncio (the default above; the stress variant) or uvloop "
        "(millisecond timers: the events of all streams due in one millisecond leave together)",
    )
    parser.add_argument(
        "--cpus",
        choices=("split", "shared"),
        default="split",
        help="split: gateway and relay on half the CPUs, client and upstream on the other "
        "half (as deployed); shared: all on all CPUs",
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.streams, args.rounds, args.events = 20, 20, 1, 10
    if args.ramp_ms is None:
        args.ramp_ms = args.events * args.gap_ms
    if args.upstream_loop is None:
        wide = args.concurrency > SELECT_MAX_CONCURRENCY
        args.upstream_loop = "asyncio" if wide else "select"
    elif args.upstream_loop == "select" and args.concurrency > SELECT_MAX_CONCURRENCY:
        parser.error(
            f"--upstream-loop select watches sockets below 1,024 only (select(2)): use at most "
            f"--concurrency {SELECT_MAX_CONCURRENCY}, or --upstream-loop asyncio"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if args.serve_upstream:
        serve_upstream(
            args.serve_upstream, args.events, args.gap_ms, args.files, args.upstream_loop
        )
        return 0
    if args.serve_relay:
        serve_relay(*args.serve_relay)
        return 0
    halves = split_cpus() if args.cpus == "split" else None
    if halves is not None:
        pin(os.getpid(), halves[0])  # the client, and the upstream it starts
    tmp = Path(tempfile.mkdtemp(prefix="cigate-load-"))
    up_port, gw_port, relay_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(
            start(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--serve-upstream",
                    str(up_port),
                    "--events",
                    str(args.events),
                    "--gap-ms",
                    str(args.gap_ms),
                    "--files",
                    str(args.files),
                    "--upstream-loop",
                    args.upstream_loop,
                ],
                {},
                f"http://127.0.0.1:{up_port}/healthz",
            )
        )
        procs.append(
            start(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--serve-relay",
                    str(relay_port),
                    str(up_port),
                ],
                {},
                f"http://127.0.0.1:{relay_port}/healthz",
            )
        )
        gateway, key = start_gateway(f"http://127.0.0.1:{up_port}", "bench", tmp, gw_port)
        procs.append(gateway)
        gw_auth = {"authorization": f"Bearer {key}"}
        upstream_proc, relay_proc = procs[0], procs[1]
        if halves is not None:
            pin(relay_proc.pid, halves[1])
            pin(gateway.pid, halves[1])
        paths = {
            "direct": (up_port, "/openai/v1/responses", {"api-key": "bench"}),
            "relay": (relay_port, "/openai/v1/responses", {"api-key": "bench"}),
            "gateway": (gw_port, "/openai/v1/responses", gw_auth),
        }
        pids = {"direct": upstream_proc.pid, "relay": relay_proc.pid, "gateway": gateway.pid}
        results: dict[str, list[Phase]] = {name: [] for name in paths}
        load = os.getloadavg()[0]
        # One small warm-up phase each (imports, first connections), not counted.
        for port, path, headers in paths.values():
            asyncio.run(phase(port, path, headers, min(10, args.streams), 10, ramp=0.0))
        ramp = args.ramp_ms / 1000
        for _ in range(args.rounds):
            for name, (port, path, headers) in paths.items():
                results[name].append(
                    measured_phase(
                        pids[name],
                        lambda port=port, path=path, headers=headers: asyncio.run(
                            phase(port, path, headers, args.streams, args.concurrency, ramp=ramp)
                        ),
                    )
                )
        load = max(load, os.getloadavg()[0])
        gw_parsed = [p for ph in results["gateway"] for p in ph.parsed]
        cited, lost = files_lost(f"http://127.0.0.1:{gw_port}", key, gw_parsed)
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return report(args, results, cited, lost, load, halves=halves)


def report(
    args: argparse.Namespace,
    results: dict[str, list[Phase]],
    cited: int,
    lost: int,
    load: float,
    *,
    halves: tuple[set[int], set[int]] | None,
) -> int:
    stats = {}
    cpu_us: dict[str, float | None] = {}
    for name, phases in results.items():
        parsed = [p for ph in phases for p in ph.parsed]
        lat = [x for p in parsed for x in p.latencies_ms]
        rps = sum(len(ph.parsed) for ph in phases) / sum(ph.seconds for ph in phases)
        first = percentile([p.first_ms for p in parsed], 0.5)
        stats[name] = (percentile(lat, 0.5), percentile(lat, 0.99), first, rps)
        cpus = [ph.cpu for ph in phases if ph.cpu is not None]
        cpu_us[name] = sum(cpus) / len(lat) * 1e6 if len(cpus) == len(phases) and lat else None
        print(
            f"{name:8} {len(parsed)} streams, {len(lat)} events: emit->receive p50 "
            f"{stats[name][0]:.2f} ms, p99 {stats[name][1]:.2f} ms, max {max(lat):.2f} ms; "
            f"first event {first:.2f} ms (median); {rps:.1f} streams/s"
        )
    (d50, d99, dfirst, drps), (g50, g99, gfirst, grps) = stats["direct"], stats["gateway"]
    r50, r99 = stats["relay"][:2]
    add50, add99 = g50 - d50, g99 - d99
    ok = add50 < TARGET_P50_MS and add99 < TARGET_P99_MS and lost == 0
    print(
        f"concurrency {args.concurrency}, {args.rounds} round(s) of {args.streams} streams each "
        f"way (interleaved), {args.events} events {args.gap_ms:g} ms apart, {args.files} "
        f"file(s) each, first {args.concurrency} started over {args.ramp_ms:g} ms, upstream on "
        f"{args.upstream_loop}; load average "
        f"(1 min, max seen) {load:.2f}"
    )
    if halves is not None:
        print(
            f"CPUs: gateway and relay on {sorted(halves[1])}, client and upstream on "
            f"{sorted(halves[0])}"
        )
    else:
        why = "--cpus shared" if args.cpus == "shared" else "fewer than 2 to split"
        print(f"CPUs: all processes share the machine's {os.cpu_count()} ({why})")
    timing = bunched([t for ph in results["gateway"] for p in ph.parsed for t in p.emitted_ns])
    print(
        f"upstream's timing (gateway phases): {timing.close:.0%} of the events were sent "
        f"within {BURST_NS // 1000} µs of the one before (independent streams at the same "
        f"rate: {timing.independent:.0%}); an event left in a burst of {timing.burst:.1f} on "
        "average"
    )
    print(f"time to first event added (median): {gfirst - dfirst:+.2f} ms")
    print(
        f"reference: a bare byte relay adds p50 {r50 - d50:.2f} ms, p99 {r99 - d99:.2f} ms "
        f"(one more process on the path); the gateway adds p50 {g50 - r50:.2f} ms, p99 "
        f"{g99 - r99:.2f} ms over it"
    )
    gw_cpu, relay_cpu, up_cpu = cpu_us["gateway"], cpu_us["relay"], cpu_us["direct"]
    if gw_cpu is not None and relay_cpu and up_cpu is not None:
        # Less noisy than latency: what one event costs the process that handles it.
        print(
            f"CPU an event (user + system, the whole phase): gateway {gw_cpu:.1f} µs, bare relay "
            f"{relay_cpu:.1f} µs, upstream {up_cpu:.1f} µs; gateway/relay {gw_cpu / relay_cpu:.1f}x"
        )
    print(f"files: {cited} cited through the gateway, {lost} lost")
    print(
        f"load: added per-event latency p50 {add50:.2f} ms (target < {TARGET_P50_MS} ms), "
        f"p99 {add99:.2f} ms (target < {TARGET_P99_MS:g} ms), rps gateway/direct "
        f"{grps / drps:.2f}, files lost {lost}, upstream on {args.upstream_loop} -> "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
