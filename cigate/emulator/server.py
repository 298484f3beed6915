"""Run an ASGI app under uvicorn in a background thread with its own event loop.

Tests, the demo and benchmarks need a *real* server (sockets, truncation, drops) while the
calling thread stays free. The loop that runs the server owns the kernel pool; callers that want
to run the app in-process must schedule onto ``handle.loop`` (``cigate.testing.transport``), never
on a second loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from cigate.emulator.faults import FaultAbort


class _QuietFaultAborts(logging.Filter):
    """Scripted connection drops are not server errors: keep them out of the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, FaultAbort)


_FILTER = _QuietFaultAborts()


@dataclass
class ServerHandle:
    """A running server: its base ``url``, its ``loop``, and ``stop()``."""

    app: ASGIApp
    host: str
    port: int
    loop: asyncio.AbstractEventLoop
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit (runs the app's shutdown) and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 60.0,
    log_level: str = "warning",
) -> ServerHandle:
    """Start uvicorn serving ``app`` on ``host:port`` (0 = a free port); return once it listens."""
    logging.getLogger("uvicorn.error").addFilter(_FILTER)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and
    # without it every reply waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
        ws="none",
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the starting thread
            failure.append(exc)
        finally:
            sock.close()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=f"uvicorn-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            cause = failure[0] if failure else None
            raise RuntimeError(
                f"the server on {host}:{bound_port} did not start (see the log above)"
            ) from cause
        time.sleep(0.01)
    return ServerHandle(
        app=app, host=host, port=bound_port, loop=loop, server=server, thread=thread
    )
