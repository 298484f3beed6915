"""File ids inside request bodies are tenant-checked: another tenant's file is an unknown file.

Tenant A uploads a file through the gateway once per backend (module-scoped); tenant B, with its
own container, assistant and thread, then names A's file id in every body position that makes
the upstream copy a file somewhere B can read it. Each refusal must be the upstream's own answer
for a file id that never existed: compared with the same call made with a made-up id through the
gateway and, where the emulator checks that position, made directly against the emulator. Tenant
A naming its own file works end to end, once per endpoint family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import OpenAI

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.gateway.body_refs import extract, operation
from cigate.testing.plugin import RunningEmulator, current_mode
from tests.gateway.conftest import live_settings, make_backend
from tests.gateway.live import LiveGateway, add_tenant, code_input, start_gateway

pytestmark = [
    pytest.mark.storage,
    pytest.mark.sandbox,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # the SDK's beta Assistants
]

MODEL = "gpt-4o-mini"
CSV = b"n\n1\n2\n3\n"
CELL = (
    "import glob\nsrc = glob.glob('/mnt/data/*numbers.csv')[0]\n"
    "total = sum(int(x) for x in open(src).read().split()[1:])\n"
    "open('/mnt/data/total.txt', 'w').write(str(total))"
)


@dataclass
class World:
    gw: LiveGateway
    emulator: RunningEmulator
    a: OpenAI
    b: OpenAI
    theirs: str  # tenant A's uploaded file id
    unknown: str  # an id of the same shape nobody uploaded
    b_container: str
    b_asst: str
    b_thread: str


@pytest.fixture(scope="module", params=["sqlite-disk", "postgres-azurite"])
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[World]:
    """Tenant A's uploaded file; tenant B's own container, assistant and thread."""
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    backend = make_backend(request.param, request, tmp_path_factory.mktemp("body-refs"))
    settings = live_settings(emulator, backend)
    gw = start_gateway(settings, add_tenant(settings.database_url, "a"))
    try:
        a, b = gw.openai(), gw.openai(gw.add_tenant("b"))
        theirs = a.files.create(file=("numbers.csv", CSV), purpose="assistants").id
        prefix = theirs.split("-", 1)[0]
        unknown = f"{prefix}-{'0' * (len(theirs) - len(prefix) - 1)}"
        yield World(
            gw,
            emulator,
            a,
            b,
            theirs,
            unknown,
            b_container=b.containers.create(name="b's").id,
            b_asst=b.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}]).id,
            b_thread=b.beta.threads.create().id,
        )
    finally:
        gw.close()
        emulator.close()


Call = Callable[[OpenAI, str, World], Any]


def _auto(file_id: str) -> list[Any]:
    return [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [file_id]}}]


def _part(kind: str, file_id: str) -> list[Any]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Look."},
                {"type": kind, "file_id": file_id},
            ],
        }
    ]


def _attached(file_id: str) -> Any:
    return {
        "role": "user",
        "content": "Use it.",
        "attachments": [{"file_id": file_id, "tools": [{"type": "code_interpreter"}]}],
    }


def _image(file_id: str) -> Any:
    return {"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": file_id}}]}


def _resources(file_id: str) -> Any:
    return {"code_interpreter": {"file_ids": [file_id]}}


CASES: dict[str, Call] = {
    "responses.tools-container-file_ids": lambda c, f, w: c.responses.create(
        model="gpt-4.1", input="Hi.", tools=_auto(f)
    ),
    "responses.tools-container-file_ids-stream": lambda c, f, w: c.responses.create(
        model="gpt-4.1", input="Hi.", tools=_auto(f), stream=True
    ),
    "responses.input_file": lambda c, f, w: c.responses.create(
        model="gpt-4.1",
        input=_part("input_file", f),
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    ),
    "responses.input_image": lambda c, f, w: c.responses.create(
        model="gpt-4.1", input=_part("input_image", f)
    ),
    "containers.create-file_ids": lambda c, f, w: c.containers.create(name="x", file_ids=[f]),
    "containers.files.create-file_id": lambda c, f, w: c.containers.files.create(
        w.b_container, file_id=f
    ),
    "assistants.create-tool_resources": lambda c, f, w: c.beta.assistants.create(
        model=MODEL, tools=[{"type": "code_interpreter"}], tool_resources=_resources(f)
    ),
    "assistants.update-tool_resources": lambda c, f, w: c.beta.assistants.update(
        w.b_asst, tool_resources=_resources(f)
    ),
    "threads.create-tool_resources": lambda c, f, w: c.beta.threads.create(
        tool_resources=_resources(f)
    ),
    "threads.create-attachments": lambda c, f, w: c.beta.threads.create(messages=[_attached(f)]),
    "threads.create-image_file": lambda c, f, w: c.beta.threads.create(messages=[_image(f)]),
    "threads.update-tool_resources": lambda c, f, w: c.beta.threads.update(
        w.b_thread, tool_resources=_resources(f)
    ),
    "threads.create_and_run-tool_resources": lambda c, f, w: c.beta.threads.create_and_run(
        assistant_id=w.b_asst, tool_resources=_resources(f)
    ),
    "threads.create_and_run-thread-tool_resources": lambda c, f, w: c.beta.threads.create_and_run(
        assistant_id=w.b_asst, thread={"tool_resources": _resources(f)}
    ),
    "threads.create_and_run-thread-attachments": lambda c, f, w: c.beta.threads.create_and_run(
        assistant_id=w.b_asst, thread={"messages": [_attached(f)]}
    ),
    "messages.create-attachments": lambda c, f, w: c.beta.threads.messages.create(
        w.b_thread, **_attached(f)
    ),
    "messages.create-image_file": lambda c, f, w: c.beta.threads.messages.create(
        w.b_thread, **_image(f)
    ),
    "runs.create-additional_messages": lambda c, f, w: c.beta.threads.runs.create(
        w.b_thread, assistant_id=w.b_asst, additional_messages=[_attached(f)]
    ),
}
#: Positions the emulator does not check (it never reads those files): compared through the
#: gateway only, where a made-up id is refused by the same rule.
UNCHECKED_UPSTREAM = {
    "responses.input_image",
    "threads.create-image_file",
    "threads.create_and_run-tool_resources",
    "messages.create-image_file",
}


def _refusal(call: Call, client: OpenAI, file_id: str, world: World) -> tuple[int, str]:
    """Status and error body, the file id replaced by a placeholder so answers compare."""
    with pytest.raises(openai.APIStatusError) as caught:
        call(client, file_id, world)
    return caught.value.status_code, repr(caught.value.body).replace(file_id, "<file>")


@pytest.mark.parametrize("name", CASES.keys())
def test_another_tenants_file_id_in_a_body_gets_the_upstreams_unknown_file_answer(
    world: World, name: str
) -> None:
    call = CASES[name]
    theirs = _refusal(call, world.b, world.theirs, world)
    assert theirs[0] in (400, 404), theirs
    assert theirs == _refusal(call, world.b, world.unknown, world)
    if name not in UNCHECKED_UPSTREAM:
        assert theirs == _refusal(call, world.emulator.openai(), world.unknown, world)


def test_the_owner_copies_its_file_into_a_responses_container(world: World) -> None:
    response = world.a.responses.create(
        model="gpt-4.1", input=code_input(CELL), tools=_auto(world.theirs)
    )
    assert response.status == "completed"
    files = world.gw.harvested(response.id, timeout=20)
    assert any(f["filename"].endswith("total.txt") for f in files)


def test_the_owner_copies_its_file_into_containers(world: World) -> None:
    a = world.a
    container = a.containers.create(name="a's", file_ids=[world.theirs])
    (copied,) = a.containers.files.list(container_id=container.id)
    assert copied.path.endswith("numbers.csv")
    added = a.containers.files.create(world_container := container.id, file_id=world.theirs)
    for file_id in (copied.id, added.id):
        content = a.containers.files.content.retrieve(file_id, container_id=world_container)
        assert content.read() == CSV


def test_the_owner_attaches_its_file_to_assistants_and_threads(world: World) -> None:
    a, mine = world.a, world.theirs
    assistant = a.beta.assistants.create(
        model=MODEL, tools=[{"type": "code_interpreter"}], tool_resources=_resources(mine)
    )
    thread = a.beta.threads.create(tool_resources=_resources(mine), messages=[_attached(mine)])
    a.beta.threads.messages.create(thread.id, **_attached(mine))
    a.beta.threads.messages.create(thread.id, role="user", content=code_input(CELL))
    run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"


def test_a_file_the_gateway_harvested_for_the_tenant_can_be_referenced_by_it_only(
    world: World,
) -> None:
    """An Assistants output (``assistant-…``, harvested for A) is A's to attach, not B's."""
    a = world.a
    assistant = a.beta.assistants.create(
        model=MODEL, tools=[{"type": "code_interpreter"}], tool_resources=_resources(world.theirs)
    )
    run = a.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": code_input(CELL)}]},
    )
    assert run.status == "completed"
    a.beta.threads.messages.list(run.thread_id)  # the answer cites the output: harvested
    harvested = world.gw.harvested(run.id, timeout=20)
    output = next(f["upstream_file_id"] for f in harvested if f["filename"].endswith("total.txt"))
    assert output != world.theirs
    a.beta.threads.messages.create(run.thread_id, **_attached(output))
    with pytest.raises(openai.BadRequestError):
        world.b.beta.threads.messages.create(world.b_thread, **_attached(output))


def test_a_body_that_is_not_json_is_refused_by_the_gateway_in_the_upstreams_words(
    world: World,
) -> None:
    path = "/openai/v1/containers"
    through = world.gw.http().post(
        path, content=b"{not json", headers={"content-type": "application/json"}
    )
    direct = world.emulator.http_client().post(
        path,
        content=b"{not json",
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {world.emulator.api_key}",
        },
    )
    assert through.status_code == direct.status_code == 400
    assert through.json()["error"]["message"] == direct.json()["error"]["message"]
    assert through.json()["error"]["code"] == "invalid_json"  # the gateway's: never forwarded


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/openai/v1/responses", "responses"),
        ("POST", "/openai/responses", "responses"),
        ("POST", "/v1/containers/cntr_1/files", "containers.files.create"),
        ("POST", "/openai/threads/runs", "threads.create_and_run"),
        ("POST", "/openai/v1/threads/thread_1", "threads.update"),
        ("POST", "/v1/threads/thread_1/runs", "runs.create"),
        ("POST", "/openai/v1/threads/thread_1/runs/run_1/cancel", None),
        ("GET", "/openai/v1/responses", None),
        ("POST", "/openai/v1/files", None),
    ],
)
def test_operations_are_recognised_in_every_url_form(
    method: str, path: str, expected: str | None
) -> None:
    assert operation(method, path) == expected


def test_ids_are_grouped_in_the_order_the_upstream_checks_them() -> None:
    body = {
        "tool_resources": {"code_interpreter": {"file_ids": ["f1"]}},
        "thread": {
            "tool_resources": {
                "file_search": {"vector_stores": [{"file_ids": ["f2"]}]},
            },
            "messages": [{"attachments": [{"file_id": "f3"}], "content": "hi"}, "junk"],
        },
    }
    groups = extract("threads.create_and_run", body)
    assert [(g.param, g.ids) for g in groups] == [
        ("tool_resources", ("f1",)),
        ("tool_resources", ("f2",)),
        ("messages[0].attachments", ("f3",)),
    ]
    assert extract("responses", {"input": "text", "tools": "junk"}) == []


def test_another_tenants_container_in_responses_tools_gets_the_unknown_container_answer(
    world: World,
) -> None:
    """The ``tools[].container`` string (checked before this module existed), same contract."""
    theirs = world.a.containers.create(name="a's own").id
    unknown = "cntr_" + "0" * (len(theirs) - len("cntr_"))

    def call(client: OpenAI, container: str, _: World) -> Any:
        tools: Any = [{"type": "code_interpreter", "container": container}]
        return client.responses.create(model="gpt-4.1", input="Hi.", tools=tools)

    refused = _refusal(call, world.b, theirs, world)
    assert refused[0] == 404
    assert refused == _refusal(call, world.emulator.openai(), unknown, world)
