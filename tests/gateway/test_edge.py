"""The gateway's edge: a path is canonical or refused before any route, and what is forwarded
is spelt from the very segments the routes checked.

Non-canonical spellings go over a raw socket to a real server (no client normalises them); a
pass-through fault rule on the emulator counts every request that reaches the upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import pytest

from cigate.gateway.edge import parse_api_path
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import Upstream
from cigate.testing.plugin import RunningEmulator
from cigate.testing.rawhttp import RawClient
from cigate.testing.spellings import spellings
from cigate.web.paths import NonCanonicalPathError, split
from tests.gateway.conftest import live_settings, local_backend, on_local_disk
from tests.gateway.harness import GatewayHarness, mock_upstream
from tests.gateway.live import LiveGateway, add_tenant, start_gateway

pytestmark = [pytest.mark.storage]

LEGACY_QUERY = "api-version=2025-04-01-preview"
PROJECT = "/api/projects/proj"
#: Paths of every kind: each API prefix, scoped and unscoped families, the gateway's own.
PATHS = [
    ("/openai/v1/containers/cntr_x/files/cfile_y/content", ""),
    ("/v1/files/file-x/content", ""),
    ("/openai/assistants/asst_x", LEGACY_QUERY),
    ("/openai/v1/responses", ""),
    # A Foundry project's two surfaces (issue 12): the name in the prefix, and after it.
    ("/api/projects/proj/openai/v1/containers/cntr_x/files/cfile_y/content", ""),
    ("/api/projects/proj/openai/v1/responses", ""),
    ("/api/projects/proj/assistants/asst_x", "api-version=v1"),
    ("/api/projects/proj/threads/thread_x/runs", "api-version=v1"),
    ("/api/projects/proj/files/assistant-x/content", "api-version=v1"),
    ("/v1/vector_stores/vs_x", ""),
    ("/files/gwf_x/content", ""),
    ("/links/lnk_x", ""),
    ("/healthz", ""),
]
#: Refused by uvicorn's HTTP parser before any app sees them (400, plain text).
HTTP_LAYER = {"raw-non-ascii", "raw-space", "raw-tab"}


@pytest.fixture
def gateway(emulator: RunningEmulator, tmp_path: Path) -> Iterator[LiveGateway]:
    backend = local_backend(tmp_path)
    # The upstream is a Foundry project endpoint, so project paths are served (ProjectGate).
    settings = replace(live_settings(emulator, backend), upstream=f"{emulator.base_url}{PROJECT}")
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    emulator.control.add_fault(path="**")  # replaces nothing: counts what reaches it
    try:
        yield gw
    finally:
        emulator.control.clear_faults()
        gw.close()


def _at(path: str) -> tuple[int, ...]:
    """After the first segment and after every segment of the API prefix."""
    api = parse_api_path(path)
    return tuple(sorted({1, *range(1, api.prefix.count("/") + 1)})) if api else (1,)


def test_every_non_canonical_spelling_is_refused_before_any_route(
    gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    host, port = gateway.handle.host, gateway.handle.port
    tried = 0
    with RawClient(host, port) as raw:
        for path, query in PATHS:
            for spelling in spellings(path, at=_at(path), query=query)[1:]:
                for method in ("GET", "POST", "DELETE"):
                    r = raw.request(method, spelling.target, headers=gateway.tenant.headers)
                    tried += 1
                    where = (method, spelling.name, spelling.target)
                    if spelling.name in HTTP_LAYER:
                        assert r.status == 400, where
                        continue
                    error = r.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"}, where
                    if spelling.name == "api-version-twice":
                        assert (r.status, error["code"]) == (400, "invalid_query"), where
                    elif spelling.name.startswith("case-"):
                        # Canonical bytes, another path: unrouted (404/405), unknown (403).
                        assert r.status in (403, 404, 405), (where, r.status, r.body[:200])
                    else:
                        assert (r.status, error["code"]) == (404, "invalid_path"), where
    fired = sum(f["fired"] for f in emulator.control.faults())
    assert (tried, fired) == (tried, 0)
    assert tried > 1000


@pytest.mark.parametrize(
    "raw_path",
    [b"/openai/v1/files/\x00", "/v1/files/é".encode(), b"/v1/files/a b", b"/v1/files/a\\b"],
    ids=["raw-nul", "raw-utf8", "raw-space", "raw-backslash"],
)
def test_bytes_a_lenient_server_would_pass_are_refused_by_the_edge_itself(
    tmp_path: Path, raw_path: bytes
) -> None:
    """uvicorn's parser stops these; another ASGI server might not, so the edge checks too."""
    settings = on_local_disk(
        tmp_path,
        upstream="http://127.0.0.1:9",
        upstream_auth="none",
    )
    with GatewayHarness(settings) as gw:
        sent: list[dict[str, Any]] = []

        async def call() -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "server": ("testserver", 80),
                "client": ("127.0.0.1", 1),
                "root_path": "",
                "path": raw_path.decode("latin-1"),
                "raw_path": raw_path,
                "query_string": b"",
                "headers": [(b"host", b"testserver")],
                "state": {},
            }

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await gw.app(scope, receive, send)

        gw.call(call)
        assert sent[0]["status"] == 404
        assert b'"invalid_path"' in sent[1]["body"]


