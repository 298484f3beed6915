"""Foundry project routes through the gateway (issue 12): which upstream URL each one reaches,
that only the upstream's own project is served, and that the token scope follows the upstream.

The upstream is a recording ``MockTransport``: every request that left the gateway is in
``seen``, so "refused" means refused before anything went upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cigate.exceptions import ConfigurationError
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import Upstream
from cigate.web.paths import split
from tests.gateway.conftest import on_local_disk
from tests.gateway.harness import GatewayHarness, mock_upstream

pytestmark = [pytest.mark.storage]

UPSTREAM = "http://upstream.invalid/api/projects/proj"


def _settings(tmp_path: Path, upstream: str = UPSTREAM) -> GatewaySettings:
    return on_local_disk(
        tmp_path,
        upstream=upstream,
        upstream_auth="none",
    )


class Recorder:
    """The upstream: answers every create with a fresh id, lists with an empty page."""

    def __init__(self) -> None:
        self.seen: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        family = request.url.path.rstrip("/").split("/")[-1]
        if request.method == "POST":
            return httpx2.Response(200, json={"id": f"{family}_{len(self.seen)}", "object": "x"})
        return httpx2.Response(200, json={"object": "list", "data": [], "has_more": False})

    @property
    def targets(self) -> list[tuple[str, bytes, bytes]]:
        return [(r.method, *r.url.raw_path.partition(b"?")[::2]) for r in self.seen]


@pytest.fixture
def project_gateway(tmp_path: Path) -> Iterator[tuple[GatewayHarness, Recorder]]:
    upstream = Recorder()
    with GatewayHarness(_settings(tmp_path)) as gw:
        mock_upstream(gw, upstream)
        yield gw, upstream


def test_each_project_surface_reaches_the_same_surface_of_the_upstream_project(
    project_gateway: tuple[GatewayHarness, Recorder],
) -> None:
    gw, upstream = project_gateway
    tenant = gw.add_tenant("a")
    calls = [
        ("POST", "/api/projects/proj/assistants?api-version=v1", {"model": "m"}),
        ("POST", "/api/projects/proj/threads?api-version=2025-05-01", {}),
        ("GET", "/api/projects/proj/files?api-version=v1", None),
        ("POST", "/api/projects/proj/openai/v1/containers", {"name": "c"}),
        ("GET", "/api/projects/proj/openai/v1/files", None),
        ("POST", "/openai/v1/containers", {"name": "c"}),  # the resource forms: the project too
        ("GET", "/v1/files", None),
    ]
    for method, url, body in calls:
        r = gw.client.request(method, url, headers=tenant.headers, json=body)
        assert r.status_code == 200, (method, url, r.text)
    assert upstream.targets == [
        ("POST", b"/api/projects/proj/assistants", b"api-version=v1"),
        ("POST", b"/api/projects/proj/threads", b"api-version=2025-05-01"),
        # A tenant's listing is filtered: the gateway reads the upstream's in full pages.
        ("GET", b"/api/projects/proj/files", b"api-version=v1&limit=100"),
        ("POST", b"/api/projects/proj/openai/v1/containers", b""),
        ("GET", b"/api/projects/proj/openai/v1/files", b"limit=100"),
        ("POST", b"/api/projects/proj/openai/v1/containers", b""),
        ("GET", b"/api/projects/proj/openai/v1/files", b"limit=100"),
    ]
    for request in upstream.seen:
        assert split(request.url.raw_path.partition(b"?")[0])  # canonical upstream too
        assert "authorization" not in request.headers  # the tenant's key never goes up


def test_objects_created_on_one_surface_are_the_tenants_on_every_other(
    project_gateway: tuple[GatewayHarness, Recorder],
) -> None:
    """One ownership record per id: the classic project form, its v1 form and /v1 agree."""
    gw, _ = project_gateway
    a, b = gw.add_tenant("a"), gw.add_tenant("b")
    made = gw.client.post(
        "/api/projects/proj/assistants?api-version=v1", headers=a.headers, json={"model": "m"}
    ).json()["id"]
    for url in (
        f"/api/projects/proj/assistants/{made}?api-version=v1",
        f"/api/projects/proj/openai/v1/assistants/{made}",
        f"/v1/assistants/{made}",
    ):
        assert gw.client.get(url, headers=a.headers).status_code == 200, url
        refused = gw.client.get(url, headers=b.headers)
        assert refused.status_code == 404, (url, refused.text)
        assert made in refused.json()["error"]["message"]  # the id B sent, nothing else


@pytest.mark.parametrize(
    "path",
    [
        "/api/projects/other/assistants?api-version=v1",
        "/api/projects/other/openai/v1/files",
        "/api/projects/PROJ/files?api-version=v1",
        "/api/projects/proj2/threads/thread_1/runs?api-version=v1",
        "/api/projects/other/openai/v1/responses",
        "/api/projects/other/made_up",
    ],
    ids=["classic", "v1", "case", "longer-name", "responses", "unknown-family"],
)
def test_another_projects_path_is_refused_before_anything_goes_upstream(
    project_gateway: tuple[GatewayHarness, Recorder], path: str
) -> None:
    gw, upstream = project_gateway
    tenant = gw.add_tenant("a")
    for method in ("GET", "POST", "DELETE"):
        r = gw.client.request(method, path, headers=tenant.headers, json={})
        assert r.status_code == 404, (method, path, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert "project does not exist" in error["message"]
    assert upstream.seen == []


def test_a_caller_without_a_key_learns_no_project_name(
    project_gateway: tuple[GatewayHarness, Recorder],
) -> None:
    """The right project and a wrong one answer a missing or unknown key alike: 401."""
    gw, upstream = project_gateway
    for path in ("/api/projects/proj/files", "/api/projects/other/files"):
        for headers in ({}, {"authorization": "Bearer not-a-key"}, {"api-key": "nope"}):
            r = gw.client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert "project" not in r.json()["error"]["message"]
    assert upstream.seen == []


@pytest.mark.parametrize(
    "path",
    [
        "/API/projects/proj/files",
        "/api/Projects/proj/files",
        "/api/projects/proj/OpenAI/v1/files",
        "/api/projects/proj/openai/V1/files",
        "/Api/Projects/proj/openai/v1/responses",
    ],
    ids=["api", "projects", "openai", "v1", "mixed"],
)
def test_every_letter_case_of_the_project_prefix_is_refused_at_the_edge(
    project_gateway: tuple[GatewayHarness, Recorder], path: str
) -> None:
    """Azure's router ignores case; ours must not read ``OpenAI/v1`` as a classic family."""
    gw, upstream = project_gateway
    tenant = gw.add_tenant("a")
    r = gw.client.get(path, headers=tenant.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "invalid_path"), r.text
    assert upstream.seen == []


