"""Metrics, request ids, access lines and upstream credential failures of the gateway (issue 13).

Metrics are read from ``GET /metrics`` as Prometheus would; log lines from a real
``cigate gateway serve --log-format json`` process; credential failures from a real
azure-identity credential whose ``az`` fails, and from the emulator refusing a wrong key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import socket
import stat
import string
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from azure.identity.aio import AzureCliCredential
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from cigate.emulator.server import run_in_thread
from cigate.gateway.app import SERVER_LOOP, create_app
from cigate.gateway.observe import ObserveMiddleware
from cigate.gateway.settings import GatewaySettings
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import DEAD_UPSTREAM, Backend, on_local_disk
from tests.gateway.harness import GatewayHarness, Tenant
from tests.gateway.live import CODE_TOOL, code_input, serve_process

TOKEN = "metrics-secret-token"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _value(text: str, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in _samples(text) if n == name and labels.items() <= lab.items())


def _settings(tmp_path: Path, **kw: object) -> GatewaySettings:
    return on_local_disk(
        tmp_path,
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
        connect_timeout=1.0,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[GatewayHarness]:
    with GatewayHarness(_settings(tmp_path, metrics=True, metrics_token=TOKEN)) as harness:
        yield harness


def _scrape(gw: GatewayHarness) -> str:
    r = gw.client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


# -- /metrics: off by default, behind its token ---------------------------------------------


def test_metrics_are_a_404_in_the_openai_shape_unless_enabled(tmp_path: Path) -> None:
    with GatewayHarness(_settings(tmp_path)) as gw:
        r = gw.client.get("/metrics")
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "cigate_" not in r.text


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
    ids=["none", "wrong-token", "wrong-scheme", "token-prefix", "empty"],
)
def test_metrics_need_the_metrics_token_when_one_is_set(
    metered: GatewayHarness, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    r = metered.client.get("/metrics", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "cigate_requests" not in r.text


def test_requests_are_counted_by_route_template_method_and_status(
    metered: GatewayHarness,
) -> None:
    tenant = metered.add_tenant("acme")
    row = metered.put_file(tenant, b"hello", "a.txt")
    before = _scrape(metered)
    for _ in range(3):
        assert metered.client.get(f"/files/{row.id}/content", headers=tenant.headers).content == (
            b"hello"
        )
    assert metered.client.get("/files/gwf_nope", headers=tenant.headers).status_code == 404
    after = _scrape(metered)
    route = "/files/{file_id}/content"
    delta = _value(after, "cigate_requests_total", route=route, method="GET", status="200") - (
        _value(before, "cigate_requests_total", route=route, method="GET", status="200")
    )
    assert delta == 3
    assert _value(after, "cigate_requests_total", route="/files/{file_id}", status="404") >= 1
    served = _value(after, "cigate_bytes_served_total") - _value(
        before, "cigate_bytes_served_total"
    )
    assert served == 15
    assert _value(after, "cigate_store_up", store="database") == 1
    assert _value(after, "cigate_store_up", store="blobs") == 1
    assert row.id not in after  # ids are never labels


def _hostile_paths(rng: random.Random, n: int) -> list[tuple[str, str]]:
    alphabet = string.ascii_letters + string.digits + "-_.~"
    methods = ["GET", "POST", "DELETE", "PATCH", "PUT", "PROPFIND", "BREW", "M" * 40]
    out = []
    for i in range(n):
        token = f"zq{i}x" + "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 30)))
        shape = rng.choice(
            [
                f"/{token}",
                f"/files/{token}",
                f"/files/{token}/content",
                f"/v1/{token}/{token}",
                f"/openai/v1/containers/{token}/files",
                f"/openai/v1/responses/{token}",
                f"/links/{token}",
                f"/{token}/%2e%2e/x",
                f"/v1//{token}",
                f"/OpenAI/v1/{token}",
                f"/responses/{token}/files/by-path/{token}/{token}",
            ]
        )
        out.append((rng.choice(methods), shape))
    return out


def _label_sets(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (n, tuple(sorted(lab.items())))
        for n, lab, _ in _samples(text)
        if n.startswith("cigate_request")
    }


def test_generated_paths_and_methods_cannot_grow_the_label_sets_or_reach_them(
    metered: GatewayHarness,
) -> None:
    """Two rounds of 300 requests with random ids, unknown paths, refused spellings and
    invented methods (as a tenant and anonymous): labels are only route templates, known
    methods and statuses, the second round of fresh strings adds (almost) no label set, and no
    generated string, tenant name or key shows up in /metrics."""
    tenant = metered.add_tenant("secret-tenant-name")
    rounds: list[set[tuple[str, tuple[tuple[str, str], ...]]]] = []
    sent: list[str] = []
    for seed in (13, 14):
        for i, (method, path) in enumerate(_hostile_paths(random.Random(seed), 300)):
            r = metered.client.request(method, path, headers=tenant.headers if i % 2 else {})
            assert r.status_code < 500, (method, path, r.text)
            sent.append(path)
        rounds.append(_label_sets(_scrape(metered)))
    first, second = rounds
    # A label set per path would add ~300 here; templates x methods x statuses add ~none.
    assert len(second - first) <= 10, sorted(second - first)
    text = _scrape(metered)
    templates = {getattr(r, "path", None) for r in metered.app.routes} | {"unmatched"}
    assert {dict(lab).get("route") for _, lab in second} <= templates
    assert {dict(lab).get("method") for _, lab in second} <= {
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER", None
    }  # fmt: skip
    for path in sent:
        for token in path.split("/"):
            if token.startswith("zq"):
                assert token not in text
    for secret in ("secret-tenant-name", tenant.id, tenant.key):
        assert secret not in text


# -- request ids and access lines -----------------------------------------------------------


def test_every_answer_carries_a_fresh_request_id_and_keeps_a_well_formed_one(
    metered: GatewayHarness,
) -> None:
    first = metered.client.get("/healthz").headers["x-request-id"]
    second = metered.client.get("/healthz").headers["x-request-id"]
    assert first != second
    assert len(first) == 24
    assert all(c in string.hexdigits for c in first)
    kept = "client-abc_123:retry.2"
    r = metered.client.get("/healthz", headers={"x-request-id": kept})
    assert r.headers.get_list("x-request-id") == [kept]
    refused = metered.client.get("/nope/x%2e%2e", headers={"x-request-id": kept})
    assert refused.status_code == 404
    assert refused.headers["x-request-id"] == kept


@pytest.mark.parametrize(
    "value",
    [
        b"a" * 129,
        b"evil\x01id",
        b'x","level":"critical',
        b"id with spaces",
        b"\xff\xfe",
        b"-leading-dash",
        b"caf\xc3\xa9",
        b"a%0d%0aSet-Cookie:x",
        b"..",
    ],
    ids=[
        "too-long",
        "control",
        "json-break",
        "spaces",
        "latin1",
        "dash",
        "utf8",
        "crlf-escape",
        "dots",
    ],
)
def test_a_malformed_incoming_request_id_is_replaced_not_echoed(
    tmp_path: Path, value: bytes
) -> None:
    """Raw bytes on a real socket (no client library normalises them)."""
    from cigate.emulator.server import run_in_thread

    handle = run_in_thread(create_app(_settings(tmp_path)), "127.0.0.1", 0, loop=SERVER_LOOP)
    try:
        host, port = handle.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-request-id: "
                + value
                + b"\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        handle.stop()
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    ids = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.startswith(b"x-request-id:")
    ]
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(ids) == 1
    assert ids[0] != value.lower()
    assert len(ids[0]) == 24


def test_the_served_gateway_writes_one_json_access_line_per_request_with_its_id(
    tmp_path: Path, processes: list
) -> None:
    """``cigate gateway serve --log-format json``: every line is one JSON object with a request
    id; each request has exactly one access line, with the id its answer carried."""
    import httpx2

    settings = _settings(tmp_path)
    port = _free_port()
    proc = serve_process(settings, port, tmp_path / "home", upstream_auth="none", log_format="json")
    processes.append(proc)
    sent: list[str] = []
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        for path in ("/healthz", "/readyz", "/files/gwf_x", "/v1/%2e%2e/x", "/nope"):
            sent.append(
                client.get(path, headers={"x-request-id": f"t-{len(sent)}"}).headers["x-request-id"]
            )
        # the refused request of an anonymous caller logs nothing but its access line
    proc.terminate()
    proc.wait(20)
    lines = (tmp_path / "home" / f"gateway-{port}.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records
    assert len(records) == len([ln for ln in lines if ln.strip()])
    assert all({"time", "level", "logger", "message", "request_id"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "cigate.access"]
    assert sorted(r["request_id"] for r in access if r["request_id"] in sent) == sorted(sent)
    assert [r["request_id"] for r in access].count("t-0") == 1
    by_id = {r["request_id"]: r for r in access}
    assert by_id["t-2"]["status"] == 401
    assert by_id["t-2"]["route"] == "/files/{file_id}"
    assert by_id["t-3"]["status"] == 404
    assert by_id["t-3"]["route"] == "unmatched"


@pytest.mark.parametrize("level", ["info", "debug"])
def test_the_http_clients_own_line_per_upstream_call_is_written_only_at_debug(
    tmp_path: Path, processes: list, level: str
) -> None:
    """httpx logs every request at info ("HTTP Request: GET …"): at the gateway's default
    level that was a line per harvest listing, record and download, CPU under load for what
    the access line and the metrics already say."""

    async def models(scope: dict, receive: object, send: Callable) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"object":"list","data":[]}'})

    upstream = run_in_thread(models, "127.0.0.1", 0)
    try:
        settings = dataclasses.replace(_settings(tmp_path), upstream=upstream.url)
        port = _free_port()
        home = tmp_path / "home"
        proc = serve_process(
            settings,
            port,
            home,
            upstream_auth="none",
            log_format="json",
            log_level=level,
            ready_check_upstream="true",  # /readyz makes an upstream call
        )
        processes.append(proc)
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            assert client.get("/readyz").status_code == 200
        proc.terminate()
        proc.wait(20)
    finally:
        upstream.stop()
    lines = (home / f"gateway-{port}.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r["logger"] == "cigate.access" for r in records)  # the log was written
    client_lines = [r for r in records if r["logger"] == "httpx2"]
    if level == "debug":
        assert any(r["message"].startswith("HTTP Request: GET") for r in client_lines)
    else:
        assert client_lines == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- upstream credential failures -----------------------------------------------------------


def _fake_az(tmp_path: Path, stderr: str) -> Path:
    """A directory with an ``az`` that fails the way the Azure CLI does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(f"#!/bin/sh\necho {stderr!r} >&2\nexit 1\n")
    az.chmod(az.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.parametrize(
    "stderr",
    [
        "ERROR: Please run 'az login' to setup account.",
        "ERROR: AADSTS700016: Application with identifier 'x' was not found.",
    ],
    ids=["not-logged-in", "aad-error"],
)
def test_a_failing_entra_credential_is_a_502_in_the_openai_shape_logged_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stderr: str,
) -> None:
    """azure-identity's AzureCliCredential really runs (an ``az`` that fails): five calls are
    five 502s in the OpenAI envelope, one ERROR line with the fix, five counted failures."""
    monkeypatch.setenv("PATH", f"{_fake_az(tmp_path, stderr)}{os.pathsep}/usr/bin:/bin")
    settings = dataclasses.replace(
        _settings(tmp_path, metrics=True, metrics_token=TOKEN), upstream_auth="entra"
    )
    app_kw = {"upstream_credential": AzureCliCredential(process_timeout=10)}
    with GatewayHarness(settings, **app_kw) as gw, caplog.at_level(logging.INFO):
        tenant = gw.add_tenant("acme")
        before = _value(_scrape(gw), "cigate_upstream_auth_failures_total", reason="credential")
        for _ in range(5):
            r = gw.client.post(
                "/openai/v1/responses", json={"model": "m", "input": "hi"}, headers=tenant.headers
            )
            assert r.status_code == 502
            assert r.headers["content-type"] == "application/json"
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "server_error"
            assert "credential" in error["message"]
            assert "AADSTS" not in r.text
            assert "az login" not in r.text
        after = _value(_scrape(gw), "cigate_upstream_auth_failures_total", reason="credential")
    alarms = [
        rec
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and "credential" in rec.getMessage()
    ]
    assert len(alarms) == 1, [rec.getMessage() for rec in alarms]
    assert "Cognitive Services OpenAI User" in alarms[0].getMessage()
    assert not [rec for rec in caplog.records if rec.exc_info and rec.levelno >= logging.ERROR]
    assert after - before == 5


