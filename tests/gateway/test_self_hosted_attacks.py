"""Attacks on the self-hosted interpreter's boundary: hostile models and other tenants.

The upstream model is scripted (``httpx2.MockTransport``: a model server is not our code) to
send what a broken or hostile model could: arguments that are not JSON, wrong types, huge code,
NUL bytes, a tool we never offered, calls for ever. Nothing of it may run, nothing may loop
unboundedly, and every failure is an OpenAI-shaped error. Then a second tenant tries every new
route with the first tenant's ids, in every URL form: each answer must be an unknown id (404)
and the first tenant's container and files must be untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cigate.gateway.edge import PREFIXES
from cigate.gateway.interpreter.model import MAX_BAD_CALLS, MAX_CODE_CHARS
from cigate.gateway.settings import GatewaySettings
from tests.gateway.conftest import on_local_disk
from tests.gateway.harness import GatewayHarness, Tenant, mock_upstream
from tests.gateway.live import code_input
from tests.gateway.selfhosted import AUTO

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def _settings(tmp_path: Path, **extra: Any) -> GatewaySettings:
    return on_local_disk(
        tmp_path,
        upstream="http://upstream.invalid",
        upstream_auth="none",
        link_secret="s" * 32,
        code_interpreter="self",
        interpreter_dir=str(tmp_path / "interpreter"),
        interpreter_pool_size=1,
        **extra,
    )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[GatewayHarness]:
    with GatewayHarness(_settings(tmp_path)) as gw:
        yield gw


class ScriptedModel:
    """An upstream model server: ``answer(body)`` decides; every request body is kept."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        return httpx2.Response(200, json=self.answer(body))


def _install(gw: GatewayHarness, model: Any) -> None:
    mock_upstream(gw, model)


def _call(arguments: str, name: str = "python") -> dict[str, Any]:
    item = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }
    return {"id": "resp_up", "object": "response", "status": "completed", "output": [item]}


def _text(text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"type": "message", "role": "assistant", "content": [part], "status": "completed"}
    return {"id": "resp_up", "object": "response", "status": "completed", "output": [item]}


def _results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        json.loads(i["output"]) for i in body["input"] if i.get("type") == "function_call_output"
    ]


def _create(gw: GatewayHarness, tenant: Tenant, **extra: Any) -> httpx2.Response:
    body = {"model": "m", "input": "go", "tools": AUTO, **extra}
    return gw.client.post("/openai/v1/responses", json=body, headers=tenant.headers)


HOSTILE = {
    "not-json": "print(1)",
    "json-array": '["print(1)"]',
    "code-a-number": '{"code": 5}',
    "code-missing": '{"cmd": "print(1)"}',
    "code-null": '{"code": null}',
    "huge-code": json.dumps({"code": "#" * (MAX_CODE_CHARS + 1)}),
    "nul-in-code": json.dumps({"code": "print(1)\0"}),
    "truncated-json": '{"code": "print(1)',
    "empty": "",
}


@pytest.mark.parametrize("arguments", list(HOSTILE.values()), ids=list(HOSTILE))
def test_unusable_arguments_never_run_and_the_model_hears_why(
    harness: GatewayHarness, arguments: str
) -> None:
    tenant = harness.add_tenant("a")

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        return _call(arguments) if not _results(body) else _text("gave up")

    model = ScriptedModel(answer)
    _install(harness, model)
    r = _create(harness, tenant)
    assert r.status_code == 200, r.text
    assert [i["type"] for i in r.json()["output"]] == ["message"]  # nothing ran
    [error] = _results(model.requests[-1])
    assert set(error) == {"error"}
    assert len(model.requests) == 2


def test_a_tool_we_never_offered_is_refused_to_the_model(harness: GatewayHarness) -> None:
    tenant = harness.add_tenant("a")

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if _results(body):
            return _text("ok")
        return _call(json.dumps({"code": "open('/mnt/data/x', 'w')"}), name="shell")

    _install(harness, ScriptedModel(answer))
    r = _create(harness, tenant)
    assert [i["type"] for i in r.json()["output"]] == ["message"]


def test_a_model_that_only_sends_garbage_fails_the_response_after_a_bounded_number_of_tries(
    harness: GatewayHarness,
) -> None:
    tenant = harness.add_tenant("a")
    model = ScriptedModel(lambda body: _call("garbage"))
    _install(harness, model)
    r = _create(harness, tenant)
    assert r.status_code == 502
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert len(model.requests) == MAX_BAD_CALLS + 1