def test_project_paths_are_refused_when_the_upstream_is_not_a_project(tmp_path: Path) -> None:
    upstream = Recorder()
    with GatewayHarness(_settings(tmp_path, "http://upstream.invalid")) as gw:
        mock_upstream(gw, upstream)
        tenant = gw.add_tenant("a")
        for path in ("/api/projects/p/assistants?api-version=v1", "/api/projects/p/openai/v1/x"):
            r = gw.client.get(path, headers=tenant.headers)
            assert r.status_code == 404, r.text
            assert "not a Foundry project endpoint" in r.json()["error"]["message"]
        assert gw.client.get("/v1/files", headers=tenant.headers).status_code == 200
    assert upstream.targets == [("GET", b"/openai/v1/files", b"limit=100")]


class _Credential:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str) -> Any:
        self.scopes.append(scopes)
        return type("T", (), {"token": "t", "expires_on": 2**40})()

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("upstream", "scope", "expected"),
    [
        (UPSTREAM, "", "https://ai.azure.com/.default"),
        ("https://res.services.ai.azure.com/api/projects/p/", "", "https://ai.azure.com/.default"),
        ("https://res.openai.azure.com", "", "https://cognitiveservices.azure.com/.default"),
        (UPSTREAM, "https://ml.azure.com/.default", "https://ml.azure.com/.default"),
    ],
    ids=["project", "project-trailing-slash", "resource", "explicit"],
)
def test_the_upstream_token_scope_follows_the_upstream(
    upstream: str, scope: str, expected: str
) -> None:
    settings = GatewaySettings(upstream=upstream, upstream_auth="entra", upstream_scope=scope)
    credential = _Credential()
    client = Upstream(settings, credential=credential)
    try:
        assert asyncio.run(client.auth_headers()) == {"authorization": "Bearer t"}
    finally:
        asyncio.run(client.aclose())
    assert credential.scopes == [(expected,)]


@pytest.mark.parametrize(
    "upstream",
    [
        "https://res.services.ai.azure.com/api/projects",
        "https://res.services.ai.azure.com/api/projects/p/openai/v1",
        "https://res.services.ai.azure.com/api/projects/p/assistants",
        "https://res.services.ai.azure.com/api/projects/%2e%2e",
        "https://res.services.ai.azure.com/api/other",
    ],
    ids=["no-name", "v1-surface", "below-project", "escaped-dots", "other-api"],
)
def test_an_upstream_under_api_that_is_not_a_project_endpoint_fails_at_start_up(
    upstream: str,
) -> None:
    with pytest.raises(ConfigurationError, match="not a Foundry project endpoint"):
        GatewaySettings(upstream=upstream)


def test_the_harvest_reads_the_projects_v1_surface() -> None:
    """Container files a project response made are fetched from that project."""
    client = Upstream(GatewaySettings(upstream=UPSTREAM, upstream_auth="none"))
    try:
        assert client.v1_url("containers", "cntr_1", "files", "cfile_2", "content") == (
            f"{UPSTREAM}/openai/v1/containers/cntr_1/files/cfile_2/content"
        )
        assert client.url("project", ("files", "assistant-1")) == f"{UPSTREAM}/files/assistant-1"
    finally:
        asyncio.run(client.aclose())