def test_readyz_checks_the_upstream_credential_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{_fake_az(tmp_path, 'ERROR: Please run az login')}:/usr/bin:/bin")
    base = dataclasses.replace(_settings(tmp_path), upstream_auth="entra")
    with GatewayHarness(base, upstream_credential=AzureCliCredential()) as gw:
        assert gw.client.get("/readyz").json()["status"] == "ready"  # not asked: unchanged
    asked = dataclasses.replace(base, ready_check_upstream=True)
    with GatewayHarness(asked, upstream_credential=AzureCliCredential()) as gw:
        r = gw.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {"database": "ok", "blobs": "ok", "upstream": "unavailable"}


@pytest.mark.storage
def test_a_wrong_upstream_key_is_a_502_for_tenants_and_one_log_line_with_the_fix(
    emulator: RunningEmulator,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The emulator refuses the gateway's key as Azure does: tenants get a 502 (not Azure's
    'invalid subscription key', which is not theirs to fix), the operator one line; with the
    right key the same calls pass and /readyz's upstream check is ok."""
    settings = GatewaySettings(
        upstream=emulator.base_url,
        upstream_key="wrong-key",
        database=backend.database,
        blobs=backend.blobs,
        ready_check_upstream=True,
    )
    with GatewayHarness(settings) as gw, caplog.at_level(logging.INFO):
        tenant = gw.add_tenant("acme")
        for _ in range(4):
            r = gw.client.get("/openai/v1/containers", headers=tenant.headers)
            assert r.status_code == 502
            assert r.json()["error"]["code"] == "upstream_unavailable"
            assert "subscription key" not in r.text
        ready = gw.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["upstream"] == "unavailable"
    alarms = [rec for rec in caplog.records if "upstream credential failed" in rec.getMessage()]
    assert len(alarms) == 1
    assert "--upstream-key" in alarms[0].getMessage() or "key" in alarms[0].getMessage()
    good = dataclasses.replace(settings, upstream_key=emulator.api_key)
    with GatewayHarness(good) as gw:
        tenant = gw.add_tenant("acme2")
        assert gw.client.get("/openai/v1/containers", headers=tenant.headers).status_code == 200
        assert gw.client.get("/readyz").json()["checks"]["upstream"] == "ok"


