"""A stream that ends early: the client sees the break, and no file of the response is lost.

The upstream keeps running a response whose stream broke off (or whose client left): its code
writes its files afterwards. The gateway must neither pass the break off as a clean end nor
list the container at once and call the response done; it reads the response upstream until it
is over, then records every file. Also: a relayed body cut off is never passed off as whole,
and a request on a dead pooled connection is sent again when that is safe.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import on_local_disk
from tests.gateway.harness import GatewayHarness
from tests.gateway.live import CODE_TOOL, LiveGateway, code_input

WRITE_LATE = """
import time
time.sleep(1.5)  # the stream is cut (or left) long before the files exist
for i in range(3):
    open(f'/mnt/data/late{i}.bin', 'wb').write(bytes([i]) * (1000 + i))
"""
EXPECTED = {f"late{i}.bin": bytes([i]) * (1000 + i) for i in range(3)}
#: Past ``response.created`` and the first events, long before ``response.completed``.
CUT_AFTER = 2500


def _events_until_broken(stream: openai.Stream) -> tuple[list, BaseException | None]:
    events, error = [], None
    try:
        for event in stream:
            events.append(event)
    except (httpx2.TransportError, openai.APIError) as exc:
        error = exc
    return events, error


@pytest.mark.storage
@pytest.mark.sandbox
@pytest.mark.parametrize("end", ["upstream-breaks", "client-leaves"])
def test_a_stream_ended_early_keeps_every_file_of_the_response(
    live_gateway: LiveGateway, emulator: RunningEmulator, end: str
) -> None:
    if end == "upstream-breaks":
        emulator.control.add_fault(
            path="**/responses", method="POST", truncate_after_bytes=CUT_AFTER, count=1
        )
    stream = live_gateway.openai().responses.create(
        model="gpt-4.1", input=code_input(WRITE_LATE), tools=CODE_TOOL, stream=True
    )
    if end == "upstream-breaks":
        events, error = _events_until_broken(stream)
        assert error is not None, "the broken stream ended cleanly"
        assert all(e.type != "response.completed" for e in events)
    else:
        events = [next(iter(stream))]
        stream.close()
    response_id = events[0].response.id
    files = live_gateway.harvested(response_id, at_least=len(EXPECTED))
    assert {f["filename"]: f["state"] for f in files} == dict.fromkeys(EXPECTED, "stored")
    http = live_gateway.http()
    for f in files:
        assert http.get(f"/files/{f['id']}/content").content == EXPECTED[f["filename"]]


@pytest.mark.storage
def test_a_relayed_download_cut_off_upstream_is_never_passed_off_as_whole(
    live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    """A container file not harvested (an upload) is relayed from the live container; the
    upstream drops the connection half-way: the client must see an error, not a short 200."""
    sdk = live_gateway.openai()
    container = sdk.containers.create(name="c").id
    data = bytes(range(256)) * 4000
    uploaded = sdk.containers.files.create(container, file=("up.bin", data)).id
    emulator.control.add_fault(
        path="**/containers/*/files/*/content", method="GET", truncate_after_bytes=100_000
    )
    http = live_gateway.http()
    with pytest.raises(httpx2.TransportError):  # never a 200 with a short body
        http.get(f"/openai/v1/containers/{container}/files/{uploaded}/content")


def test_the_response_is_recorded_before_the_client_sees_its_first_byte(
    sqlite_live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    """The store is kept busy (another connection holds its write lock) while the response
    starts: the first event must wait for the response's row, not overtake it."""
    database = sqlite_live_gateway.settings.database_url.split(":///", 1)[1]
    seen: dict[str, object] = {}

    def client() -> None:
        body = {"model": "gpt-4.1", "input": "hello", "stream": True}
        with (
            sqlite_live_gateway.http() as http,
            http.stream("POST", "/openai/v1/responses", json=body) as stream,
        ):
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    rid = json.loads(line[6:])["response"]["id"]
                    with sqlite3.connect(database) as db:
                        row = db.execute(
                            "SELECT 1 FROM responses WHERE response_id = ?", (rid,)
                        ).fetchone()
                    seen["recorded"] = row is not None
                    break

    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the write lock: the gateway's writes wait for it
    reader = threading.Thread(target=client)
    reader.start()
    time.sleep(1.0)  # the stream has started meanwhile (the response runs upstream)
    lock.execute("ROLLBACK")
    lock.close()
    reader.join(60)
    assert seen == {"recorded": True}


class DropsReusedConnections:
    """An upstream that answers each connection's first request, then closes the connection
    without an answer when a second request arrives on it (a keep-alive connection it had
    given up on): the race every pooled client meets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            for n in range(2):
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                self.requests.append(head.split(b" ", 2)[1].decode())
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += conn.recv(65536)
                if n == 1:
                    return  # the second request on this connection: closed, no answer
                payload = b'{"object":"list","data":[]}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
                )

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def dropping() -> Iterator[DropsReusedConnections]:
    server = DropsReusedConnections()
    yield server
    server.close()


def test_an_idempotent_request_on_a_dead_pooled_connection_is_sent_again_once(
    dropping: DropsReusedConnections, tmp_path: Path
) -> None:
    settings = on_local_disk(
        tmp_path,
        upstream=dropping.url,
        upstream_auth="none",
        resume_interval=3600,
    )
    with GatewayHarness(settings) as gw:
        tenant = gw.add_tenant("a")
        answers = [
            gw.client.get("/openai/v1/models", headers=tenant.headers).status_code
            for _ in range(10)
        ]
        posted = gw.client.post("/openai/v1/embeddings", json={}, headers=tenant.headers)
        again = gw.client.post("/openai/v1/embeddings", json={}, headers=tenant.headers)
    assert answers == [200] * 10
    # Every second GET met a dead connection and went out again on a new one.
    assert dropping.requests.count("/openai/v1/models") == 1 + 2 * 9
    # A POST is never sent twice: it may have reached the upstream.
    assert sorted([posted.status_code, again.status_code]) == [200, 502]
    assert dropping.requests.count("/openai/v1/embeddings") == 2
