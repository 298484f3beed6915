"""The asyncio network backend under httpx2: the same answers and errors as anyio's, over
real loopback sockets (plain and TLS), with a slow reader, a hung server and a server that
hangs up mid-body; and the gateway's upstream client really uses it."""

from __future__ import annotations

import asyncio
import hashlib
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import Upstream
from cigate.web.netstream import AsyncioBackend, use_asyncio_network
from cigate.web.tls import make_local_tls

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BIG = hashlib.sha256(b"x").digest() * 200_000  # 6.4 MB: many pauses of the read buffer


@asynccontextmanager
async def server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A loopback server running ``handler`` per connection; every connection it accepted is
    aborted when the block ends."""
    tasks: set[asyncio.Task[None]] = set()
    transports: list[asyncio.BaseTransport] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        transports.append(writer.transport)
        if tls is not None:  # the handshake here, so a refused one is closed here too
            try:
                await writer.start_tls(tls)
            except (ssl.SSLError, OSError):
                return
            transports.append(writer.transport)
        await handler(reader, writer)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for transport in transports:
            transport.abort()  # type: ignore[attr-defined]
        await srv.wait_closed()


async def _head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answer(body: bytes, *, chunked: bool = False, stop_after: int | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if chunked:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 65536):
                    part = body[i : i + 65536]
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
                writer.write(head + body[:stop_after])
                if stop_after is not None:
                    await writer.drain()
                    writer.close()
                    return
            await writer.drain()

    return handle


def client(**kw: object) -> httpx2.AsyncClient:
    c = httpx2.AsyncClient(trust_env=False, **kw)  # type: ignore[arg-type]
    assert use_asyncio_network(c)
    return c


async def test_bodies_arrive_whole_plain_and_chunked_also_to_a_slow_reader() -> None:
    async with server(answer(BIG)) as port, client() as http:
        r = await http.get(f"http://127.0.0.1:{port}/")
        assert r.content == BIG
        got = bytearray()
        async with http.stream("GET", f"http://127.0.0.1:{port}/again") as r:
            async for chunk in r.aiter_raw():
                got += chunk
                await asyncio.sleep(0.001)  # the buffer fills: reading pauses, then resumes
        assert bytes(got) == BIG
    async with server(answer(BIG, chunked=True)) as port, client() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/")).content == BIG


async def test_keep_alive_connections_are_reused_and_a_closed_one_is_replaced() -> None:
    peers: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # idle in the pool now, closed by the server

    async with server(handle) as port, client() as http:
        for _ in range(4):
            assert (await http.get(f"http://127.0.0.1:{port}/")).text == "ok"
            await asyncio.sleep(0.05)
    assert len(peers) == 2  # two requests per connection, then a fresh one


async def test_bytes_waiting_in_the_socket_make_an_idle_connection_unusable() -> None:
    """httpcore2 asks ``is_readable`` before it reuses an idle connection. Bytes the server
    sent unasked may still be in the kernel, not yet handed to the protocol by the loop: a
    request sent then would read them as its answer. Before, only the protocol's buffer was
    looked at, so such a connection counted as clean."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        peer, _ = listener.accept()
        with peer:
            assert stream.get_extra_info("is_readable") is False  # idle and clean
            peer.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray")
            time.sleep(0.05)  # blocks the loop: the bytes wait in the kernel, unread
            assert stream.get_extra_info("is_readable") is True
            await asyncio.sleep(0.05)  # the loop reads them into the protocol's buffer
            assert stream.get_extra_info("is_readable") is True
        await stream.aclose()
        assert stream.get_extra_info("is_readable") is True  # closed: never reused


async def test_an_idle_connection_is_checked_without_registering_its_socket_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpcore2 asks every idle pooled connection each time it hands one out (~1.6 checks
    per relayed event at 200 streams). The socket is registered for ``poll`` once, when the
    connection is made; before, each check made and filled a poller of its own."""
    made: list[object] = []
    real_poll = select.poll

    def counting_poll() -> Any:
        made.append(None)
        return real_poll()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setattr(select, "poll", counting_poll)
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        peer, _ = listener.accept()
        with peer:
            checks = [stream.get_extra_info("is_readable") for _ in range(100)]
            assert checks == [False] * 100
            peer.sendall(b"x")
            time.sleep(0.05)  # in the kernel, not read by the loop yet
            assert stream.get_extra_info("is_readable") is True
        await stream.aclose()
    assert len(made) == 1


async def test_a_server_that_hangs_up_mid_body_is_an_error_not_a_short_body() -> None:
    async with server(answer(BIG, stop_after=1000)) as port, client() as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_timeouts_and_refusals_raise_what_httpx2_always_raised() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with server(silent) as port, client(timeout=httpx2.Timeout(0.2)) as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(f"http://127.0.0.1:{port}/")
    async with server(silent) as port:
        pass  # closed: nothing listens there now
    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def read_all(http: httpx2.AsyncClient, url: str) -> bytes:
    async with http.stream("GET", url) as r:
        return b"".join([chunk async for chunk in r.aiter_raw()])


def paced(events: int, gap: float, then_silent: bool = False) -> Handler:
    """An SSE-like chunked answer: ``events`` small chunks ``gap`` seconds apart; then the
    end, or (``then_silent``) nothing more."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(events):
            part = b"data: %d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(gap)
        if then_silent:
            await asyncio.sleep(30)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return handle


