"""The one way our servers open a TCP listening socket (CLI servers, the in-thread emulator).

Why a helper: uvicorn is handed ready sockets, and asyncio sets ``TCP_NODELAY`` on the
connections it accepts only when the listening socket's ``proto`` is ``IPPROTO_TCP``. A socket
made as ``socket.socket(family, SOCK_STREAM)`` has ``proto`` 0: its connections kept Nagle's
algorithm, which held a small SSE write back until the client's delayed ACK (about 20 ms for a
sixth of the events in ``bench/passthrough.py``).
"""

from __future__ import annotations

import socket

__all__ = ["tcp_listener"]


def tcp_listener(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``0``: any free port) whose accepted connections get
    ``TCP_NODELAY`` from asyncio; raises ``OSError`` when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
