"""In-process transports: run requests through the app on the *server thread's* event loop.

The kernel pool belongs to the loop that started the app, so the app must never run on a second
loop. These transports pre-read the request body, drive the ASGI app as a task on that loop
(``run_coroutine_threadsafe``) and stream the reply back through a thread-safe queue, so SSE
events arrive while the cell still runs, exactly as over a socket. A scripted connection drop or
truncation (``FaultAbort`` after the response started) surfaces as ``httpx2.RemoteProtocolError``;
closing a response early tells the app the client disconnected.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import unquote

import httpx2
from starlette.types import ASGIApp, Message

from cigate.emulator.faults import FaultAbort

#: ("start", status, headers) | ("body", bytes) | ("end",) | ("abort", reason)
Item = tuple[Any, ...]
Put = Callable[[Item], None]

_INTERNAL_ERROR: list[Item] = [
    ("start", 500, [(b"content-type", b"text/plain; charset=utf-8")]),
    ("body", b"Internal Server Error"),
    ("end",),
]


def _scope(request: httpx2.Request) -> dict[str, Any]:
    url = request.url
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "scheme": url.scheme,
        "path": unquote(url.path),
        "raw_path": url.raw_path.split(b"?")[0],
        "query_string": url.query,
        "server": (url.host, url.port),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
    }


async def _drive(
    app: ASGIApp, scope: dict[str, Any], body: bytes, put: Put, disconnected: asyncio.Event
) -> None:
    """Run one request through the app, reporting the reply as queue items."""
    body_sent = False
    started = False
    head = scope["method"] == "HEAD"

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal started
        if disconnected.is_set():
            return  # as uvicorn: writes after the client left go nowhere
        if message["type"] == "http.response.start":
            started = True
            put(("start", message["status"], list(message.get("headers", []))))
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if chunk and not head:
                put(("body", bytes(chunk)))
            if not message.get("more_body", False):
                put(("end",))

    try:
        await app(scope, receive, send)
    except FaultAbort as exc:
        put(("abort", str(exc)))
    except Exception as exc:  # the server would log it and cut or 500 the reply
        if started:
            put(("abort", f"the app failed mid-response: {exc!r}"))
        else:
            for item in _INTERNAL_ERROR:
                put(item)
    else:
        if not started:
            for item in _INTERNAL_ERROR:
                put(item)


def _read_timeout(request: httpx2.Request) -> float | None:
    timeout: dict[str, Any] = request.extensions.get("timeout", {})
    value = timeout.get("read")
    return float(value) if value is not None else None


def _response(request: httpx2.Request, first: Item, stream: Any) -> httpx2.Response:
    if first[0] != "start":
        raise httpx2.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )
    return httpx2.Response(first[1], headers=first[2], stream=stream, request=request)


def _body_chunk(item: Item, request: httpx2.Request) -> bytes | None:
    """One queued ASGI event as body bytes; ``None`` once the body ended; a broken connection
    (the app raised mid-body) as the error a real socket gives httpx2."""
    if item[0] == "body":
        return bytes(item[1])
    if item[0] == "abort":
        raise httpx2.RemoteProtocolError(
            f"peer closed connection without sending complete message body ({item[1]})",
            request=request,
        )
    return None


class _SyncBody(httpx2.SyncByteStream):
    def __init__(
        self, items: queue.Queue[Item], request: httpx2.Request, on_close: Callable[[], object]
    ) -> None:
        self.items, self.request, self.on_close = items, request, on_close
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        while not self.done:
            try:
                item = self.items.get(timeout=_read_timeout(self.request))
            except queue.Empty:
                raise httpx2.ReadTimeout(
                    "in-process read timed out", request=self.request
                ) from None
            chunk = _body_chunk(item, self.request)
            if chunk is None:
                self.done = True
            else:
                yield chunk

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.on_close()


class InProcessTransport(httpx2.BaseTransport):
    """Sync transport for ``httpx2.Client`` (and so for ``openai.OpenAI``)."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        items: queue.Queue[Item] = queue.Queue()
        disconnected = asyncio.Event()
        asyncio.run_coroutine_threadsafe(
            _drive(self.app, _scope(request), body, items.put_nowait, disconnected), self.loop
        )
        try:
            first = items.get(timeout=_read_timeout(request))
        except queue.Empty:
            self.loop.call_soon_threadsafe(disconnected.set)
            raise httpx2.ReadTimeout("in-process request timed out", request=request) from None
        stream = _SyncBody(items, request, lambda: self.loop.call_soon_threadsafe(disconnected.set))
        return _response(request, first, stream)


class _AsyncBody(httpx2.AsyncByteStream):
    def __init__(
        self, items: asyncio.Queue[Item], request: httpx2.Request, on_close: Callable[[], object]
    ) -> None:
        self.items, self.request, self.on_close = items, request, on_close
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.done:
            try:
                item = await asyncio.wait_for(self.items.get(), _read_timeout(self.request))
            except TimeoutError:
                raise httpx2.ReadTimeout(
                    "in-process read timed out", request=self.request
                ) from None
            chunk = _body_chunk(item, self.request)
            if chunk is None:
                self.done = True
            else:
                yield chunk

    async def aclose(self) -> None:
        if not self.done:
            self.done = True
            self.on_close()


class AsyncInProcessTransport(httpx2.AsyncBaseTransport):
    """Async transport for ``httpx2.AsyncClient`` used from any other event loop."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        client_loop = asyncio.get_running_loop()
        items: asyncio.Queue[Item] = asyncio.Queue()

        def put(item: Item) -> None:
            client_loop.call_soon_threadsafe(items.put_nowait, item)

        disconnected = asyncio.Event()
        asyncio.run_coroutine_threadsafe(
            _drive(self.app, _scope(request), body, put, disconnected), self.loop
        )
        try:
            first = await asyncio.wait_for(items.get(), _read_timeout(request))
        except TimeoutError:
            self.loop.call_soon_threadsafe(disconnected.set)
            raise httpx2.ReadTimeout("in-process request timed out", request=request) from None
        stream = _AsyncBody(
            items, request, lambda: self.loop.call_soon_threadsafe(disconnected.set)
        )
        return _response(request, first, stream)
