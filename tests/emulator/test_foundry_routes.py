"""Foundry project endpoints on the emulator: which credentials, which api-versions, and that
auth is checked before any 404, with a JSON body on every refusal (foundry-wire 1, 4, 5, 7)."""

from __future__ import annotations

from typing import Any

import pytest

from cigate.emulator.auth import make_test_jwt
from cigate.testing.plugin import RunningEmulator

PROJECT = "/api/projects/42"
HUB = (
    "/agents/v1.0/subscriptions/sub/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/42"
)
AI, ML, COG = "https://ai.azure.com", "https://ml.azure.com", "https://cognitiveservices.azure.com"
#: (surface, a path that exists there, an unknown one, the query it needs)
SURFACES = {
    "project-classic": (f"{PROJECT}/assistants", f"{PROJECT}/nope", "api-version=v1"),
    "project-v1": (f"{PROJECT}/openai/v1/containers", f"{PROJECT}/openai/v1/nope", ""),
    "project-preview": (
        f"{PROJECT}/openai/files",
        f"{PROJECT}/openai/nope",
        "api-version=2025-11-15-preview",
    ),
    "hub": (f"{HUB}/assistants", f"{HUB}/nope", "api-version=2024-12-01-preview"),
}


def _bearer(aud: str, **claims: Any) -> dict[str, str]:
    return {"authorization": "Bearer " + make_test_jwt(aud=aud, **claims)}


def _foundry_401(aud: str) -> dict[str, Any]:
    return {
        "statusCode": 401,
        "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
        f"({aud}), or have expired.",
    }


@pytest.mark.parametrize("surface", list(SURFACES), ids=list(SURFACES))
@pytest.mark.parametrize(
    ("credential", "accepted"),
    [
        ("ai-token", {"project-classic", "project-v1", "project-preview", "hub"}),
        ("ml-token", {"hub"}),
        ("cognitiveservices-token", set()),
        ("expired-ai-token", set()),
        ("api-key", {"project-classic", "project-v1", "project-preview", "hub"}),
        ("none", set()),
    ],
    ids=["ai-token", "ml-token", "cognitiveservices-token", "expired-ai-token", "api-key", "none"],
)
def test_project_surfaces_take_foundry_audiences_and_check_auth_before_any_404(
    emulator: RunningEmulator, surface: str, credential: str, accepted: set[str]
) -> None:
    headers = {
        "ai-token": _bearer(AI),
        "ml-token": _bearer(ML),
        "cognitiveservices-token": _bearer(COG),
        "expired-ai-token": _bearer(AI, exp=1),
        "api-key": emulator.auth_headers,
        "none": {},
    }[credential]
    known, unknown, query = SURFACES[surface]
    http = emulator.http_client(headers=headers)
    for path in (known, unknown):
        r = http.get(f"{path}?{query}" if query else path)
        if surface in accepted:
            assert r.status_code == (200 if path == known else 404), (path, r.text)
            if path == unknown:
                assert r.json() == {"error": {"code": "404", "message": "Resource not found"}}
        else:
            wanted = ML if surface == "hub" else AI
            assert (r.status_code, r.json()) == (401, _foundry_401(wanted)), (path, r.text)


def test_a_wrong_api_key_on_a_project_is_azures_key_refusal(emulator: RunningEmulator) -> None:
    r = emulator.http_client(headers={"api-key": "not-a-key"}).get(
        f"{PROJECT}/threads/thread_x?api-version=v1"
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "401"


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("api-version=v1", 200, None),
        ("api-version=2025-05-01", 200, None),
        ("api-version=2025-05-15-preview", 200, None),
        ("api-version=2024-12-01-preview", 200, None),
        ("", 400, "Missing required query parameter: api-version"),
        ("api-version=", 400, "API version not supported"),
        ("api-version=preview", 400, "API version not supported"),
        ("api-version=v2", 400, "API version not supported"),
        ("API-Version=v1&api-version=v1", 400, "API version not supported"),
    ],
    ids=[
        "v1",
        "2025-05-01",
        "2025-05-15-preview",
        "2024-12-01-preview",
        "missing",
        "empty",
        "preview",
        "v2",
        "twice",
    ],
)
def test_the_classic_project_surface_needs_v1_or_a_dated_api_version(
    emulator: RunningEmulator, query: str, status: int, message: str | None
) -> None:
    http = emulator.http_client(headers=_bearer(AI))
    r = http.get(f"{PROJECT}/assistants" + (f"?{query}" if query else ""))
    assert r.status_code == status, r.text
    if message is not None:
        assert r.json() == {"error": {"code": "BadRequest", "message": message}}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("api-version=2025-11-15-preview", 200),
        ("api-version=2025-04-01-preview", 200),
        ("", 400),
        ("api-version=v1", 400),
        ("api-version=preview", 400),
    ],
    ids=["2025-11-15-preview", "other-date", "missing", "v1", "preview"],
)
def test_the_project_preview_surface_takes_a_dated_api_version_only(
    emulator: RunningEmulator, query: str, status: int
) -> None:
    http = emulator.http_client(headers=_bearer(AI))
    r = http.get(f"{PROJECT}/openai/files" + (f"?{query}" if query else ""))
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["code"] == "BadRequest"


