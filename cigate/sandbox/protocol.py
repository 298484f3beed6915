"""The wire between the manager and a sandboxed kernel: length-prefixed JSON frames.

One ``SOCK_STREAM`` socket pair per kernel carries execute requests to the kernel and, back,
messages shaped like Jupyter's IOPub (``{"msg_type", "parent", "content"}``), so the manager
turns them into an ``ExecutionResult`` with the one :class:`~cigate.sandbox.output.Collector`.
The kernel side runs model-written code, which can write anything to its end: the manager
reads every frame as hostile input (bounded size, strict JSON object, known types only) and a
frame that breaks the rules ends the kernel, never the manager.

The small control messages to the template (spawn requests) and to a container's init
(``go``, ``interrupt``, exit status) travel as single ``SOCK_SEQPACKET`` datagrams, with
descriptors attached where needed (:func:`send_packet`, :func:`recv_packet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from typing import Any

#: A frame larger than this is a protocol violation (an image is base64 in JSON).
MAX_FRAME = 16 << 20
#: A control datagram larger than this is a protocol violation.
MAX_PACKET = 64 << 10
#: Descriptors a control datagram may carry.
MAX_FDS = 4
_HEADER = struct.Struct("!I")


class ProtocolError(Exception):
    """The other side broke the framing rules (or went away mid-frame)."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """Blocking read of one frame (kernel side); ``None`` at a clean end of stream."""
    header = _recv_exactly(sock, _HEADER.size, allow_eof=True)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = _recv_exactly(sock, size, allow_eof=False)
    assert body is not None
    return decode(body)


def _recv_exactly(sock: socket.socket, size: int, *, allow_eof: bool) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            if allow_eof and not chunks:
                return None
            raise ProtocolError("connection closed mid-frame")
        chunks += chunk
    return bytes(chunks)


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """One frame from the kernel (manager side); ``None`` when the kernel closed its end."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed mid-frame") from None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed mid-frame") from None
    return decode(body)


# -- control datagrams ---------------------------------------------------------------------


def send_packet(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_PACKET:
        raise ProtocolError("control message too large")
    if fds:
        socket.send_fds(sock, [body], fds)
    else:
        sock.send(body)


def recv_packet(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One datagram and its descriptors; ``(None, [])`` when the peer is gone."""
    body, fds, flags, _ = socket.recv_fds(sock, MAX_PACKET, MAX_FDS)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        _close_all(fds)
        raise ProtocolError("control message truncated")
    if not body:
        _close_all(fds)
        return None, []
    try:
        return decode(body), fds
    except ProtocolError:
        _close_all(fds)
        raise


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


async def recv_packet_async(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """:func:`recv_packet` on a non-blocking socket without blocking the event loop."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return recv_packet(sock)
        except BlockingIOError:
            pass
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), _set_once, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