def test_routes_see_the_decoded_path_once(tmp_path: Path) -> None:
    """A by-path download of a name with spaces, accents and ``+``: escaped once on the wire,
    decoded once for the route; escaped twice, it is refused, not decoded again."""
    settings = on_local_disk(
        tmp_path,
        upstream="http://127.0.0.1:9",
        upstream_auth="none",
    )
    with GatewayHarness(settings) as gw:
        tenant = gw.add_tenant("a")
        response_id = "resp_" + "e" * 48
        gw.put_file(tenant, b"accented", "a b été+x.txt", response_id=response_id)
        base = f"/responses/{response_id}/files/by-path"
        once = gw.client.get(f"{base}/a%20b%20%C3%A9t%C3%A9%2Bx.txt", headers=tenant.headers)
        assert (once.status_code, once.content) == (200, b"accented")
        twice = gw.client.get(f"{base}/a%2520b%2520%C3%A9t%C3%A9.txt", headers=tenant.headers)
        assert (twice.status_code, twice.json()["error"]["code"]) == (404, "invalid_path")


def test_the_upstream_gets_the_checked_segments_spelt_one_way(tmp_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={})

    settings = on_local_disk(
        tmp_path,
        upstream="http://upstream.invalid",
        upstream_auth="none",
        allow_unscoped="made_up",
    )
    with GatewayHarness(settings) as gw:
        mock_upstream(gw, handler)
        tenant = gw.add_tenant("a")
        for path, query in [
            ("/v1/made_up/a%20b/%C3%A9/c,d%3Be", ""),  # an escaped ';' is data
            ("/openai/v1/made_up/x+y/%3A", ""),
            ("/openai/made_up/z", LEGACY_QUERY),
        ]:
            r = gw.client.get(f"{path}?{query}" if query else path, headers=tenant.headers)
            assert r.status_code == 200, (path, r.text)
        assert [(r.url.raw_path.partition(b"?")[0], r.url.query) for r in seen] == [
            (b"/openai/v1/made_up/a%20b/%C3%A9/c%2Cd%3Be", b""),
            (b"/openai/v1/made_up/x%2By/%3A", b""),
            (b"/openai/made_up/z", LEGACY_QUERY.encode()),
        ]
        for request in seen:
            assert split(request.url.raw_path.partition(b"?")[0])  # canonical upstream too


def test_a_hostile_id_from_the_upstream_never_becomes_more_path() -> None:
    """Ids the harvester reads from answers (container, file) are single segments."""
    upstream = Upstream(GatewaySettings(upstream="http://u.invalid", upstream_auth="none"))
    try:
        for hostile in ("cntr_1/../cntr_2", "..", "cntr_1%2F..", "cntr\\1", ""):
            with pytest.raises(NonCanonicalPathError):
                upstream.v1_url("containers", hostile, "files")
        assert upstream.v1_url("containers", "cntr_1", "files") == (
            "http://u.invalid/openai/v1/containers/cntr_1/files"
        )
    finally:
        asyncio.run(upstream.aclose())
