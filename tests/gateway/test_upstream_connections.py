"""How many upstream connections one gateway process holds, and what a call gets beyond them.

A relayed stream holds its upstream connection for its whole length, so the cap
(``CIGATE_GATEWAY_UPSTREAM_CONNECTIONS``) is the number of streams one process carries at
once. It was a fixed 200 with no bound on the wait for a free one: the 201st stream of an
organisation's peak hung until another ended (``bench/load.py --concurrency 300`` completed
0.58 streams per second for each direct one). Now the cap is a setting (1,000 by default), a
call that finds every connection in use waits ``connect_timeout`` for one and then gets a 503
with ``Retry-After`` in the API's error shape, and ``cigate gateway serve`` raises its
open-files limit so that the cap can be reached.
"""

from __future__ import annotations

import asyncio
import json
import resource
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import httpx2
import pytest
from click.testing import CliRunner

from cigate.cli import main
from cigate.emulator.server import ServerHandle, run_in_thread
from cigate.exceptions import (
    CigateError,
    ConfigurationError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from cigate.gateway.errors import render
from cigate.gateway.metrics import REGISTRY
from cigate.gateway.settings import GatewaySettings
from cigate.harvest.classify import from_http
from tests.gateway.conftest import DEAD_UPSTREAM, on_local_disk
from tests.gateway.harness import GatewayHarness, mock_upstream
from tests.gateway.live import LiveGateway, serving


class HeldUpstream:
    """An upstream whose ``GET /openai/v1/models`` answers only once ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].endswith("/models"):
            self.arrived.set()
            await _wait(self.release)
        await _json(send, {"object": "list", "data": []})


@pytest.fixture
def held() -> Iterator[tuple[HeldUpstream, ServerHandle]]:
    upstream = HeldUpstream()
    handle = run_in_thread(upstream, "127.0.0.1", 0)
    try:
        yield upstream, handle
    finally:
        upstream.release.set()
        handle.stop()


@pytest.fixture
def one_connection(
    held: tuple[HeldUpstream, ServerHandle], tmp_path: Path
) -> Iterator[LiveGateway]:
    """A gateway allowed one upstream connection, which waits half a second for it."""
    settings = on_local_disk(
        tmp_path,
        upstream=held[1].url,
        upstream_key="k",
        upstream_connections=1,
        connect_timeout=0.5,
    )
    with serving(settings) as gateway:
        yield gateway


@pytest.mark.parametrize(
    "refused_path",
    # A plain pass-through, and a call pinned to the upstream that holds what it lists (the
    # tenant's own files): pinned, it lost its Retry-After and blamed the upstream.
    ["/openai/v1/models", "/openai/v1/files"],
    ids=["new-work", "pinned"],
)
def test_a_call_beyond_the_connection_cap_gets_a_503_and_the_held_call_completes(
    held: tuple[HeldUpstream, ServerHandle], one_connection: LiveGateway, refused_path: str
) -> None:
    upstream, _ = held
    failures = _failures_marking_it_down()
    client = one_connection.http()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.get, "/openai/v1/models")
        assert upstream.arrived.wait(10), "the first call never reached the upstream"
        refused = one_connection.http().get(refused_path)
        upstream.release.set()
        assert first.result(10).status_code == 200
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert "upstream connections are in use" in error["message"]
    # The connection is free again: the next call goes through.
    assert client.get("/openai/v1/models").status_code == 200
    # The limit was this process's own: the upstream was never marked down (with several
    # upstreams, new work moves on to the next one all the same).
    assert _failures_marking_it_down() == failures


class SharedUpstream:
    """A Responses upstream where the harvest and a client's call must run at the same time.

    ``POST /responses`` answers at once with a response citing one container file. The
    container's endpoints (the harvest's listing, record and download) answer only once a
    client's ``GET /models`` has arrived, and that call is held until the file was downloaded
    (each wait bounded): with one pool for both, whoever is second waits for the first, which
    waits for them.
    """

    CONTAINER, FILE = "cntr_" + "c" * 24, "cfile_" + "f" * 24
    CONTENT = b"month,profit\n2026-11,42\n"

    def __init__(self) -> None:
        self.models_arrived = threading.Event()
        self.downloaded = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].removeprefix("/openai/v1")
        if path == "/responses":
            while (await receive()).get("more_body"):
                pass
            await _json(send, self.response())
        elif path == "/models":
            self.models_arrived.set()
            await _wait(self.downloaded)
            await _json(send, {"object": "list", "data": []})
        elif path.startswith(f"/containers/{self.CONTAINER}/files"):
            await _wait(self.models_arrived)
            record = _container_file(self.CONTAINER, self.FILE, "profit.csv", self.CONTENT)
            if path.endswith("/files"):
                await _json(send, {"object": "list", "data": [record], "has_more": False})
            elif path.endswith("/content"):
                await _send_body(send, self.CONTENT, b"text/csv")
                self.downloaded.set()
            else:
                await _json(send, record)
        else:
            await _send_body(send, b'{"error":{"message":"not found"}}', status=404)

    def response(self) -> dict[str, Any]:
        return _response_citing("resp_" + "a" * 24, self.CONTAINER, {self.FILE: "profit.csv"})


def _container_file(container_id: str, file_id: str, name: str, content: bytes) -> dict[str, Any]:
    """A container file's record, as the upstream lists and retrieves it."""
    return {
        "id": file_id,
        "object": "container.file",
        "container_id": container_id,
        "path": f"/mnt/data/{name}",
        "bytes": len(content),
        "source": "assistant",
        "created_at": 0,
    }


