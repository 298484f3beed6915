"""Hostile input on Foundry's routes never becomes a 5xx: the corpus of ``tests/hostile.py`` on
every JSON route of the project surfaces (agents, conversations, responses with an agent,
classic threads), and bounded generated requests (schemathesis cases of the Conversations
operations, hostile bodies, hostile queries). Requests go in-process in both test modes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.testing.plugin import RunningEmulator, current_mode
from cigate.testing.transport import InProcessTransport
from cigate.web.bodies import INVALID_JSON_MESSAGE
from tests.fuzzing import FUZZ, Tally, hostile_bodies, hostile_queries, schema_cases
from tests.hostile import BODIES, BadBody, assert_error_shape

P = "/api/projects/42"
V1 = f"{P}/openai/v1"


@dataclass
class World:
    emulator: RunningEmulator
    http: httpx2.Client
    conversation: str
    item: str

    def fill(self, template: str) -> str:
        return template.format(conv=self.conversation, item=self.item)


@pytest.fixture(scope="module")
def world(emulator_server: ServerHandle, emulator_settings: EmulatorSettings) -> Iterator[World]:
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    asgi = InProcessTransport(emulator.app, emulator.handle.loop)
    http = emulator.http_client(headers=emulator.auth_headers, transport=asgi, event_hooks={})
    made = http.post(
        f"{P}/agents/Kept/versions?api-version=v1",
        json={"definition": {"kind": "prompt", "model": "gpt-4.1"}},
    )
    assert made.status_code == 200, made.text
    conversation = http.post(
        f"{V1}/conversations", json={"items": [{"role": "user", "content": "x"}]}
    )
    conv = conversation.json()["id"]
    item = http.get(f"{V1}/conversations/{conv}/items").json()["data"][0]["id"]
    try:
        yield World(emulator, http, conv, item)
    finally:
        emulator.close()


#: Every Foundry route that reads a JSON body.
JSON_ROUTES = [
    f"{P}/agents?api-version=v1",
    f"{P}/agents/Kept/versions?api-version=v1",
    f"{P}/threads?api-version=v1",
    f"{V1}/conversations",
    f"{V1}/conversations/{{conv}}",
    f"{V1}/conversations/{{conv}}/items",
    f"{V1}/responses",
]


@pytest.mark.parametrize("bad", BODIES, ids=[b.id for b in BODIES])
@pytest.mark.parametrize("route", JSON_ROUTES)
def test_a_hostile_json_body_gets_the_services_400_on_every_foundry_json_route(
    world: World, route: str, bad: BadBody
) -> None:
    response = world.http.post(
        world.fill(route), content=bad.raw, headers={"content-type": bad.content_type}
    )
    error = assert_error_shape(response)
    assert response.status_code == bad.status, error
    if bad.kind == "invalid_json":
        assert error["message"] == INVALID_JSON_MESSAGE
    else:
        assert error["code"] == bad.kind, error


TALLY = Tally()
#: Conversations operations of the OpenAPI description, with this module's ids.
OPERATIONS = {
    "/conversations": "/conversations",
    "/conversations/{conversation_id}": "/conversations/{conv}",
    "/conversations/{conversation_id}/items": "/conversations/{conv}/items",
}


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("template", list(OPERATIONS))
def test_schema_generated_conversation_requests_never_get_a_5xx(
    world: World, template: str, mode: str
) -> None:
    path = V1 + world.fill(OPERATIONS[template])

    @FUZZ(15)
    @given(case=schema_cases(template, mode))
    def run(case: Any) -> None:
        body = case.body if isinstance(case.body, dict | list) else {}
        query = case.query if isinstance(case.query, dict) else None
        response = world.http.post(
            path,
            content=json.dumps(body).encode(),
            params=query,
            headers={"content-type": "application/json"},
        )
        TALLY.check(response)

    run()


BASES: dict[str, tuple[str, dict[str, Any]]] = {
    "/responses": (
        f"{V1}/responses",
        {"agent_reference": {"type": "agent_reference", "name": "Kept"}, "input": "hi"},
    ),
    "/conversations": (f"{V1}/conversations", {}),
    "/conversations/{conversation_id}/items": (
        f"{V1}/conversations/{{conv}}/items",
        {"items": [{"role": "user", "content": "hi"}]},
    ),
}


@pytest.mark.parametrize("template", list(BASES))
def test_hostile_bodies_never_get_a_5xx_on_foundry_routes(world: World, template: str) -> None:
    route, base = BASES[template]

    @FUZZ(40)
    @given(body=hostile_bodies(template, base), json_type=st.booleans())
    def run(body: bytes, json_type: bool) -> None:
        ctype = "application/json" if json_type else "text/plain"
        response = world.http.post(world.fill(route), content=body, headers={"content-type": ctype})
        TALLY.check(response)

    run()


@pytest.mark.parametrize(
    "route",
    [
        f"{P}/agents?api-version=v1",
        f"{P}/agents/Kept/versions?api-version=v1",
        f"{V1}/conversations/{{conv}}/items",
        f"{P}/threads?api-version=v1",
    ],
)
def test_hostile_query_strings_never_get_a_5xx_on_foundry_lists(world: World, route: str) -> None:
    path, _, fixed = world.fill(route).partition("?")

    @FUZZ(15)
    @given(query=hostile_queries())
    def run(query: list[tuple[str, str]]) -> None:
        params = [*query, *([tuple(fixed.split("=", 1))] if fixed else [])]
        response = world.http.get(path, params=params)
        TALLY.check(response)

    run()


def test_the_foundry_fuzz_run_sent_what_it_should_and_got_no_5xx() -> None:
    """Runs last in this module: the bounded runs above really sent their requests."""
    assert TALLY.sent >= 200, TALLY.summary()
    assert not any(status >= 500 for status in TALLY.statuses), TALLY.summary()
    print(TALLY.summary())
