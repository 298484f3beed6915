"""Proxy edge cases against a scripted upstream (httpx2.MockTransport): transport failures
while reading a plain body, a client that leaves before an SSE body starts, oversized bodies,
and malformed link signatures."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cigate.engine.events import encode_sse
from cigate.gateway.settings import GatewaySettings
from tests.gateway.conftest import on_local_disk
from tests.gateway.harness import GatewayHarness, Tenant, mock_upstream


class _Body(httpx2.AsyncByteStream):
    """An upstream body that yields ``chunks`` then raises ``error`` (if any)."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


def _settings(tmp_path: Path, **extra: Any) -> GatewaySettings:
    return on_local_disk(
        tmp_path,
        upstream="http://127.0.0.1:9",
        upstream_auth="none",
        link_secret="s" * 32,
        **extra,
    )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[GatewayHarness]:
    with GatewayHarness(_settings(tmp_path)) as gw:
        yield gw


@pytest.mark.parametrize(
    ("error", "status"),
    [(httpx2.ReadTimeout("slow"), 504), (httpx2.RemoteProtocolError("cut"), 502)],
)
def test_plain_body_broken_off_upstream_is_502_or_504(
    harness: GatewayHarness, error: Exception, status: int
) -> None:
    tenant = harness.add_tenant("a")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, stream=_Body([b'{"id"'], error)
        )

    mock_upstream(harness, handler)
    answer = harness.client.post(
        "/openai/v1/responses", json={"model": "m", "input": "hi"}, headers=tenant.headers
    )
    assert answer.status_code == status
    assert answer.json()["error"]["type"] == "server_error"


def test_sse_upstream_closed_when_client_leaves_before_the_body(harness: GatewayHarness) -> None:
    tenant: Tenant = harness.add_tenant("a")
    body = _Body([b"event: response.created\ndata: {}\n\n"])

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    mock_upstream(harness, handler)

    async def run() -> None:
        messages = [
            {"type": "http.request", "body": b'{"model":"m","stream":true}', "more_body": False}
        ]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(0.2)  # the disconnect is noticed first

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/openai/v1/responses",
            "raw_path": b"/openai/v1/responses",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", f"Bearer {tenant.key}".encode()),
                (b"content-type", b"application/json"),
                (b"host", b"testserver"),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "app": harness.app,
            "state": dict(harness.client.app_state),
        }
        await harness.app(scope, receive, send)

    harness.call(run)
    assert body.closed


@pytest.mark.parametrize("path", ["/openai/v1/responses", "/openai/v1/threads/runs"])
def test_oversized_json_body_is_refused_before_buffering(tmp_path: Path, path: str) -> None:
    seen: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(1)
        return httpx2.Response(200, json={"id": "resp_1", "output": []})

    with GatewayHarness(_settings(tmp_path, max_json_body=1024)) as gw:
        tenant = gw.add_tenant("a")
        mock_upstream(gw, handler)
        big = {"model": "m", "input": "x" * 4096}
        small = gw.client.post(path, json={"model": "m"}, headers=tenant.headers)
        answer = gw.client.post(path, json=big, headers=tenant.headers)
    assert small.status_code == 200
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert len(seen) == 1


@pytest.mark.parametrize("signature", ["\u00e9" * 64, "%FF", "x"])
def test_link_with_malformed_signature_is_403(harness: GatewayHarness, signature: str) -> None:
    tenant = harness.add_tenant("a")
    row = harness.put_file(tenant, b"data", filename="a.txt")
    made = harness.client.post(f"/files/{row.id}/links", headers=tenant.headers).json()
    link_id = made["id"]
    answer = harness.client.get(
        f"/links/{link_id}", params={"expires": made["expires_at"], "signature": signature}
    )
    assert answer.status_code == 403


async def _asgi(gw: GatewayHarness, method: str, path: str, tenant: Tenant) -> int:
    """One request with ``path`` exactly as given (an HTTP client would normalise it)."""
    status: list[int] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays until the answer is sent
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {tenant.key}".encode()),
            (b"host", b"testserver"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "app": gw.app,
        "state": dict(gw.client.app_state),
    }
    await gw.app(scope, receive, send)
    return status[0]


