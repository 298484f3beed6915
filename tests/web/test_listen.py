"""Listening sockets: every connection our servers accept has Nagle's algorithm off.

uvicorn is handed ready sockets; asyncio sets ``TCP_NODELAY`` on an accepted connection only
when the listening socket's ``proto`` is ``IPPROTO_TCP``. ``cigate gateway serve`` made its
socket with ``proto`` 0, so its clients' connections kept Nagle's algorithm: a small SSE write
waited for the client's delayed ACK (+20 ms on a sixth of the events of
``bench/passthrough.py``). These tests fail on that code.
"""

from __future__ import annotations

import asyncio
import socket

from starlette.applications import Starlette

from cigate.cli.serving import bind
from cigate.emulator.server import run_in_thread
from cigate.web.listen import tcp_listener


async def _accepted_nodelay(listener: socket.socket) -> int:
    """``TCP_NODELAY`` of a connection accepted on ``listener`` by asyncio, as uvicorn does
    (``loop.create_server(sock=...)``)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[int] = loop.create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = await loop.create_server(Probe, sock=listener)
    try:
        host, port = listener.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(accepted, 5)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_connections_accepted_on_our_listeners_have_nagle_off() -> None:
    # cigate gateway serve and cigate emulator serve listen on bind(); the rest on the helper.
    assert await _accepted_nodelay(bind("127.0.0.1", 0)) != 0
    assert await _accepted_nodelay(tcp_listener("127.0.0.1", 0)) != 0


def test_the_in_thread_servers_listen_on_tcp_sockets() -> None:
    """``run_in_thread`` (the embedded emulator, the test servers): the same listener."""

    handle = run_in_thread(Starlette())
    try:
        listening = [s for server in handle.server.servers for s in server.sockets]
        assert listening
        assert all(s.proto == socket.IPPROTO_TCP for s in listening)
    finally:
        handle.stop()
