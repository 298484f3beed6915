"""The emulator's edge: every prefix, spelt any non-canonical way, is refused and never routed.

Requests go over a raw socket to the session's real server (no client normalises them). That
nothing was routed is shown by state: POSTs that would create containers created none, POSTs
to ``/_emulator/reset`` reset nothing, and a pass-through fault rule saw no request.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from cigate.testing.plugin import RunningEmulator
from cigate.testing.rawhttp import RawClient, RawResponse
from cigate.testing.spellings import spellings

RESOURCE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
VERSION_NOT_SUPPORTED = {"error": {"code": "BadRequest", "message": "API version not supported"}}
VERSION_NOT_ALLOWED = {
    "error": {
        "code": "BadRequest",
        "message": "api-version query parameter is not allowed when using /v1 path",
    }
}
LEGACY = "api-version=2025-04-01-preview"
#: A project name no letter-case rule changes (so "case-…" spellings hit only prefixes).
PROJECT = "/api/projects/42"
HUB = (
    "/agents/v1.0/subscriptions/5ub/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/42"
)
HTTP_LAYER = {"raw-non-ascii", "raw-space", "raw-tab"}


def _paths(container_id: str, file_id: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(path, query, where to split) for each prefix and the control plane."""
    return [
        ("/openai/v1/containers", "", (1, 2)),
        (f"/openai/v1/containers/{container_id}/files/{file_id}/content", "", (2,)),
        ("/openai/files", LEGACY, (1,)),
        ("/v1/containers", "", (1,)),
        (f"/v1/containers/{container_id}/files", "", (1,)),
        ("/_emulator/reset", "", (1,)),
        (f"{PROJECT}/openai/v1/containers", "", (3, 5)),
        (f"{PROJECT}/openai/v1/containers/{container_id}/files", "", (2, 4)),
        (f"{PROJECT}/threads", "api-version=v1", (1, 3)),
        (f"{PROJECT}/openai/files", "api-version=2025-11-15-preview", (3,)),
        (f"{HUB}/threads", "api-version=2024-12-01-preview", (2, 9)),
    ]


def _expect_refusal(name: str, target: bytes, r: RawResponse) -> None:
    where = (name, target, r.status, r.body[:200])
    if name in HTTP_LAYER:
        assert r.status == 400, where  # uvicorn's parser: never reaches the app
        return
    body: Any = r.json()
    # /openai, /api, /agents in any spelling: Azure's shapes
    azure = re.match(rb"/*(openai|api(?![a-z0-9])|agents(?![a-z0-9]))", target, re.I) is not None
    if name == "api-version-twice":
        if target.startswith(PROJECT.encode() + b"/openai/v1/"):
            assert (r.status, body) == (400, VERSION_NOT_ALLOWED), where
        elif target.startswith((b"/openai/v1/", b"/api/", b"/agents/")):
            assert (r.status, body) == (400, VERSION_NOT_SUPPORTED), where
        elif azure:
            assert (r.status, body) == (404, RESOURCE_NOT_FOUND), where
        else:
            assert (r.status, body["error"]["param"]) == (400, "api-version"), where
    elif name.startswith("case-"):
        assert r.status in (404, 405), where  # canonical bytes, a path nothing routes
    elif azure:
        assert (r.status, body) == (404, RESOURCE_NOT_FOUND), where
    else:
        assert r.status == 404, where
        assert body["error"]["message"].startswith("Invalid URL ("), where
        assert body["error"]["type"] == "invalid_request_error", where


def test_every_prefix_spelt_any_non_canonical_way_is_refused_and_never_routed(
    emulator: RunningEmulator,
) -> None:
    sdk = emulator.openai()
    container = sdk.containers.create(name="kept")
    upload = sdk.containers.files.create(container.id, file=("kept.txt", b"kept"))
    cases = [
        spelling
        for path, query, at in _paths(container.id, upload.id)
        for spelling in spellings(path, at=at, query=query)[1:]
    ]
    # Letter case of a segment after a prefix is canonical (another path, unrouted): sent last,
    # after the count of what got past the edge.
    cases.sort(key=lambda s: s.name.startswith("case-"))
    emulator.control.add_fault(path="**")  # replaces nothing: counts what gets past the edge
    tried, fired = 0, None
    with RawClient(emulator.handle.host, emulator.handle.port) as raw:
        for spelling in cases:
            if spelling.name.startswith("case-") and fired is None:
                fired = sum(f["fired"] for f in emulator.control.faults())
                emulator.control.clear_faults()
            for method, body in (("GET", b""), ("POST", b'{"name": "made by a detour"}')):
                r = raw.request(
                    method,
                    spelling.target,
                    headers={**emulator.auth_headers, "content-type": "application/json"},
                    body=body,
                )
                tried += 1
                _expect_refusal(spelling.name, spelling.target, r)
    assert tried > 1000
    assert fired == 0
    # Nothing was created, and the control plane never reset the state.
    assert [c.id for c in sdk.containers.list()] == [container.id]
    content = sdk.containers.files.content.retrieve(upload.id, container_id=container.id)
    assert content.read() == b"kept"


@pytest.mark.parametrize(
    "raw_path",
    [b"/openai/v1/files\x00", "/v1/files/é".encode(), b"/v1/fi les", b"/_emulator/reset\\x"],
    ids=["raw-nul", "raw-utf8", "raw-space", "raw-backslash"],
)
def test_bytes_a_lenient_server_would_pass_are_refused_by_the_edge_itself(
    emulator: RunningEmulator, raw_path: bytes
) -> None:
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
            "root_path": "",
            "path": raw_path.decode("latin-1"),
            "raw_path": raw_path,
            "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"api-key", emulator.api_key.encode())],
            "state": {},
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await emulator.app(scope, receive, send)

    emulator.run_on_loop(call())
    assert sent[0]["status"] == 404
    assert b"Resource not found" in sent[1]["body"] or b"Invalid URL" in sent[1]["body"]


def test_canonical_paths_work_for_the_sdk_in_every_url_form(emulator: RunningEmulator) -> None:
    """The edge lets every path the official SDK builds through, with queries."""
    v1 = emulator.openai()
    container = v1.containers.create(name="edge")
    made = v1.containers.files.create(container.id, file=("é t+x.txt", b"edge"))
    assert made.path.endswith("é t+x.txt")
    listed = v1.containers.files.list(container_id=container.id, order="asc", limit=5)
    assert [f.id for f in listed] == [made.id]
    plain = emulator.openai(base_url=emulator.openai_url)
    assert plain.containers.retrieve(container.id).name == "edge"
    dated = emulator.azure_openai()
    uploaded = dated.files.create(file=("notes.txt", b"n"), purpose="assistants")
    assert dated.files.retrieve(uploaded.id).filename == "notes.txt"
    preview = emulator.azure_openai(api_version="preview", base_url=emulator.v1_url)
    assert preview.files.content(uploaded.id).read() == b"n"
