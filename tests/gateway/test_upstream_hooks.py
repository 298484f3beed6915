"""What every upstream call carries and how it is judged: harvest calls timed under their own
route label, the W3C ``traceparent`` of the current span (tracing on only), and a 401/403 read
with a cap and judged by its ``error.code``.

The upstream is a recording ``httpx2.MockTransport`` (the network edge, not our code): every
request that left the gateway, with its headers, is in ``seen``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cigate.gateway import metrics, tracing
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import AUTH_BODY_LIMIT
from tests.gateway.conftest import DEAD_UPSTREAM, on_local_disk
from tests.gateway.harness import GatewayHarness

CONTAINER = "cntr_" + "c" * 32
BODY = b"harvested bytes\n"


def _settings(tmp_path: Path) -> GatewaySettings:
    return on_local_disk(
        tmp_path,
        upstream=DEAD_UPSTREAM,
        upstream_auth="key",
        upstream_key="k",
        harvest_attempts=1,
        harvest_backoff=0.01,
    )


class Recorder:
    """An upstream that answers the harvest core and the container listing, and keeps every
    request it was sent."""

    def __init__(self) -> None:
        self.seen: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        path = request.url.path
        if path.endswith("/content"):
            return httpx2.Response(200, content=BODY)
        file_id = path.rsplit("/", 1)[-1]
        if "/files/" in path:
            return httpx2.Response(200, json=_file(file_id))
        return httpx2.Response(200, json={"object": "list", "data": [], "has_more": False})


def _file(file_id: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "container.file",
        "container_id": CONTAINER,
        "bytes": len(BODY),
        "path": "/mnt/data/out.txt",
        "source": "assistant",
        "created_at": 1,
    }


def _copy_files(gw: GatewayHarness, tenant_id: str, count: int) -> list[str]:
    """Record ``count`` container files and copy each through the harvester; their states."""

    async def copy_all() -> list[str]:
        svc = gw.services
        tasks = []
        for i in range(count):
            row = await gw.cited_file(
                tenant_id, f"f{i}.txt", container_id=CONTAINER, file_id=f"cfile_{i:032x}"
            )
            task = svc.harvester.start_copy(row)
            assert task is not None
            tasks.append(task)
        return [(await t).state for t in tasks]

    return gw.call(copy_all)


def _upstream_samples() -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in metrics.UPSTREAM_SECONDS.collect()
        for sample in family.samples
        if sample.name == "cigate_upstream_duration_seconds_count"
    ]


def _harvest_count() -> float:
    return sum(v for labels, v in _upstream_samples() if labels["route"].startswith("harvest "))


# -- harvest calls in cigate_upstream_duration_seconds ----------------------------------------


def test_every_harvest_call_is_timed_under_a_harvest_route_without_ids(tmp_path: Path) -> None:
    upstream = Recorder()
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    before = _harvest_count()
    with GatewayHarness(_settings(tmp_path), upstream_client=client) as gw:
        tenant = gw.add_tenant("acme")
        states = _copy_files(gw, tenant.id, 3)
    assert states == ["stored"] * 3
    harvest_calls = [r for r in upstream.seen if "/containers/" in r.url.path]
    assert harvest_calls
    assert _harvest_count() - before == len(harvest_calls)
    routes = {labels["route"] for labels, _ in _upstream_samples()}
    assert "harvest /containers/{id}/files/{id}/content" in routes
    assert not [r for r in routes if "cfile_" in r or "cntr_" in r]


def test_a_forwarded_call_is_timed_under_the_gateway_route_it_answers(tmp_path: Path) -> None:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(Recorder()))
    labels = {"method": "GET", "status": "200", "route": "/openai/v1/containers"}
    name = "cigate_upstream_duration_seconds_count"
    before = metrics.REGISTRY.get_sample_value(name, labels) or 0.0
    with GatewayHarness(_settings(tmp_path), upstream_client=client) as gw:
        tenant = gw.add_tenant("acme")
        for _ in range(3):
            r = gw.client.get("/openai/v1/containers", headers=tenant.headers)
            assert r.status_code == 200, r.text
    assert metrics.REGISTRY.get_sample_value(name, labels) == before + 3


# -- traceparent ------------------------------------------------------------------------------


def _parse(traceparent: str) -> tuple[int, int]:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    return int(trace_id, 16), int(span_id, 16)


def test_upstream_calls_carry_the_traceparent_of_the_current_span(tmp_path: Path) -> None:
    """Pass-through: the upstream sees the upstream span as parent, in the caller's trace (a
    caller's own traceparent is replaced, not relayed). Harvest: the copy's span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    upstream = Recorder()
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with GatewayHarness(
        _settings(tmp_path), upstream_client=client, tracer_provider=provider
    ) as gw:
        tenant = gw.add_tenant("acme")
        r = gw.client.get(
            "/openai/v1/containers", headers={**tenant.headers, "traceparent": caller}
        )
        assert r.status_code == 200, r.text
        [forwarded] = upstream.seen
        upstream.seen.clear()

        async def traced_copy() -> int:
            tracing.TRACER.set(provider.get_tracer("test"))
            with tracing.span("test root") as root:
                assert root is not None
                states = await asyncio.gather(
                    *[t for t in [gw.services.harvester.start_copy(await _row(gw, tenant.id))] if t]
                )
                assert [s.state for s in states] == ["stored"]
                return root.get_span_context().trace_id

        trace_id = gw.call(traced_copy)
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    sent_trace, sent_parent = _parse(forwarded.headers["traceparent"])
    assert sent_trace == 0x0AF7651916CD43DD8448EB211C80319C
    assert spans[sent_parent].name == "upstream GET"
    server = spans[sent_parent].parent
    assert server is not None
    assert spans[server.span_id].name == "GET /openai/v1/containers"
    assert spans[server.span_id].parent.span_id == 0xB7AD6B7169203331  # type: ignore[union-attr]
    assert upstream.seen
    for request in upstream.seen:
        trace, parent = _parse(request.headers["traceparent"])
        assert trace == trace_id
        assert spans[parent].name == "harvest copy"