@pytest.mark.parametrize("max_tool_calls", [1, 3], ids=["one", "three"])
def test_a_model_that_calls_for_ever_runs_at_most_max_tool_calls_cells(
    harness: GatewayHarness, max_tool_calls: int
) -> None:
    tenant = harness.add_tenant("a")
    model = ScriptedModel(lambda body: _call(json.dumps({"code": "print('again')"})))
    _install(harness, model)
    r = _create(harness, tenant, max_tool_calls=max_tool_calls)
    # It is told it may not call any more (tool_choice none); it calls anyway: refused, bounded.
    assert r.status_code == 502
    choices = [body["tool_choice"] for body in model.requests]
    assert choices == ["auto"] * max_tool_calls + ["none"] * (MAX_BAD_CALLS + 1)
    assert sum(1 for r in _results(model.requests[-1]) if r.get("status") == "ok") == max_tool_calls


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"error": {"message": "slow down", "type": "requests", "code": "rate_limit"}}, 429),
        (500, {"error": {"message": "Traceback /srv/secret.py", "type": "server_error"}}, 502),
        (200, {"no": "output"}, 200),
        (404, "not json at all", 502),
    ],
    ids=["429-kept", "500-hidden", "empty-output", "non-json-error"],
)
def test_upstream_errors_become_the_services_shapes(
    harness: GatewayHarness, status: int, body: Any, expected: int
) -> None:
    tenant = harness.add_tenant("a")

    def handler(request: httpx2.Request) -> httpx2.Response:
        if isinstance(body, str):
            return httpx2.Response(status, text=body)
        return httpx2.Response(status, json=body)

    _install(harness, handler)
    r = _create(harness, tenant)
    assert r.status_code == expected
    if expected != 200:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert "secret" not in r.text


def _own_state(harness: GatewayHarness, owner: Tenant) -> tuple[str, str, str]:
    """The owner runs a cell that writes a file: (response id, container id, file id)."""
    cell = "open('/mnt/data/secret.txt', 'w').write('owner data')"

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if not _results(body):
            return _call(json.dumps({"code": cell}))
        return _text("[secret.txt](sandbox:/mnt/data/secret.txt)")

    _install(harness, ScriptedModel(answer))
    r = _create(harness, owner, input=code_input(cell))
    assert r.status_code == 200, r.text
    call, message = r.json()["output"]
    [citation] = message["content"][0]["annotations"]
    return r.json()["id"], call["container_id"], citation["file_id"]


def _attempts(rid: str, cid: str, fid: str) -> list[tuple[str, str, Any]]:
    """Every new route, with the owner's ids, in every URL form, plus uploads and creates."""
    out: list[tuple[str, str, Any]] = []
    for p in PREFIXES:
        q = "?api-version=2025-04-01-preview" if p == "/openai" else ""
        c = f"{p}/containers/{cid}"
        out += [
            ("GET", f"{c}{q}", None),
            ("DELETE", f"{c}{q}", None),
            ("GET", f"{c}/files{q}", None),
            ("POST", f"{c}/files{q}", {"file": ("x.txt", b"planted")}),
            ("GET", f"{c}/files/{fid}{q}", None),
            ("DELETE", f"{c}/files/{fid}{q}", None),
            ("GET", f"{c}/files/{fid}/content{q}", None),
            ("GET", f"{p}/responses/{rid}{q}", None),
            ("GET", f"{p}/responses/{rid}{q}{'&' if q else '?'}stream=true", None),
            ("GET", f"{p}/responses/{rid}/input_items{q}", None),
            ("POST", f"{p}/responses/{rid}/cancel{q}", None),
            ("DELETE", f"{p}/responses/{rid}{q}", None),
        ]
    return out


def test_another_tenant_gets_an_unknown_id_on_every_route_and_changes_nothing(
    harness: GatewayHarness,
) -> None:
    owner, mallory = harness.add_tenant("owner"), harness.add_tenant("mallory")
    rid, cid, fid = _own_state(harness, owner)
    attempts = _attempts(rid, cid, fid)
    answers = {}
    for method, url, files in attempts:
        r = harness.client.request(method, url, files=files, headers=mallory.headers)
        answers[(method, url)] = r.status_code
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert "owner data" not in r.text
    listed = harness.client.get("/openai/v1/containers", headers=mallory.headers).json()
    assert listed["data"] == []
    # Explicit container and previous response of the owner: unknown to mallory.
    for extra in (
        {"tools": [{"type": "code_interpreter", "container": cid}]},
        {"previous_response_id": rid},
    ):
        assert _create(harness, mallory, **extra).status_code == 404
    # The owner's container and file are untouched.
    content = harness.client.get(
        f"/openai/v1/containers/{cid}/files/{fid}/content", headers=owner.headers
    )
    assert (content.status_code, content.content) == (200, b"owner data")
    state = harness.client.get(f"/openai/v1/containers/{cid}", headers=owner.headers).json()
    assert state["status"] == "running"
    names = [
        f["path"]
        for f in harness.client.get(
            f"/openai/v1/containers/{cid}/files", headers=owner.headers
        ).json()["data"]
    ]
    assert names == ["/mnt/data/secret.txt"]
    assert len(answers) == len(attempts)


