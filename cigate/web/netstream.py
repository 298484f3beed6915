"""An asyncio network backend for httpcore2: the gateway's upstream connections.

Why: httpcore2 reaches asyncio through anyio, and every read of a relayed stream then opens a
cancel scope for its timeout, looks up the running library and task, and registers and
unregisters the socket with the loop (anyio resumes and pauses reading around each receive).
At 10,000 stream chunks a second that was a fifth of the gateway's CPU (py-spy during
``bench/load.py``). Here a connection is an :class:`asyncio.Protocol` that keeps reading into
a buffer (paused only when the buffer is full) and a read waits on one future with a plain
loop timer. Errors map to httpcore2's exceptions exactly as its anyio backend maps them, so
httpx2 raises what it always raised.

:func:`use_asyncio_network` puts the backend under an ``httpx2.AsyncClient``'s own transport;
a client with an environment proxy keeps its proxy transports (anyio) for those URLs.
"""

# ruff: noqa: ASYNC109 - httpcore2's backend interface passes each timeout as an argument.
from __future__ import annotations

import asyncio
import select
import ssl
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import httpcore2
import httpx2
from httpcore2 import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    WriteError,
    WriteTimeout,
)

__all__ = ["AsyncioBackend", "use_asyncio_network"]

#: Bytes buffered unread before the socket is no longer read (TCP then slows the sender).
_HIGH_WATER = 256 * 1024

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _Connection(asyncio.Protocol):
    """What arrived on one connection, and who waits for more."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        #: The waiting read's deadline (loop time), and the one timer that enforces deadlines.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: The socket registered once for a no-wait ``poll`` (see :meth:`unread_in_kernel`).
        self._poller: select.poll | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.fileno() >= 0:
            self._poller = select.poll()
            self._poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def unread_in_kernel(self) -> bool:
        """Bytes, an end or an error waiting in the kernel for this connection (no wait).

        httpcore2 asks every idle pooled connection each time it hands out one, so at 200
        streams this ran ~1.6 times per relayed event: the socket is registered once per
        connection and each check is one ``poll`` system call. A closing transport (its
        descriptor may be closed, its number reused) or one without a socket counts as
        readable: not reusable."""
        if self._poller is None or self.transport is None or self.transport.is_closing():
            return True
        return bool(self._poller.poll(0))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def readable(self, timeout: float | None) -> None:
        """Wait until there are bytes or the end (``TimeoutError`` after ``timeout``).

        A relayed stream waits once per event, each time with the same long timeout. Rather
        than a timer per wait (``asyncio.timeout``: a heap entry made and cancelled, a cancel
        scope; a tenth of the relay's CPU at 10,000 events/s), each wait sets a deadline and
        one timer, armed only when none would fire by then, checks it when it fires.
        """
        loop = asyncio.get_running_loop()
        self._reader = loop.create_future()
        if timeout is not None:
            self._deadline = loop.time() + timeout
            if self._timer is None or self._timer.when() > self._deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(self._deadline, self._check_deadline)
        try:
            await self._reader
        finally:
            self._reader = None
            self._deadline = None

    def _check_deadline(self) -> None:
        """The timer fired: time out the waiting read if its deadline has passed, else wait
        on for it (the read that armed the timer is over; a later one may wait)."""
        self._timer = None
        if self._reader is None or self._deadline is None or self._reader.done():
            return  # no read waits: the next one arms a timer
        loop = self._reader.get_loop()
        if loop.time() >= self._deadline:
            self._reader.set_exception(TimeoutError())
        else:
            self._timer = loop.call_at(self._deadline, self._check_deadline)

    async def drained(self, timeout: float | None) -> None:
        if self._drain is None:
            return
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._drain)


class AsyncioStream(httpcore2.AsyncNetworkStream):
    """One TCP (or TLS) connection, read and written straight on the running loop."""

    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._conn = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        conn = self._conn
        if not conn.buffer and not conn.eof:
            try:
                await conn.readable(timeout)
            except TimeoutError as exc:
                raise ReadTimeout(exc) from exc
        if conn.buffer:
            data = bytes(conn.buffer[:max_bytes])
            del conn.buffer[:max_bytes]
            if conn.paused and len(conn.buffer) <= _HIGH_WATER // 4:
                conn.paused = False
                self._transport.resume_reading()
            return data
        if conn.error is not None:
            raise ReadError(conn.error) from conn.error
        return b""  # the end of the stream

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing() or self._conn.error is not None:
            raise WriteError(self._conn.error or ConnectionResetError("the connection is closed"))
        try:
            self._transport.write(buffer)
            await self._conn.drained(timeout)
        except TimeoutError as exc:
            raise WriteTimeout(exc) from exc
        except (OSError, RuntimeError) as exc:
            raise WriteError(exc) from exc

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._conn, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise ConnectTimeout(exc) from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise ConnectError(exc) from exc
        if transport is None:  # the connection was closed during the handshake
            raise ConnectError(ConnectionResetError("the connection closed during TLS set-up"))
        self._conn.transport = transport
        return AsyncioStream(transport, self._conn)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle keep-alive connection is readable when the server closed it or sent
            # something unasked. The protocol may have seen it already; or it waits in the
            # socket while the loop has not run the read callback yet: a request sent now would
            # take those bytes for its answer (httpcore2 then drops the connection instead).
            return self._conn.eof or bool(self._conn.buffer) or self._conn.unread_in_kernel()
        return None


async def _connect(
    timeout: float | None, connecting: Awaitable[tuple[asyncio.BaseTransport, _Connection]]
) -> tuple[asyncio.Transport, _Connection]:
    """A new connection within ``timeout``, its failures as httpcore2's."""
    try:
        async with asyncio.timeout(timeout):
            transport, conn = await connecting
    except TimeoutError as exc:
        raise ConnectTimeout(exc) from exc
    except OSError as exc:
        raise ConnectError(exc) from exc
    return cast(asyncio.Transport, transport), conn


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """TCP connections as :class:`AsyncioStream` (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        transport, conn = await _connect(
            timeout,
            asyncio.get_running_loop().create_connection(_Connection, host, port, local_addr=local),
        )
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, conn)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        transport, conn = await _connect(timeout, loop.create_unix_connection(_Connection, path))
        return AsyncioStream(transport, conn)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def use_asyncio_network(client: httpx2.AsyncClient) -> bool:
    """Put the asyncio backend under ``client``'s own connection pool before its first
    request; returns whether it could (a client built on a custom transport keeps it)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if not isinstance(pool, httpcore2.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        return False
    # httpx2's transport takes no network backend; its pool keeps the one it connects with
    # here (a test fails should a new httpx2 or httpcore2 move it).
    pool._network_backend = AsyncioBackend()
    return True