def test_harvest_downloads_refused_by_the_upstream_raise_the_same_alarm_and_stay_retryable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The harvest core's own calls (listing, download) meet a 401 too: each copy is recorded
    failed as ``upstream_unavailable`` (the sweep tries it again once the key is fixed), not
    as a permanent refusal, and the operator reads one line, not one per file."""
    seen: list[str] = []

    def refuse(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.path)
        return httpx2.Response(
            401,
            json={
                "error": {
                    "code": "401",
                    "message": "Access denied due to invalid subscription key or wrong API "
                    "endpoint.",
                }
            },
        )

    settings = dataclasses.replace(
        _settings(tmp_path, harvest_attempts=2, harvest_backoff=0.01),
        upstream_auth="key",
        upstream_key="wrong",
    )
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    with GatewayHarness(settings, upstream_client=client) as gw, caplog.at_level(logging.INFO):
        tenant = gw.add_tenant("acme")

        async def copy_all() -> list[str | None]:
            svc = gw.services
            tasks = []
            for i in range(4):
                row = await gw.cited_file(
                    tenant.id,
                    f"f{i}.txt",
                    container_id="cntr_" + "a" * 32,
                    file_id=f"cfile_{i:032x}",
                )
                task = svc.harvester.start_copy(row)
                assert task is not None
                tasks.append(task)
            return [(await t).error_kind for t in tasks]

        kinds = gw.call(copy_all)
    assert seen  # the upstream was asked
    assert kinds == ["upstream_unavailable"] * 4
    alarms = [rec for rec in caplog.records if "upstream credential failed" in rec.getMessage()]
    assert len(alarms) == 1
    assert "--upstream-key" in alarms[0].getMessage()


def _failing_app() -> Starlette:
    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug with /secret/path in its message")

    async def broken_stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            raise RuntimeError("broke off mid-stream")

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(
        routes=[Route("/boom", boom), Route("/stream", broken_stream)],
        middleware=[Middleware(ObserveMiddleware)],
    )


def test_an_unexpected_exception_is_a_json_500_naming_the_request_id_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        TestClient(_failing_app(), raise_server_exceptions=False) as client,
        caplog.at_level(logging.INFO),
    ):
        r = client.get("/boom", headers={"x-request-id": "req-42"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "req-42"
    error = r.json()["error"]
    assert error["type"] == "server_error"
    assert "req-42" in error["message"]
    assert "secret" not in r.text
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1
    access = [rec for rec in caplog.records if rec.name == "cigate.access"]
    assert len(access) == 1
    assert access[0].__dict__["status"] == 500


def test_an_exception_after_the_answer_started_breaks_the_connection_off() -> None:
    """A stream that fails midway must not end cleanly (the client would take it as whole)."""
    with (
        TestClient(_failing_app(), raise_server_exceptions=True) as client,
        pytest.raises(RuntimeError, match="broke off mid-stream"),
    ):
        client.get("/stream")


def _stream_and_harvest(gw: GatewayHarness, tenant: Tenant) -> tuple[int, list[dict]]:
    """A streamed response whose code writes one 1000-byte file; (events, its files)."""
    body = {
        "model": "gpt-4.1",
        "tools": CODE_TOOL,
        "stream": True,
        "input": code_input("open('/mnt/data/m.txt', 'w').write('x' * 1000)"),
    }
    with gw.client.stream("POST", "/openai/v1/responses", json=body, headers=tenant.headers) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data:")]
    response_id = json.loads(events[-1][5:])["response"]["id"]
    data: list[dict] = []
    for _ in range(300):
        files = gw.client.get(f"/responses/{response_id}/files", headers=tenant.headers)
        data = files.json().get("data", [])
        if data and files.json()["listed"] and all(f["state"] != "pending" for f in data):
            break
        time.sleep(0.1)
    return len(events), data


@pytest.mark.sandbox
def test_harvest_stream_and_upstream_metrics_follow_what_happened(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """A streamed response whose file is stored, then one whose file download fails for good:
    events relayed, one file harvested with its bytes and lag, one failed under its kind, and
    the upstream calls timed."""
    settings = dataclasses.replace(
        _settings(tmp_path, metrics=True, metrics_token=TOKEN, harvest_attempts=1),
        upstream=emulator.base_url,
        upstream_auth="key",
        upstream_key=emulator.api_key,
    )
    with GatewayHarness(settings) as gw:
        tenant = gw.add_tenant("acme")
        before = _scrape(gw)
        events, [stored] = _stream_and_harvest(gw, tenant)
        middle = _scrape(gw)
        emulator.control.switch("download-404-empty")
        more_events, [failed] = _stream_and_harvest(gw, tenant)
        after = _scrape(gw)

    def delta(a: str, b: str, name: str, **labels: str) -> float:
        return _value(b, name, **labels) - _value(a, name, **labels)

    assert stored["state"] == "stored"
    assert delta(before, middle, "cigate_sse_events_relayed_total") == events
    assert delta(before, middle, "cigate_files_harvested_total") == 1
    assert delta(before, middle, "cigate_bytes_stored_total") == 1000
    assert delta(before, middle, "cigate_harvest_lag_seconds_count") == 1
    assert delta(before, middle, "cigate_files_failed_total") == 0
    up = {"method": "POST", "status": "200"}
    assert delta(before, middle, "cigate_upstream_duration_seconds_count", **up) == 1
    assert delta(before, middle, "cigate_requests_total", route="/openai/v1/responses") == 1
    assert failed["state"] == "failed"
    kind = failed["error"]["kind"]
    assert delta(middle, after, "cigate_files_failed_total", reason=kind) == 1
    assert delta(middle, after, "cigate_files_harvested_total") == 0
    assert delta(middle, after, "cigate_sse_events_relayed_total") == more_events
