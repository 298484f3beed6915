"""Two emulators as two regions behind one gateway, each with its own record of every call.

Each region is a fresh emulator app wrapped in a :class:`Tap` (the region's own log: every
request's method, path, query and body, and its answer) and served behind a :class:`Door`, a
TCP forwarder that can be shut (connections refused, as for a region that is down) and opened
again on the same port with the region's state intact. :func:`misroutes` reads the logs: an
id that one region issued (in a 2xx answer) and that another region was asked about is a
call that went to the wrong upstream.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cigate.emulator.app import create_app as create_emulator
from cigate.emulator.server import ServerHandle, run_in_thread
from cigate.emulator.settings import EmulatorSettings
from cigate.testing.emulator import TEST_API_KEY

#: Every id form the emulator issues for an object a later call can name.
ID = re.compile(
    rb"\b(?:(?:cntr|cfile|resp|asst|thread|run|msg|conv|step)_[0-9A-Za-z]{16,}"
    rb"|(?:assistant|file)-[0-9A-Za-z]{16,})"
)


@dataclass
class Call:
    method: str
    path: str
    query: bytes
    body: bytes = b""
    status: int = 0
    answer: bytes = b""

    def named(self) -> set[bytes]:
        """The ids this call names (path, query, body)."""
        return set(ID.findall(self.path.encode() + b"?" + self.query + b" " + self.body))


class Tap:
    """ASGI wrapper that records every API call of the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: list[Call] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        call = Call(scope["method"], scope["path"], scope.get("query_string", b""))
        self.calls.append(call)

        async def rx() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                call.body += message.get("body", b"")
            return message

        async def tx(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
            elif message["type"] == "http.response.body":
                call.answer += message.get("body", b"")
            await send(message)

        await self.app(scope, rx, tx)


class Door:
    """A TCP forwarder in front of a server: shut, it refuses connections (and cuts the open
    ones); opened again, it listens on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.open()

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def open(self) -> None:
        self._run(self._listen())

    def shut(self) -> None:
        self._run(self._shut())

    def close(self) -> None:
        self.shut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._pipe, "127.0.0.1", self.port, reuse_address=True
            )

    async def _shut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open.update((writer, up_writer))

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._open.difference_update((writer, up_writer))


@dataclass
class Region:
    name: str
    tap: Tap
    handle: ServerHandle
    door: Door
    issued_before: set[bytes] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.door.port}"

    def issued(self) -> set[bytes]:
        """Ids in this region's successful answers: the objects it made (or listed)."""
        return {i for c in self.tap.calls if 200 <= c.status < 300 for i in ID.findall(c.answer)}

    def close(self) -> None:
        self.door.close()
        self.handle.stop()


def start_regions(tmp: Path, names: Iterable[str]) -> list[Region]:
    regions = []
    for name in names:
        settings = EmulatorSettings(
            api_keys=(TEST_API_KEY,), data_dir=tmp / name, pool_size=1, reaper_interval=60.0
        )
        tap = Tap(create_emulator(settings))
        handle = run_in_thread(tap, "127.0.0.1", 0)
        regions.append(Region(name, tap, handle, Door(handle.port)))
    return regions


def upstreams_toml(regions: Iterable[Region], **extra: str) -> str:
    """An upstreams file naming every region (keys inline; ``extra``: more per-entry lines)."""
    lines = []
    for region in regions:
        lines += [
            "[[upstreams]]",
            f'name = "{region.name}"',
            f'url = "{region.url}"',
            f'key = "{TEST_API_KEY}"',
            *(f"{k} = {v}" for k, v in extra.items()),
            "",
        ]
    return "\n".join(lines)


def misroutes(regions: list[Region]) -> tuple[list[str], int]:
    """Calls that named an object another region made; and how many calls named any id."""
    issued = {r.name: r.issued() for r in regions}
    wrong: list[str] = []
    naming = 0
    for region in regions:
        others = set().union(*(issued[o.name] for o in regions if o is not region))
        for call in region.tap.calls:
            named = call.named()
            naming += bool(named)
            foreign = (named & others) - issued[region.name]
            if foreign:
                wrong.append(f"{region.name}: {call.method} {call.path} named {sorted(foreign)}")
    both = set.intersection(*issued.values()) if issued else set()
    wrong += [f"issued by two regions: {i!r}" for i in sorted(both)]
    return wrong, naming


def calls_about(regions: list[Region], object_id: str) -> Iterator[tuple[str, Call]]:
    for region in regions:
        for call in region.tap.calls:
            if object_id.encode() in call.named():
                yield region.name, call