def _run_cell(gw: GatewayHarness, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        return _text("done") if _results(body) else _call(json.dumps({"code": "x = 1"}))

    _install(gw, ScriptedModel(answer))
    r = _create(gw, tenant, **extra)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_one_tenant_at_the_host_cap_never_expires_another_tenants_container(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, interpreter_tenant_containers=2, interpreter_max_containers=2)
    with GatewayHarness(settings) as gw:
        a, b = gw.add_tenant("a"), gw.add_tenant("b")
        b_container = _run_cell(gw, b)["output"][0]["container_id"]  # the longest idle
        a_first = _run_cell(gw, a)["output"][0]["container_id"]
        _run_cell(gw, a)  # the host is full: room is made among a's own containers only
        state = gw.client.get(f"/openai/v1/containers/{b_container}", headers=b.headers)
        assert state.json()["status"] == "running"
        mine = gw.client.get(f"/openai/v1/containers/{a_first}", headers=a.headers)
        assert mine.json()["status"] == "expired"


def test_a_tenant_at_its_own_cap_gets_429_when_all_its_containers_run_code_not_others_room(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, interpreter_tenant_containers=1, interpreter_max_containers=4)
    with GatewayHarness(settings) as gw:
        a, b = gw.add_tenant("a"), gw.add_tenant("b")
        _run_cell(gw, a)
        _run_cell(gw, a)  # a's first container expires for a's second: its own cap
        assert _run_cell(gw, b)["status"] == "completed"  # b has room of its own
        live = [
            c
            for c in gw.client.get("/openai/v1/containers", headers=a.headers).json()["data"]
            if c["status"] == "running"
        ]
        assert len(live) == 1


def test_uploads_are_bounded_before_they_are_read(
    harness: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cigate.gateway.interpreter import containers as routes

    monkeypatch.setattr(routes, "MAX_UPLOAD", 1000)
    tenant = harness.add_tenant("a")
    created = harness.client.post(
        "/openai/v1/containers", json={"name": "c"}, headers=tenant.headers
    ).json()
    url = f"/openai/v1/containers/{created['id']}/files"
    small = harness.client.post(url, files={"file": ("s.txt", b"ok")}, headers=tenant.headers)
    assert small.status_code == 200
    big = harness.client.post(url, files={"file": ("b.bin", b"x" * 2000)}, headers=tenant.headers)
    assert big.status_code == 413
    assert set(big.json()["error"]) == {"message", "type", "param", "code"}

    def chunked() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="c.txt"\r\n\r\n'
        yield b"y" * 10 + b"\r\n--b--\r\n"

    unsized = harness.client.post(
        url,
        content=chunked(),
        headers={**tenant.headers, "content-type": "multipart/form-data; boundary=b"},
    )
    assert unsized.status_code == 413
    listed = harness.client.get(url, headers=tenant.headers).json()["data"]
    assert [f["path"].rsplit("-", 1)[-1] for f in listed] == ["s.txt"]


def test_a_tenant_cannot_pile_up_containers_and_others_still_can_create(
    harness: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cigate.gateway.interpreter import service

    monkeypatch.setattr(service, "MAX_CONTAINERS_PER_TENANT", 2)
    a, b = harness.add_tenant("a"), harness.add_tenant("b")
    made = [
        harness.client.post("/openai/v1/containers", json={"name": "x"}, headers=a.headers)
        for _ in range(3)
    ]
    assert [r.status_code for r in made] == [200, 200, 429]
    assert made[2].json()["error"]["code"] == "rate_limit_exceeded"
    assert _create(harness, a).status_code == 429  # an auto container is one more
    other = harness.client.post("/openai/v1/containers", json={"name": "y"}, headers=b.headers)
    assert other.status_code == 200
