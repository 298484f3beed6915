"""Run an ASGI app under uvicorn in a background thread with its own event loop.

Tests, the demo and benchmarks need a *real* server (sockets, truncation, drops) while the
calling thread stays free. The loop that runs the server owns the kernel pool; callers that want
to run the app in-process must schedule onto ``handle.loop`` (``cigate.testing.transport``), never
on a second loop.

With ``ssl_certfile``/``ssl_keyfile`` the same app, on the same loop, also listens for HTTPS on
a second port: the Azure SDKs (which send tokens over TLS only) and the
in-process clients then see one emulator and one kernel pool. Only the first server runs the
app's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from cigate.emulator.faults import FaultAbort
from cigate.web.http_protocol import SERVER_PROTOCOLS
from cigate.web.listen import tcp_listener


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
    #: The HTTPS listener's port, when started with a certificate.
    tls_port: int | None = None
    tls_server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:PORT`` of the TLS listener (started with ``tls=``)."""
        if self.tls_port is None:
            raise RuntimeError("this server was started without a certificate")
        return f"https://{self.host}:{self.tls_port}"

    def _servers(self) -> list[uvicorn.Server]:
        return [s for s in (self.tls_server, self.server) if s is not None]

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit (runs the app's shutdown) and wait for the thread."""
        for server in self._servers():
            server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            for server in self._servers():
                server.force_exit = True
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
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
    loop: str = "asyncio",
) -> ServerHandle:
    """Start uvicorn serving ``app`` on ``host:port`` (0 = a free port); return once it listens.

    With a certificate and key (PEM), also serve HTTPS on another free port (``tls_port``).
    ``loop`` is uvicorn's name of the event loop to run on: a gateway is served on its own
    (:data:`cigate.gateway.app.SERVER_LOOP`), as ``cigate gateway serve`` serves it.
    """
    logging.getLogger("uvicorn.error").addFilter(_FILTER)
    sock = tcp_listener(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **SERVER_PROTOCOLS,
        loop=loop,
    )
    server = uvicorn.Server(config)
    servers = [(server, sock)]
    tls_server: uvicorn.Server | None = None
    if ssl_certfile is not None and ssl_keyfile is not None:
        tls_config = uvicorn.Config(
            app,
            log_level=log_level,
            lifespan="off",
            # An idle keep-alive TLS connection the client never closed holds the shutdown for
            # the whole grace period (its close waits for the peer's close_notify): 1 s, not 5.
            timeout_graceful_shutdown=1,
            **SERVER_PROTOCOLS,
            ssl_certfile=str(ssl_certfile),
            ssl_keyfile=str(ssl_keyfile),
        )
        tls_server = uvicorn.Server(tls_config)
        servers.append((tls_server, tcp_listener(host, 0)))
    tls_port = servers[1][1].getsockname()[1] if tls_server is not None else None
    new_loop = config.get_loop_factory()
    event_loop = new_loop() if new_loop is not None else asyncio.new_event_loop()
    failure: list[BaseException] = []

    async def serve_one(one: uvicorn.Server, listening: socket.socket) -> None:
        try:
            await one.serve(sockets=[listening])
        except SystemExit as exc:  # uvicorn's way to fail a start-up; not for a task to raise
            raise RuntimeError(f"uvicorn exited with status {exc.code}") from None
        finally:
            for other, _ in servers:  # one listener down (or failed): the others follow
                other.should_exit = True
            # A connection a client never closed outlives the graceful shutdown; over TLS its
            # close would wait 30 s for the client's close_notify, after this loop is gone.
            for connection in list(one.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
            await asyncio.sleep(0)

    async def serve_all() -> None:
        await asyncio.gather(*(serve_one(s, k) for s, k in servers))

    def run() -> None:
        asyncio.set_event_loop(event_loop)
        try:
            event_loop.run_until_complete(serve_all())
        except BaseException as exc:  # reported to the starting thread
            failure.append(exc)
        finally:
            for _, listening in servers:
                listening.close()
            event_loop.run_until_complete(event_loop.shutdown_asyncgens())
            event_loop.close()

    thread = threading.Thread(target=run, name=f"uvicorn-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not all(s.started for s, _ in servers):
        if not thread.is_alive() or time.monotonic() > deadline:
            for s, _ in servers:
                s.should_exit = True
            thread.join(5)
            cause = failure[0] if failure else None
            raise RuntimeError(
                f"the server on {host}:{bound_port} did not start (see the log above)"
            ) from cause
        time.sleep(0.01)
    return ServerHandle(
        app=app,
        host=host,
        port=bound_port,
        loop=event_loop,
        server=server,
        thread=thread,
        tls_port=tls_port,
        tls_server=tls_server,
    )
