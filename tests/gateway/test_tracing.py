"""OpenTelemetry traces of the gateway: a request span with upstream and harvest children,
configured by the standard ``OTEL_*`` variables, and nothing exported without them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cigate.exceptions import ConfigurationError
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.tracing import provider_from_env
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import DEAD_UPSTREAM, on_local_disk
from tests.gateway.harness import GatewayHarness
from tests.gateway.live import CODE_TOOL, code_input


@pytest.fixture
def no_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def _settings(tmp_path: Path, upstream: str = DEAD_UPSTREAM, key: str = "") -> GatewaySettings:
    return on_local_disk(
        tmp_path,
        upstream=upstream,
        upstream_auth="key" if key else "none",
        upstream_key=key,
        harvest_backoff=0.05,
    )


@pytest.mark.sandbox
def test_a_request_span_has_the_upstream_call_and_the_file_copies_as_children(
    emulator: RunningEmulator, tmp_path: Path, no_otel: None
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = _settings(tmp_path, emulator.base_url, emulator.api_key)
    with GatewayHarness(settings, tracer_provider=provider) as gw:
        tenant = gw.add_tenant("acme")
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        r = gw.client.post(
            "/openai/v1/responses",
            json={
                "model": "gpt-4.1",
                "tools": CODE_TOOL,
                "input": code_input("open('/mnt/data/t.txt', 'w').write('traced')"),
            },
            headers={**tenant.headers, "traceparent": parent},
        )
        assert r.status_code == 200, r.text
        response_id = r.json()["id"]
        for _ in range(300):
            files = gw.client.get(f"/responses/{response_id}/files", headers=tenant.headers)
            data = files.json().get("data", [])
            if data and all(f["state"] == "stored" for f in data):
                break
            time.sleep(0.1)
        assert data
        assert data[0]["state"] == "stored"
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    server = [s for s in spans if s.name == "POST /openai/v1/responses"]
    assert len(server) == 1
    root = server[0]
    # The caller's traceparent is honoured: the request span continues the caller's trace.
    assert root.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert root.attributes is not None
    assert root.attributes["http.route"] == "/openai/v1/responses"

    def ancestors(span: ReadableSpan) -> list[int]:
        out = []
        while span.parent is not None and span.parent.span_id in by_id:
            out.append(span.parent.span_id)
            span = by_id[span.parent.span_id]
        return out

    upstream = [s for s in spans if s.name == "upstream POST" and s.parent == root.context]
    assert upstream, [s.name for s in spans]
    copies = [s for s in spans if s.name == "harvest copy"]
    assert copies
    assert all(root.context.span_id in ancestors(c) for c in copies)
    assert all(c.context.trace_id == root.context.trace_id for c in copies)


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).received.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    """An OTLP/HTTP endpoint on 127.0.0.1 that counts what it receives."""
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("configured", [True, False], ids=["otel-endpoint-set", "unset"])
def test_spans_are_exported_over_otlp_only_when_the_otel_variables_ask_for_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_otel: None,
    collector: str,
    configured: bool,
) -> None:
    if configured:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-test")
    with GatewayHarness(_settings(tmp_path)) as gw:
        for _ in range(3):
            assert gw.client.get("/healthz").status_code == 200
    # Leaving the app flushed the batch processor: what was asked for has arrived.
    assert _Collector.received == (["/v1/traces"] if configured else [])


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, ["OTLPSpanExporter"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["ConsoleSpanExporter"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["OTLPSpanExporter", "ConsoleSpanExporter"]),
    ],
    ids=["unset", "none", "disabled", "endpoint", "console", "both"],
)
def test_the_standard_otel_variables_choose_the_exporters(
    env: dict[str, str], exporters: list[str] | None
) -> None:
    provider = provider_from_env(env)
    if exporters is None:
        assert provider is None
        return
    assert provider is not None
    processors = provider._active_span_processor._span_processors
    names = [type(p.span_exporter).__name__ for p in processors]  # type: ignore[attr-defined]
    provider.shutdown()
    assert names == exporters
    assert provider.resource.attributes["service.name"] == "cigate-gateway"


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "jaeger"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
    ids=["unknown-exporter", "grpc"],
)
def test_an_otel_setting_the_gateway_cannot_honour_fails_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="not supported"):
        provider_from_env(env)
