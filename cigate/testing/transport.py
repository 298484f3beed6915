"""In-process transports: run requests through the app on the *server thread's* event loop.

The kernel pool belongs to the loop that started the app, so the app must never run on a second
loop. These transports pre-read the request body, schedule ``ASGITransport`` onto that loop with
``run_coroutine_threadsafe`` and hand back a buffered response. A scripted connection drop or
truncation (``FaultAbort`` after the response started) surfaces as
``httpx2.RemoteProtocolError``, as it would over a socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import httpx2
from starlette.types import ASGIApp, Receive, Scope, Send

from cigate.emulator.faults import FaultAbort


class _Recorder:
    """Wraps the app to remember an exception (ASGITransport may swallow it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exc: BaseException | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            self.exc = exc
            raise


async def _dispatch(app: ASGIApp, request: httpx2.Request, body: bytes) -> httpx2.Response:
    recorder = _Recorder(app)
    transport = httpx2.ASGITransport(app=recorder, raise_app_exceptions=False)
    inner = httpx2.Request(request.method, request.url, headers=request.headers, content=body)
    response = await transport.handle_async_request(inner)
    content = await response.aread()
    if isinstance(recorder.exc, FaultAbort):
        # A scripted drop: over a socket the peer sees the connection cut mid-body.
        raise httpx2.RemoteProtocolError(
            f"peer closed connection without sending complete message body ({recorder.exc})",
            request=request,
        )
    return httpx2.Response(
        response.status_code,
        headers=response.headers.raw,
        stream=httpx2.ByteStream(content),
        request=request,
    )


def _read_timeout(request: httpx2.Request) -> float | None:
    timeout: dict[str, Any] = request.extensions.get("timeout", {})
    value = timeout.get("read")
    return float(value) if value is not None else None


class InProcessTransport(httpx2.BaseTransport):
    """Sync transport for ``httpx2.Client`` (and so for ``openai.OpenAI``)."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        future = asyncio.run_coroutine_threadsafe(_dispatch(self.app, request, body), self.loop)
        try:
            return future.result(_read_timeout(request))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise httpx2.ReadTimeout("in-process request timed out", request=request) from None


class AsyncInProcessTransport(httpx2.AsyncBaseTransport):
    """Async transport for ``httpx2.AsyncClient`` used from any other event loop."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        future = asyncio.run_coroutine_threadsafe(_dispatch(self.app, request, body), self.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), _read_timeout(request))
        except TimeoutError:
            future.cancel()
            raise httpx2.ReadTimeout("in-process request timed out", request=request) from None