async def test_the_read_timeout_is_per_wait_and_one_timer_serves_many_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream whose chunks come 0.05 s apart for 1.2 s outlives a 0.5 s read timeout (each
    wait has its own deadline) without a timer per wait; a stream that stalls times out."""
    loop = asyncio.get_running_loop()
    armed: list[str] = []  # the timers armed, but the server's sleeps (same loop)
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: object, **kw: object) -> Any:
        if getattr(callback, "__name__", "") != "_set_result_unless_cancelled":
            armed.append(getattr(callback, "__qualname__", repr(callback)))
        return call_at(when, callback, *args, **kw)  # type: ignore[arg-type]

    async with (
        server(paced(24, 0.05)) as port,
        client(timeout=httpx2.Timeout(0.5)) as http,
        http.stream("GET", f"http://127.0.0.1:{port}/") as r,
    ):
        monkeypatch.setattr(loop, "call_at", counting_call_at)
        got = [chunk async for chunk in r.aiter_raw()]
        monkeypatch.undo()
    assert b"".join(got) == b"".join(b"data: %d\n\n" % i for i in range(24))
    # 25 waits of up to 0.05 s; the 0.5 s timer fired early about twice and was re-armed.
    assert len(armed) <= 8, armed
    began = time.monotonic()
    async with (
        server(paced(3, 0.05, then_silent=True)) as port,
        client(timeout=httpx2.Timeout(0.5)) as http,
    ):
        with pytest.raises(httpx2.ReadTimeout):
            await read_all(http, f"http://127.0.0.1:{port}/")
    assert time.monotonic() - began < 5


async def test_tls_with_the_local_ca_and_a_refusal_of_an_unknown_one(tmp_path: Path) -> None:
    tls = make_local_tls(tmp_path / "tls")
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tls.certfile, tls.keyfile)
    async with server(answer(BIG), tls=server_side) as port:
        async with client(verify=tls.client_context()) as http:
            r = await http.get(f"https://127.0.0.1:{port}/")
            assert r.content == BIG
            assert r.extensions["network_stream"].get_extra_info("ssl_object") is not None
        async with client(verify=ssl.create_default_context()) as http:
            with pytest.raises(httpx2.ConnectError):
                await http.get(f"https://127.0.0.1:{port}/")


async def test_the_gateway_upstream_clients_connect_with_the_asyncio_backend() -> None:
    """Both pools (clients' calls, the harvest's); fails should httpx2 or httpcore2 stop
    keeping the pool's backend where we set it."""
    settings = GatewaySettings(upstream="http://127.0.0.1:9", upstream_key="k")
    upstream = Upstream(settings)
    try:
        assert upstream.client is not upstream.harvest.client
        for pooled in (upstream.client, upstream.harvest.client):
            pool = pooled._transport._pool  # type: ignore[attr-defined]
            assert isinstance(pool._network_backend, AsyncioBackend)
    finally:
        await upstream.aclose()
    custom = httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: httpx2.Response(200)))
    assert not use_asyncio_network(custom)


async def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    """The name checked is the URL's host: a certificate the local CA signed for
    ``localhost`` only does not pass for ``127.0.0.1``."""
    tls = make_local_tls(tmp_path / "tls", hosts=("localhost",))
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tls.certfile, tls.keyfile)
    async with (
        server(answer(b"secret"), tls=server_side) as port,
        client(verify=tls.client_context()) as http,
    ):
        with pytest.raises(httpx2.ConnectError, match=r"(?i)hostname|match"):
            await http.get(f"https://127.0.0.1:{port}/")
        assert (await http.get(f"https://localhost:{port}/")).content == b"secret"
