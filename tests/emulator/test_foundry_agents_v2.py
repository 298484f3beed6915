"""Foundry agents (v2) over REST: versions, paging as azure-core pages, name and definition
checks, and responses run with an agent version (``agent_reference`` or the preview ``agent``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from cigate.emulator.auth import make_test_jwt
from cigate.testing.plugin import RunningEmulator

P = "/api/projects/42"
V = "api-version=v1"
TOOLS = [{"type": "code_interpreter", "container": {"type": "auto"}}]


@pytest.fixture
def http(emulator: RunningEmulator) -> httpx2.Client:
    token = make_test_jwt(aud="https://ai.azure.com")
    return emulator.http_client(headers={"authorization": f"Bearer {token}"})


def _version(http: httpx2.Client, name: str, **definition: Any) -> dict[str, Any]:
    body = {"definition": {"kind": "prompt", "model": "gpt-4.1", **definition}}
    r = http.post(f"{P}/agents/{name}/versions?{V}", json=body)
    assert r.status_code == 200, r.text  # the SDK refuses 201
    result: dict[str, Any] = r.json()
    return result


def _all_pages(http: httpx2.Client, path: str) -> tuple[list[str], int]:
    """Page as azure-core does: ``after=last_id`` until ``last_id`` is null (bounded)."""
    seen: list[str] = []
    after = None
    for requests in range(1, 50):
        query = f"{V}&limit=2" + (f"&after={quote(after)}" if after else "")
        body = http.get(f"{path}?{query}").json()
        seen += [item["id"] for item in body["data"]]
        after = body["last_id"]
        if not after:
            assert body["data"] == []
            return seen, requests
    raise AssertionError("paging never ended")


def test_versions_are_numbered_listed_paged_and_deleted(http: httpx2.Client) -> None:
    made = [_version(http, "Helper", instructions=f"v{i}") for i in range(3)]
    assert [(v["id"], v["version"], v["object"]) for v in made] == [
        ("Helper:1", "1", "agent.version"),
        ("Helper:2", "2", "agent.version"),
        ("Helper:3", "3", "agent.version"),
    ]
    ids, requests = _all_pages(http, f"{P}/agents/Helper/versions")
    assert ids == ["Helper:3", "Helper:2", "Helper:1"]  # newest first
    assert requests == 3  # two pages, then the empty one that ends azure-core's loop
    agent = http.get(f"{P}/agents/Helper?{V}").json()
    assert (agent["object"], agent["name"], agent["versions"]["latest"]["version"]) == (
        "agent",
        "Helper",
        "3",
    )
    deleted = http.delete(f"{P}/agents/Helper/versions/3?{V}")
    assert deleted.json() == {
        "object": "agent.version.deleted",
        "name": "Helper",
        "version": "3",
        "deleted": True,
    }
    assert http.get(f"{P}/agents/Helper?{V}").json()["versions"]["latest"]["version"] == "2"
    assert _version(http, "Helper")["version"] == "4"  # never renumbered
    r = http.delete(f"{P}/agents/Helper?{V}")
    assert r.json() == {"object": "agent.deleted", "name": "Helper", "deleted": True}
    gone = http.get(f"{P}/agents/Helper/versions/2?{V}")
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == "Agent 'Helper' not found."
    assert _all_pages(http, f"{P}/agents") == ([], 1)


@pytest.mark.parametrize(
    "name",
    ["-lead", "trail-", "a" * 64, "sp ace", "und_erscore", "dot.ted", "é", "colon:1"],
    ids=[
        "lead-hyphen",
        "trail-hyphen",
        "too-long",
        "space",
        "underscore",
        "dot",
        "non-ascii",
        "colon",
    ],
)
def test_agent_names_outside_the_documented_rule_are_refused(
    http: httpx2.Client, name: str
) -> None:
    r = http.post(
        f"{P}/agents/{quote(name, safe='')}/versions?{V}",
        json={"definition": {"kind": "prompt", "model": "gpt-4.1"}},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "agent_name"
    assert http.get(f"{P}/agents?{V}").json()["data"] == []


@pytest.mark.parametrize(
    ("definition", "param"),
    [
        (None, "definition"),
        ({"kind": "prompt"}, "definition.model"),
        ({"kind": "workflow", "model": "m"}, "definition.kind"),
        (
            {"kind": "prompt", "model": "m", "tools": {"type": "code_interpreter"}},
            "definition.tools",
        ),
    ],
    ids=["missing", "no-model", "other-kind", "tools-not-a-list"],
)
def test_bad_definitions_are_400_naming_the_field(
    http: httpx2.Client, definition: Any, param: str
) -> None:
    r = http.post(f"{P}/agents/Ok/versions?{V}", json={"definition": definition})
    assert (r.status_code, r.json()["error"]["param"]) == (400, param)


@pytest.mark.parametrize("key", ["agent_reference", "agent"], ids=["agent_reference", "agent"])
def test_a_response_runs_with_the_agent_versions_model_instructions_and_tools(
    emulator: RunningEmulator, http: httpx2.Client, key: str
) -> None:
    _version(http, "Coder", model="gpt-4o-mini", instructions="first", tools=TOOLS)
    _version(http, "Coder", model="gpt-4.1", instructions="second", tools=TOOLS)
    client = emulator.openai(base_url=emulator.project_url("42", tls=False) + "/openai/v1/")
    code = "```python\nprint(6 * 7)\n```"
    latest = client.responses.create(
        input=code, extra_body={key: {"type": "agent_reference", "name": "Coder"}}
    )
    assert (latest.model, latest.instructions) == ("gpt-4.1", "second")
    assert latest.tools[0].type == "code_interpreter"
    assert any(item.type == "code_interpreter_call" for item in latest.output)
    extra = latest.model_extra or {}
    assert extra["agent_reference"] == {"type": "agent_reference", "name": "Coder", "version": "2"}
    pinned = client.responses.create(
        input=code, extra_body={key: {"type": "agent_reference", "name": "Coder", "version": "1"}}
    )
    assert (pinned.model, pinned.instructions) == ("gpt-4o-mini", "first")
    with pytest.raises(Exception, match="Version '7' of agent 'Coder' not found"):
        client.responses.create(
            input="hi", extra_body={key: {"type": "agent_reference", "name": "Coder", "version": 7}}
        )


@pytest.mark.parametrize(
    ("reference", "param", "message"),
    [
        ("Coder", "agent_reference", "expected an object with a 'name'"),
        ({"type": "agent_reference"}, "agent_reference", "expected an object with a 'name'"),
        ({"name": 7}, "agent_reference", "expected an object with a 'name'"),
        ({"name": "Coder", "type": "prompt"}, "agent_reference.type", "Invalid value: 'prompt'"),
    ],
    ids=["a-string", "no-name", "name-not-a-string", "other-type"],
)
def test_a_malformed_agent_reference_is_400_naming_it_and_nothing_runs(
    emulator: RunningEmulator,
    http: httpx2.Client,
    reference: Any,
    param: str,
    message: str,
) -> None:
    _version(http, "Coder", tools=TOOLS)
    r = http.post(f"{P}/openai/v1/responses", json={"input": "hi", "agent_reference": reference})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], message in error["message"]) == (param, True)
    listed = emulator.openai().containers.list()
    assert list(listed) == []  # no auto container was made for a refused request


def test_the_preview_rest_flow_runs_with_the_agent_key_and_a_conversation(
    http: httpx2.Client,
) -> None:
    """Foundry's REST quickstarts (and azure-ai-projects 2.0.0b1-b3): ``…/openai/…`` with
    ``api-version=2025-11-15-preview`` and ``"agent": {"type": "agent_reference", …}``."""
    _version(http, "Coder", tools=TOOLS)
    preview = "api-version=2025-11-15-preview"
    conversation = http.post(f"{P}/openai/conversations?{preview}", json={}).json()
    r = http.post(
        f"{P}/openai/responses?{preview}",
        json={
            "agent": {"type": "agent_reference", "name": "Coder"},
            "conversation": conversation["id"],
            "input": "```python\nprint(6 * 7)\n```",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["agent"] == {"type": "agent_id", "name": "Coder", "version": "1"}
    assert body["conversation"] == {"id": conversation["id"]}
    items = http.get(f"{P}/openai/conversations/{conversation['id']}/items?{preview}").json()
    assert {item["id"] for item in body["output"]} <= {item["id"] for item in items["data"]}