async def _row(gw: GatewayHarness, tenant_id: str) -> Any:
    return await gw.cited_file(
        tenant_id, "traced.txt", container_id=CONTAINER, file_id="cfile_" + "9" * 32
    )


def test_without_tracing_no_traceparent_is_added(tmp_path: Path) -> None:
    upstream = Recorder()
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    with GatewayHarness(_settings(tmp_path), upstream_client=client) as gw:
        tenant = gw.add_tenant("acme")
        assert gw.client.get("/openai/v1/containers", headers=tenant.headers).status_code == 200
        assert _copy_files(gw, tenant.id, 1) == ["stored"]
    assert len(upstream.seen) >= 2
    assert not [r for r in upstream.seen if "traceparent" in r.headers]


# -- 401/403: a capped read, judged by error.code ----------------------------------------------


def _refusing(status: int, body: bytes) -> httpx2.AsyncClient:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=body)

    return httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))


def _azure(code: str | None, message: str) -> bytes:
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    ("status", "body", "alarm"),
    [
        (
            403,
            _azure("PermissionDenied", "The principal lacks the data action (CheckAccess)."),
            True,
        ),
        (403, _azure("AuthenticationTypeDisabled", "Key based authentication is disabled."), True),
        (401, _azure("InvalidAuthenticationToken", "The access token is invalid."), True),
        (401, _azure("401", "Access denied due to invalid subscription key."), True),
        (401, _azure("SomethingNew", "mentions CheckAccess but is a 401"), True),
        (403, _azure("OperationNotSupported", "Not allowed on this endpoint."), False),
        (403, b"ApiId openai-api OperationId get-container not supported for CheckAccess.", False),
        (403, _azure(None, "Forbidden."), True),
    ],
    ids=[
        "permission-denied-naming-checkaccess",
        "key-auth-disabled",
        "invalid-token",
        "azure-401",
        "401-always-credential",
        "403-operation-code",
        "plain-text-checkaccess",
        "no-code-no-checkaccess",
    ],
)
def test_a_401_or_403_is_judged_by_its_error_code_before_its_message(
    tmp_path: Path, status: int, body: bytes, alarm: bool
) -> None:
    with GatewayHarness(_settings(tmp_path), upstream_client=_refusing(status, body)) as gw:
        tenant = gw.add_tenant("acme")
        r = gw.client.get("/openai/v1/containers", headers=tenant.headers)
    if alarm:
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream_unavailable"
    else:
        assert r.status_code == 403, r.text


class _Endless:
    """A 401 body of 1 MiB chunks, bounded at 64 MiB so a failing test still ends."""

    CHUNK = b"x" * (1 << 20)
    LIMIT = 64

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.LIMIT:
            self.sent += 1
            yield self.CHUNK


@pytest.mark.parametrize("status", [401, 403], ids=["401", "403"])
def test_a_huge_or_endless_refusal_body_is_read_only_up_to_the_cap(
    tmp_path: Path, status: int
) -> None:
    bodies: list[_Endless] = []

    def refuse(request: httpx2.Request) -> httpx2.Response:
        body = _Endless()
        bodies.append(body)
        return httpx2.Response(status, content=body.__aiter__())

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    with GatewayHarness(_settings(tmp_path), upstream_client=client) as gw:
        tenant = gw.add_tenant("acme")
        r = gw.client.get("/openai/v1/containers", headers=tenant.headers)
    assert r.status_code == 502, r.text
    assert bodies
    # The cap is 64 KiB: the first 1 MiB chunk passes it, nothing after is pulled.
    assert [b.sent for b in bodies] == [1] * len(bodies)
    assert AUTH_BODY_LIMIT == 64 * 1024


def test_a_checkaccess_body_within_the_cap_stays_readable_by_the_harvest_core(
    tmp_path: Path,
) -> None:
    """The plain-text CheckAccess 403 of a download goes on to the harvest core, which still
    reads it (its hint names CheckAccess), not a 502."""
    body = b"ApiId openai-api OperationId get-container not supported for CheckAccess."
    settings = dataclasses.replace(_settings(tmp_path), harvest_attempts=1)
    with GatewayHarness(settings, upstream_client=_refusing(403, body)) as gw:
        tenant = gw.add_tenant("acme")
        [row] = gw.call(_copy_rows, gw, tenant.id)
    assert row.state == "failed"
    assert row.error_kind != "upstream_unavailable"
    assert "CheckAccess" in (row.error_message or "")


async def _copy_rows(gw: GatewayHarness, tenant_id: str) -> list[Any]:
    task = gw.services.harvester.start_copy(await _row(gw, tenant_id))
    assert task is not None
    return [await task]
