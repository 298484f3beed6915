"""Default deny: the gateway forwards only scoped, stateless or operator-allowed calls.

Fault rules on the emulator count the calls that reach it, so "refused" means "never left the
gateway", not just "got a 403".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from starlette.routing import Route

from cigate.exceptions import ConfigurationError
from cigate.gateway.app import _routes
from cigate.gateway.edge import parse_api_path
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.tenancy import ALLOW_SETTING, CATCH_ALL, OWN_ROUTES, SCOPED, check_routes
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import live_settings, local_backend, on_local_disk
from tests.gateway.harness import GatewayHarness, mock_upstream
from tests.gateway.live import LiveGateway, add_tenant, start_gateway

pytestmark = [pytest.mark.storage]


def _gateway(emulator: RunningEmulator, tmp_path: Path, allow: str = "") -> LiveGateway:
    backend = local_backend(tmp_path)
    settings = replace(live_settings(emulator, backend), allow_unscoped=allow)
    return start_gateway(settings, add_tenant(settings.database_url, "acme"))


@pytest.fixture
def counted(emulator: RunningEmulator) -> Iterator[RunningEmulator]:
    """Every call that reaches the upstream on these paths gets a 503 and is counted."""
    for path in ("**/vector_stores**", "**/made_up**", "**/chat/completions**", "**/models/**"):
        emulator.control.add_fault(path=path, status=503)
    emulator.control.add_fault(path="**/embeddings", method="POST", status=503)
    try:
        yield emulator
    finally:
        emulator.control.clear_faults()


def _fired(emulator: RunningEmulator) -> dict[str, int]:
    return {f["path"]: f["fired"] for f in emulator.control.faults()}


def test_every_gateway_route_is_classified_by_the_tenancy_table() -> None:
    routes = _routes()
    check_routes(routes)
    api = [parse_api_path(r.path) for r in routes if isinstance(r, Route)]
    families = {p.family for p in api if p is not None and p.rest != CATCH_ALL}
    assert families == SCOPED  # every scoped family is routed, and nothing else is
    own = {r.path for r in routes if isinstance(r, Route) and parse_api_path(r.path) is None}
    assert own == set(OWN_ROUTES)


@pytest.mark.parametrize(
    "route",
    [
        Route("/openai/v1/vector_stores", lambda r: None),
        Route("/v1/batches/{batch_id}", lambda r: None),
        Route("/debug/state", lambda r: None),
    ],
    ids=["unscoped-family", "unscoped-with-id", "own-route"],
)
def test_a_route_the_table_does_not_classify_fails_start_up(route: Route) -> None:
    with pytest.raises(ConfigurationError, match="tenancy"):
        check_routes([*_routes(), route])


def test_unscoped_and_unknown_calls_are_refused_by_default_before_the_upstream(
    counted: RunningEmulator, tmp_path: Path
) -> None:
    gw = _gateway(counted, tmp_path)
    try:
        http = gw.http()
        refused = [
            http.get("/openai/v1/vector_stores"),
            http.post("/v1/vector_stores", json={"name": "shared?"}),
            http.delete("/openai/v1/vector_stores/vs_123"),
            http.get("/openai/vector_stores", params={"api-version": "2025-04-01-preview"}),
            http.get("/openai/v1/made_up/thing"),
            http.get("/v1/chat/completions"),  # stored completions: a listing of everyone's
            http.post("/v1/chat/completions/chatcmpl_1", json={"metadata": {"a": "b"}}),
            http.delete("/openai/v1/models/ft:gpt-4o:org:x"),
            http.post("/openai/v1/embeddings/extra", json={}),
        ]
        assert [r.status_code for r in refused] == [403] * len(refused)
        for r in refused:
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert ALLOW_SETTING in error["message"]
        assert "unknown to this gateway" in refused[4].json()["error"]["message"]
        with pytest.raises(openai.PermissionDeniedError):
            gw.openai().vector_stores.list()
        # Stateless calls are relayed (the 503 is the upstream's, counted below).
        assert http.post("/openai/v1/embeddings", json={"input": "x"}).status_code == 503
        assert http.get("/v1/models/gpt-4.1").status_code == 503
        assert http.post("/v1/chat/completions", json={"model": "m"}).status_code == 503
        assert _fired(counted) == {
            "**/vector_stores**": 0,
            "**/made_up**": 0,
            "**/chat/completions**": 1,
            "**/models/**": 1,
            "**/embeddings": 1,
        }
    finally:
        gw.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/openai/v1/containers"),
        ("PATCH", "/v1/files/file-1"),
        ("POST", "/openai/v1/files/file-1"),
        ("GET", "/openai/v1/Containers/cntr_1/files"),
        ("GET", "/v1/FILES/file-1/content"),
        ("OPTIONS", "/openai/v1/responses/resp_1"),
        ("PUT", "/openai/threads/thread_1?api-version=2024-05-01-preview"),
    ],
    ids=[
        "put-containers",
        "patch-file",
        "post-file",
        "family-case",
        "files-case",
        "options-response",
        "legacy-put-thread",
    ],
)
def test_a_scoped_family_is_never_forwarded_by_the_catch_all(
    counted: RunningEmulator, tmp_path: Path, method: str, path: str
) -> None:
    """Verbs and spellings no scoped route takes (an upstream router may ignore case) get a
    404 and stay at the gateway, even when the operator allows every unscoped family."""
    counted.control.add_fault(path="**", status=503)
    gw = _gateway(counted, tmp_path, allow="*")
    try:
        r = gw.http().request(method, path)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert sum(_fired(counted).values()) == 0
    finally:
        gw.close()


@pytest.mark.parametrize("allow", ["vector_stores", "*"], ids=["named", "everything"])
def test_an_operator_can_allow_unscoped_families_explicitly(
    counted: RunningEmulator, tmp_path: Path, allow: str
) -> None:
    gw = _gateway(counted, tmp_path, allow=allow)
    try:
        http = gw.http()
        assert http.get("/openai/v1/vector_stores").status_code == 503
        assert http.delete("/v1/vector_stores/vs_1").status_code == 503
        made_up = http.get("/openai/v1/made_up")
        assert made_up.status_code == (503 if allow == "*" else 403)
        # The scoped APIs stay scoped.
        b = gw.openai(gw.add_tenant("b"))
        mine = gw.openai().containers.create(name="a's")
        assert mine.id not in {c.id for c in b.containers.list()}
        with pytest.raises(openai.NotFoundError):
            b.containers.retrieve(mine.id)
        assert _fired(counted)["**/vector_stores**"] == 2
    finally:
        gw.close()


def test_forwarded_answers_are_the_upstreams_in_every_url_form(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    gw = _gateway(emulator, tmp_path, allow="*")
    try:
        http = gw.http()
        direct = emulator.http_client()
        expected = direct.get("/openai/v1/no_such_resource", headers=emulator.auth_headers)
        for path in ("/openai/v1/no_such_resource", "/v1/no_such_resource"):
            through = http.get(path)
            assert (through.status_code, through.json()) == (404, expected.json())
        legacy = http.get("/openai/files", params={"api-version": "2025-04-01-preview"})
        assert (legacy.status_code, legacy.json()["object"]) == (200, "list")
        anonymous = gw.raw_http().get(f"{gw.url}/v1/models")
        assert anonymous.status_code == 401
    finally:
        gw.close()


@pytest.mark.parametrize(
    "allow",
    ["containers", "Files", "threads,vector_stores", "vector stores", "../x"],
    ids=["scoped", "scoped-other-case", "scoped-in-a-list", "space", "traversal"],
)
def test_allowing_a_scoped_family_or_a_bad_name_fails_at_start_up(allow: str) -> None:
    with pytest.raises(ConfigurationError, match=ALLOW_SETTING):
        GatewaySettings(allow_unscoped=allow)


def test_the_replaced_unscoped_setting_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIGATE_GATEWAY_UNSCOPED", "forward")
    with pytest.raises(ConfigurationError, match=ALLOW_SETTING) as caught:
        GatewaySettings.from_env(upstream="http://upstream")
    assert "'*'" in caught.value.hint


def test_method_and_path_override_headers_never_reach_the_upstream(tmp_path: Path) -> None:
    """Some servers and proxies take the method or path from these headers; the gateway
    classified the request by its own, so they are dropped."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"object": "list", "data": []})

    settings = on_local_disk(
        tmp_path,
        upstream="http://upstream.invalid",
        upstream_auth="none",
    )
    with GatewayHarness(settings) as gw:
        mock_upstream(gw, handler)
        tenant = gw.add_tenant("a")
        overrides: dict[str, Any] = {
            "X-HTTP-Method-Override": "DELETE",
            "X-HTTP-Method": "DELETE",
            "X-Method-Override": "DELETE",
            "X-Original-URL": "/openai/v1/containers/cntr_theirs",
            "X-Original-URI": "/openai/v1/containers/cntr_theirs",
            "X-Rewrite-URL": "/openai/v1/containers/cntr_theirs",
        }
        r = gw.client.post(
            "/openai/v1/embeddings", json={"input": "x"}, headers={**tenant.headers, **overrides}
        )
        assert r.status_code == 200
        assert len(seen) == 1
        assert not {k.lower() for k in overrides} & {k.lower() for k in seen[0].headers}
        assert seen[0].method == "POST"
        assert seen[0].url.path == "/openai/v1/embeddings"
