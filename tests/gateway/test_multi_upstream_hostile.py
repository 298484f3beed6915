"""Hostile bodies against a gateway with two upstreams: the affinity lookup reads every body
reference, so every generated body must still get a 4xx or a success, never a 5xx, and a body
naming objects of both upstreams is refused before anything is sent.

Both configured upstreams are the session's emulator (in-process), under two names: the
routing code runs as with two regions, and the emulator answers every call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import given

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.testing.plugin import RunningEmulator, current_mode
from tests.fuzzing import FUZZ, Tally, hostile_bodies
from tests.gateway.conftest import on_local_disk
from tests.gateway.harness import GatewayHarness, Tenant, use_upstream_client

pytestmark = [pytest.mark.storage, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: Operations whose JSON bodies name objects (see ``cigate.gateway.affinity.references``).
OPERATIONS = {
    "/responses": ("/responses", {"model": "gpt-4o-mini", "input": "hi"}),
    "/containers": ("/containers", {"name": "fuzz"}),
    "/containers/{container_id}/files": ("/containers/{c}/files", {"file_id": "{f}"}),
    "/threads/runs": ("/threads/runs", {"assistant_id": "{a}"}),
    "/threads/{thread_id}/runs": ("/threads/{t}/runs", {"assistant_id": "{a}"}),
}


@dataclass
class World:
    gw: GatewayHarness
    tenant: Tenant
    ids: dict[str, str]
    placed: dict[str, str]
    calls: list[str] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)

    def post(self, path: str, body: bytes | dict[str, Any], ctype: str = "application/json") -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.gw.client.post(
            "/openai/v1" + path.format(**self.ids),
            content=content,
            headers={**self.tenant.headers, "content-type": ctype, "openai-beta": "assistants=v2"},
        )


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[World]:
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    tmp: Path = tmp_path_factory.mktemp("multi-hostile")
    listed = tmp / "upstreams.toml"
    listed.write_text(
        "".join(
            f'[[upstreams]]\nname = "{n}"\nurl = "{emulator.base_url}"\n'
            f'key = "{emulator.api_key}"\n'
            for n in ("one", "two")
        )
    )
    settings = on_local_disk(
        tmp,
        upstreams_file=str(listed),
        resume_interval=0.5,
    )
    calls: list[str] = []

    async def count(answer: httpx2.Response) -> None:
        calls.append(f"{answer.request.method} {answer.request.url.path}")

    with GatewayHarness(settings) as gw:
        for member in gw.services.pool.members.values():
            client = emulator.async_http_client(base_url="")
            client.event_hooks["response"].append(count)
            use_upstream_client(member, client)
        tenant = gw.add_tenant("hostile")
        world = World(gw, tenant, {}, {}, calls)

        def made(path: str, body: dict[str, Any] | None = None, **kw: Any) -> str:
            answer = gw.client.post(
                "/openai/v1" + path.format(**world.ids),
                json=body,
                headers={**tenant.headers, "openai-beta": "assistants=v2"},
                **kw,
            )
            assert answer.status_code == 200, answer.text
            return str(answer.json()["id"])

        ids = world.ids
        ids["c"] = made("/containers", {"name": "c"})
        ids["f"] = made("/files", files={"file": ("f.txt", b"f")}, data={"purpose": "assistants"})
        ids["a"] = made("/assistants", {"model": "gpt-4o-mini"})
        ids["t"] = made("/threads", {})
        ids["resp"] = made("/responses", {"model": "gpt-4o-mini", "input": "hi"})
        kinds = {"c": "container", "f": "file", "a": "assistant", "t": "thread", "resp": "response"}
        found = gw.call(gw.services.meta.placements, [(kinds[k], ids[k]) for k in kinds])
        world.placed = {k: found[(kinds[k], ids[k])] or "one" for k in kinds}
        try:
            yield world
        finally:
            emulator.close()


@pytest.mark.parametrize("template", list(OPERATIONS))
def test_hostile_bodies_get_no_5xx_from_a_gateway_with_two_upstreams(
    world: World, template: str
) -> None:
    path, base = OPERATIONS[template]
    filled = {k: v.format(**world.ids) if isinstance(v, str) else v for k, v in base.items()}

    @FUZZ(25)
    @given(body=hostile_bodies(template, filled))
    def run(body: bytes) -> None:
        world.tally.check(world.post(path, body))

    run()


def test_a_body_naming_objects_of_both_upstreams_is_a_400_and_sent_nowhere(world: World) -> None:
    assert set(world.placed.values()) == {"one", "two"}, world.placed  # the world spans both
    on_one = next(k for k in ("c", "resp") if world.placed[k] == "one")
    on_two = next(k for k in ("c", "resp", "f") if world.placed[k] == "two")
    body: dict[str, Any] = {"model": "gpt-4o-mini", "input": "mix", "tools": []}
    for key in (on_one, on_two):
        if key == "c":
            body["tools"] = [{"type": "code_interpreter", "container": world.ids["c"]}]
        elif key == "resp":
            body["previous_response_id"] = world.ids["resp"]
        else:
            body["input"] = [
                {"role": "user", "content": [{"type": "input_file", "file_id": world.ids["f"]}]}
            ]
    before = len(world.calls)
    answer = world.post("/responses", body)
    world.tally.check(answer)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "different upstreams" in error["message"]
    assert "'one'" in error["message"]
    assert "'two'" in error["message"]
    assert len(world.calls) == before


def test_the_two_upstream_fuzz_run_sent_what_it_should(world: World) -> None:
    """Runs last: the figures of this module's run."""
    print(f"\nmulti-upstream fuzz: {world.tally.summary()}")
    assert world.tally.sent >= 100
    assert all(status < 500 for status in world.tally.statuses)