@pytest.mark.parametrize(
    "query",
    ["api-version=v1", "api-version=2025-04-01-preview", "api-version=", "Api-Version=preview"],
    ids=["v1", "dated", "empty", "other-case"],
)
def test_the_project_openai_v1_surface_refuses_any_api_version(
    emulator: RunningEmulator, query: str
) -> None:
    r = emulator.http_client(headers=_bearer(AI)).get(f"{PROJECT}/openai/v1/files?{query}")
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "code": "BadRequest",
            "message": "api-version query parameter is not allowed when using /v1 path",
        }
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"{PROJECT}/assistants?api-version=v1"),
        ("PATCH", f"{PROJECT}/openai/v1/files"),
        ("GET", f"{PROJECT}/files/assistant-nope?api-version=v1"),
        ("GET", f"{PROJECT}/openai/v1/containers/cntr_nope"),
        ("POST", f"{PROJECT}/threads?api-version=v1"),
        ("GET", "/api/projects"),
        ("GET", "/api/projects/42"),
        ("GET", "/agents/v1.0/subscriptions"),
    ],
    ids=[
        "method",
        "v1-method",
        "no-file",
        "no-container",
        "bad-body",
        "no-project",
        "project-root",
        "hub-stub",
    ],
)
def test_every_refusal_on_a_project_path_is_json(
    emulator: RunningEmulator, method: str, path: str
) -> None:
    """azure-ai-agents crashes with a JSONDecodeError on a non-JSON error body (foundry-wire 5)."""
    http = emulator.http_client(headers={**_bearer(AI), "content-type": "application/json"})
    r = http.request(method, path, content=b"[1,")
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "error" in r.json()


def test_one_state_behind_every_project_and_every_surface(emulator: RunningEmulator) -> None:
    """Any project name is accepted; all see the one emulator (documented in docs/foundry.md)."""
    http = emulator.http_client(headers=_bearer(AI))
    made = http.post(
        f"{PROJECT}/openai/v1/files",
        files={"file": ("a.txt", b"shared")},
        data={"purpose": "assistants"},
    ).json()
    assert made["id"].startswith("assistant-")
    for path in (
        f"/api/projects/other/files/{made['id']}/content?api-version=v1",
        f"{HUB}/files/{made['id']}/content?api-version=2024-12-01-preview",
        f"/openai/v1/files/{made['id']}/content",
    ):
        headers = _bearer(ML) if path.startswith("/agents") else emulator.auth_headers
        r = emulator.http_client(headers=headers).get(path)
        assert (r.status_code, r.content) == (200, b"shared"), path


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("resource=https://ai.azure.com", {"x-identity-header": "x"}, 200),
        ("resource=https://ai.azure.com", {}, 400),
        ("resource=http://ai.azure.com", {"x-identity-header": "x"}, 400),
        ("", {"x-identity-header": "x"}, 400),
    ],
    ids=["ok", "no-identity-header", "not-https", "no-resource"],
)
def test_the_identity_endpoint_mints_tokens_for_the_resource_asked_for(
    emulator: RunningEmulator, query: str, headers: dict[str, str], status: int
) -> None:
    http = emulator.http_client()
    r = http.get(f"/_emulator/identity/token?api-version=2019-08-01&{query}", headers=headers)
    assert r.status_code == status, r.text
    if status != 200:
        assert "error" in r.json()
        return
    body = r.json()
    assert (body["resource"], body["token_type"]) == ("https://ai.azure.com", "Bearer")
    assert int(body["expires_on"]) > 0
    bearer = {"authorization": f"Bearer {body['access_token']}"}
    assert http.get(f"{PROJECT}/threads?api-version=v1", headers=bearer).status_code == 200
    assert http.get("/openai/v1/files", headers=bearer).status_code == 200  # ai.azure.com too


@pytest.mark.parametrize(
    "path",
    ["/api/projects", "/api/projects/42", "/api/nope", "/agents/v1.0/subscriptions"],
    ids=["projects", "project-root", "other-api", "hub-stub"],
)
def test_a_foundry_path_that_names_no_resource_is_authenticated_before_its_404(
    emulator: RunningEmulator, path: str
) -> None:
    anonymous = emulator.http_client().get(path)
    assert (anonymous.status_code, anonymous.json()) == (401, _foundry_401(AI))
    known = emulator.http_client(headers=_bearer(AI)).get(path)
    assert known.status_code == 404
    assert known.json() == {"error": {"code": "404", "message": "Resource not found"}}