def _response_citing(response_id: str, container_id: str, names: dict[str, str]) -> dict[str, Any]:
    """A completed response whose answer cites each file of ``names`` (file id -> name)."""
    citations = [
        {
            "type": "container_file_citation",
            "container_id": container_id,
            "file_id": file_id,
            "filename": name,
            "start_index": 0,
            "end_index": 1,
        }
        for file_id, name in names.items()
    ]
    text = {"type": "output_text", "text": "here", "annotations": citations}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": [text]}
    call = {"type": "code_interpreter_call", "id": "ci_1", "container_id": container_id}
    return {
        "id": response_id,
        "object": "response",
        "status": "completed",
        "model": "m",
        "output": [call, message],
    }


async def _wait(event: threading.Event, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def _json(send: Any, body: dict[str, Any]) -> None:
    await _send_body(send, json.dumps(body).encode(), b"application/json")


async def _send_body(
    send: Any, body: bytes, content_type: bytes = b"application/json", status: int = 200
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_the_harvest_and_clients_calls_never_wait_for_each_others_connections(
    tmp_path: Path,
) -> None:
    """The harvest's calls have a pool of their own (``HARVEST_CONNECTIONS``).

    With one pool, a backlog of copies took the connections clients' calls needed (a 503 at
    the cap), and clients' streams the ones copies needed (each try waited and failed). Here
    the client pool has one connection, held by a client's call for as long as the harvest
    runs, and the harvest only gets its answers while that call is held.
    """
    upstream = SharedUpstream()
    handle = run_in_thread(upstream, "127.0.0.1", 0)
    settings = on_local_disk(
        tmp_path,
        upstream=handle.url,
        upstream_key="k",
        upstream_connections=1,
        harvest_connections=1,
        connect_timeout=0.5,
        harvest_attempts=1,
    )
    try:
        with serving(settings) as gateway, ThreadPoolExecutor(1) as pool:
            client = gateway.http()
            made = client.post("/openai/v1/responses", json={"model": "m", "input": "go"})
            assert made.status_code == 200, made.text
            held = pool.submit(client.get, "/openai/v1/models")
            files = gateway.harvested(made.json()["id"], timeout=20)
            assert held.result(20).status_code == 200, held.result().text
            assert [f["state"] for f in files] == ["stored"], files
            content = client.get(f"/files/{files[0]['id']}/content")
            assert content.content == SharedUpstream.CONTENT
    finally:
        upstream.models_arrived.set()
        upstream.downloaded.set()
        handle.stop()


def test_new_work_that_finds_one_upstream_busy_and_the_other_down_gets_the_503(
    held: tuple[HeldUpstream, ServerHandle], tmp_path: Path
) -> None:
    """Two upstreams: ``busy`` has its one connection held, ``gone`` refuses connections.
    New work tried ``busy`` (no free connection), then ``gone`` (down), and answered with the
    last one's 502; trying again in a second is the answer that can succeed."""
    upstream, handle = held
    listed = tmp_path / "upstreams.toml"
    listed.write_text(
        f'[[upstreams]]\nname = "busy"\nurl = "{handle.url}"\nkey = "k"\n\n'
        f'[[upstreams]]\nname = "gone"\nurl = "{DEAD_UPSTREAM}"\nkey = "k"\n'
    )
    settings = on_local_disk(
        tmp_path,
        upstreams_file=str(listed),
        upstream_connections=1,
        connect_timeout=0.5,
    )
    with serving(settings) as gateway, ThreadPoolExecutor(1) as pool:
        client = gateway.http()
        # Round robin may try "gone" first: then it is marked down and sorts last.
        first = pool.submit(client.get, "/openai/v1/models")
        assert upstream.arrived.wait(10), "the first call never reached the upstream"
        refused = [gateway.http().get("/openai/v1/models") for _ in range(2)]
        upstream.release.set()
        assert first.result(10).status_code == 200
    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert "upstream connections are in use" in answer.json()["error"]["message"]


def _failures_marking_it_down() -> float:
    sample = REGISTRY.get_sample_value(
        "cigate_upstream_failures_total", {"upstream": "default", "reason": "unreachable"}
    )
    return sample or 0.0


@pytest.mark.parametrize(
    ("pool", "default"), [("upstream", 1000), ("harvest", 100)], ids=["forwarding", "harvest"]
)
def test_each_cap_is_a_setting_of_at_least_one(
    monkeypatch: pytest.MonkeyPatch, pool: str, default: int
) -> None:
    field = f"{pool}_connections"
    assert getattr(GatewaySettings(upstream=DEAD_UPSTREAM), field) == default
    monkeypatch.setenv(f"CIGATE_GATEWAY_{field.upper()}", "5000")
    assert getattr(GatewaySettings.from_env(upstream=DEAD_UPSTREAM), field) == 5000
    with pytest.raises(ConfigurationError, match=f"{pool} connections"):
        GatewaySettings(upstream=DEAD_UPSTREAM, **{field: 0})  # type: ignore[arg-type]


def test_gateway_serve_raises_its_open_files_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream is two open files (the client's connection and the upstream's): a soft
    limit of 1,024, common on hosts, would refuse connections long before the cap."""
    monkeypatch.setattr("uvicorn.Server.run", lambda server, sockets: [s.close() for s in sockets])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    lowered = min(soft, target // 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        args = ["gateway", "serve", "--upstream", DEAD_UPSTREAM, "--upstream-key", "k"]
        args += ["--database", f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", "--port", "0"]
        result = CliRunner().invoke(main, [*args, "--blobs", str(tmp_path / "b")])
        assert result.exit_code == 0, result.output
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("error", "header"),
    [
        (RateLimitedError("slow down", retry_after=0.4), "1"),
        (UpstreamUnavailableError("busy", status=503, retry_after=2.0), "2"),
        (UpstreamUnavailableError("down"), None),
        # An upstream's finite but absurd wait: a day, not a 301-digit header.
        (from_http(429, b"{}", {"retry-after": "1e300"}, what="list files"), "86400"),
    ],
    ids=["fraction-rounds-up", "any-error-that-carries-one", "none", "upstream-huge-wait"],
)
def test_an_error_answer_says_when_to_try_again_in_whole_seconds(
    error: CigateError, header: str | None
) -> None:
    """Never ``Retry-After: 0`` for a wait under a second (a client would retry at once)."""
    assert render(error).headers.get("retry-after") == header


class OneHeldCall:
    """A Responses upstream citing two container files, whose first container call (a
    listing, a record or a download, whichever the harvest sends first) is answered only
    after ``HOLD`` seconds: with one harvest connection, every other harvest call finds it in
    use until then."""

    HOLD = 3.0
    CONTAINER = "cntr_" + "h" * 24
    FILES: ClassVar[dict[str, bytes]] = {
        "cfile_" + "a" * 24: b"first,file\n1,2\n",
        "cfile_" + "b" * 24: b"second\n3\n",
    }

    def __init__(self) -> None:
        self.held = False
        self.calls = 0
        self.records: set[str] = set()  # files whose record was read (their size checked)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].removeprefix("/openai/v1")
        if path == "/responses":
            while (await receive()).get("more_body"):
                pass
            await _json(send, self.response())
            return
        prefix = f"/containers/{self.CONTAINER}/files"
        if not path.startswith(prefix):
            await _send_body(send, b'{"error":{"message":"not found"}}', status=404)
            return
        self.calls += 1
        if not self.held:
            self.held = True
            await asyncio.sleep(self.HOLD)
        parts = path.removeprefix(prefix).strip("/").split("/")
        if parts == [""]:
            records = [self.record(f) for f in self.FILES]
            await _json(send, {"object": "list", "data": records, "has_more": False})
        elif parts[0] in self.FILES and parts[1:] == ["content"]:
            await _send_body(send, self.FILES[parts[0]], b"text/csv")
        elif parts[0] in self.FILES and len(parts) == 1:
            self.records.add(parts[0])
            await _json(send, self.record(parts[0]))
        else:
            await _send_body(send, b'{"error":{"message":"no such file"}}', status=404)

    def record(self, file_id: str) -> dict[str, Any]:
        return _container_file(self.CONTAINER, file_id, f"{file_id}.csv", self.FILES[file_id])

    def response(self) -> dict[str, Any]:
        names = {file_id: f"{file_id}.csv" for file_id in self.FILES}
        return _response_citing("resp_" + "h" * 24, self.CONTAINER, names)


def test_waiting_for_a_harvest_connection_uses_up_no_try_of_a_copy(tmp_path: Path) -> None:
    """Every harvest connection in use (a slow call holds the only one) is this process's
    own limit: nothing was sent. A copy waits for a connection instead of counting each
    ``PoolTimeout`` as a try of the upstream. It did count them: with two tries a copy, the
    copies behind the held call were marked failed after two waits of 0.3 s and, with no
    background retries left, never stored (a listing storm could do that to any file). The
    file's record, read before the download for its size, gave up after one wait, so the
    size check was skipped."""
    upstream = OneHeldCall()
    handle = run_in_thread(upstream, "127.0.0.1", 0)
    settings = on_local_disk(
        tmp_path,
        upstream=handle.url,
        upstream_key="k",
        harvest_connections=1,
        connect_timeout=0.3,
        harvest_attempts=2,
        harvest_retry_max_tries=0,  # no background round: the copy's own tries decide
    )
    try:
        with serving(settings) as gateway:
            client = gateway.http()
            made = client.post("/openai/v1/responses", json={"model": "m", "input": "go"})
            assert made.status_code == 200, made.text
            files = gateway.harvested(made.json()["id"], at_least=2, timeout=60)
            by_upstream = {f["upstream_file_id"]: f for f in files}
            assert sorted(by_upstream) == sorted(OneHeldCall.FILES)
            for upstream_id, content in OneHeldCall.FILES.items():
                row = by_upstream[upstream_id]
                assert row["state"] == "stored", row
                assert row["tries"] == 0, row  # no failed try: waiting for a connection is none
                assert client.get(f"/files/{row['id']}/content").content == content
    finally:
        handle.stop()
    assert upstream.held  # the harvest did find its one connection in use
    # Each copy read its file's record (the size it checks the bytes against), also the one
    # that waited: a wait for a connection gave up on the record and skipped the check.
    assert upstream.records == set(OneHeldCall.FILES)


def test_a_client_whose_file_is_still_being_copied_gets_a_503_and_the_copy_goes_on(
    tmp_path: Path,
) -> None:
    """A download of a file not stored yet waits for its copy (``ensure_stored``) at most so
    long; a copy that takes longer (a saturated harvest pool now waits instead of failing)
    answered the client with a bare ``TimeoutError``, a 500 "internal error". It is a 503 with
    ``Retry-After`` in the API's shape, the copy goes on, and the file is served once stored."""
    release = threading.Event()
    content = b"slow,file\n"
    container, file_id = "cntr_" + "s" * 24, "cfile_" + "s" * 24

    async def upstream(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/content"):
            await _wait(release, 30)
            return httpx2.Response(200, content=content)
        return httpx2.Response(200, json=_container_file(container, file_id, "s.csv", content))

    async def still_copying(gw: GatewayHarness, tenant_id: str) -> tuple[CigateError, Any]:
        row = await gw.cited_file(tenant_id, "s.csv", container_id=container, file_id=file_id)
        with pytest.raises(UpstreamUnavailableError) as waited:
            await gw.services.harvester.ensure_stored(row, wait=0.2)
        release.set()
        return waited.value, await gw.services.harvester.ensure_stored(row, wait=30)

    settings = on_local_disk(tmp_path, upstream=DEAD_UPSTREAM, upstream_key="k")
    with GatewayHarness(settings) as gw:
        mock_upstream(gw, upstream)
        tenant = gw.add_tenant("acme")
        error, stored = gw.call(still_copying, gw, tenant.id)
        assert stored.state == "stored"
        served = gw.client.get(f"/files/{stored.id}/content", headers=tenant.headers)
        assert served.content == content
    assert "still being copied" in error.message
    answer = render(error)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert json.loads(answer.body)["error"]["code"] == "upstream_unavailable"