@pytest.mark.parametrize(
    "template",
    [
        "/openai/v1/containers/{mine}/../{theirs}/files",
        "/v1/containers/{mine}/%2e%2e/{theirs}/files/cfile_1/content",
        "/openai/v1/responses/{response}/../../containers/{theirs}/files",
        "/openai/v1/models/../containers/{theirs}/files",
        "/openai/containers/{mine}/./../{theirs}",
    ],
)
def test_dot_segments_never_reach_another_tenants_upstream_object(
    harness: GatewayHarness, template: str
) -> None:
    """The upstream client removes ``..`` segments (RFC 3986), so a path the gateway checked as
    the caller's own could otherwise land on another tenant's container."""
    a, b = harness.add_tenant("a"), harness.add_tenant("b")
    mine = harness.put_file(a, b"a", "a.txt", response_id="resp_a").container_id
    theirs = harness.put_file(b, b"b", "b.txt").container_id
    reached: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        reached.append(request.url.path)
        return httpx2.Response(200, json={"object": "list", "data": []})

    mock_upstream(harness, handler)
    path = template.format(mine=mine, theirs=theirs, response="resp_a")
    status = harness.call(_asgi, harness, "GET", path, a)
    assert status == 404
    assert not [p for p in reached if str(theirs) in p]


def test_on_demand_retry_never_unstores_a_file_another_process_stored(
    harness: GatewayHarness,
) -> None:
    """A download that read the row as ``failed`` retries it; if another process stored it in
    the meantime, the requeue must leave it ``stored`` (a copy from an expired container would
    otherwise turn it ``failed`` for good)."""
    tenant = harness.add_tenant("a")
    row = harness.put_file(tenant, b"bytes", "a.txt")
    meta = harness.services.meta
    after = harness.call(meta.requeue, row.id)
    assert after.state == "stored"
    assert after.sha256 == row.sha256


def test_a_copy_shorter_than_the_container_record_is_never_stored(tmp_path: Path) -> None:
    """Without ``content-length`` a body cut short at a connection close looks complete; the
    container's own record of the size is the check (listed files and cited files alike)."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/content"):
            return httpx2.Response(200, stream=_Body([b"short"]))  # no content-length
        if request.url.path.endswith("/files"):
            item = {"id": "cfile_1", "path": "/mnt/data/a.csv", "bytes": 10}
            return httpx2.Response(200, json={"data": [item], "has_more": False})
        return httpx2.Response(404, json={"error": {"message": "no"}})

    with GatewayHarness(_settings(tmp_path, harvest_attempts=2, harvest_backoff=0.01)) as gw:
        tenant = gw.add_tenant("a")
        mock_upstream(gw, handler)
        recorder = gw.services.recorder
        cited = {"type": "container_file_citation", "container_id": "cntr_1", "file_id": "cfile_1"}

        async def run() -> None:
            await recorder.record_citation(tenant.id, None, {**cited, "filename": "a.csv"})
            await recorder.reconcile(tenant.id, None, ["cntr_1"])
            await gw.services.tasks.idle()

        gw.call(run)
        row = gw.call(gw.services.meta.get_file, tenant.id, "cfile_1")
    assert row is not None
    assert row.state == "failed"
    assert row.error_kind == "integrity"


def test_sse_upstream_that_compresses_anyway_is_relayed_decoded_and_watched(
    harness: GatewayHarness,
) -> None:
    """The gateway asks for ``identity``; an upstream that gzips the stream regardless is
    relayed decoded (without its ``content-encoding``), and the tap still sees the response:
    the relay never hands a client, or the tap, bytes in an encoding nobody announced."""
    tenant = harness.add_tenant("a")
    response = {"id": "resp_gzipped", "object": "response", "model": "m", "status": "completed"}
    plain = b"".join(
        encode_sse(event)
        for event in (
            {"type": "response.created", "response": response},
            {"type": "response.output_text.delta", "delta": "hi"},
            {"type": "response.completed", "response": response},
        )
    )
    packed = gzip.compress(plain)
    cut = len(packed) // 2

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.headers["accept-encoding"] == "identity"
        return httpx2.Response(
            200,
            headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
            stream=_Body([packed[:cut], packed[cut:]]),
        )

    mock_upstream(harness, handler)
    answer = harness.client.post(
        "/openai/v1/responses",
        json={"model": "m", "input": "hi", "stream": True},
        headers=tenant.headers,
    )
    assert answer.status_code == 200
    assert "content-encoding" not in answer.headers
    assert answer.content == plain
    record = harness.call(harness.services.meta.get_response, tenant.id, "resp_gzipped")
    assert record is not None
