"""Assistants, threads and response chains are tenant-scoped: another tenant's id is unknown.

Tenant A runs seed 004's flow through the gateway once per backend (module-scoped, so the
parametrised cases below cost one run, not one each); tenant B then calls every endpoint with
A's assistant, thread, message, run and step ids, and with A's response as
``previous_response_id``. Each refusal must be the upstream's own answer for an id that never
existed: compared with the same call made with made-up ids through the gateway, and made
directly against the emulator.
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
from cigate.testing.plugin import RunningEmulator, current_mode
from tests.gateway.conftest import live_settings, make_backend
from tests.gateway.harness import Tenant
from tests.gateway.live import LiveGateway, add_tenant, code_input, start_gateway

pytestmark = [
    pytest.mark.storage,
    pytest.mark.sandbox,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

MODEL = "gpt-4o-mini"
CSV = b"n\n1\n2\n3\n"
CELL = (
    "import glob\nsrc = glob.glob('/mnt/data/*numbers.csv')[0]\n"
    "total = sum(int(x) for x in open(src).read().split()[1:])\n"
    "open('/mnt/data/total.txt', 'w').write(str(total))"
)
#: Ids of the same shape that nobody ever created.
UNKNOWN = {
    "asst": "asst_" + "0" * 24,
    "thread": "thread_" + "0" * 24,
    "msg": "msg_" + "0" * 24,
    "run": "run_" + "0" * 24,
    "step": "step_" + "0" * 24,
    "resp": "resp_" + "0" * 48,
}


@dataclass
class World:
    gw: LiveGateway
    emulator: RunningEmulator
    a: OpenAI
    b: OpenAI
    theirs: dict[str, str]  # tenant A's ids, by the keys of UNKNOWN
    b_thread: str
    b_asst: str
    b_tenant: Tenant


@pytest.fixture(scope="module", params=["sqlite-disk", "postgres-azurite"])
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[World]:
    """Tenant A's seed 004 run and a response, and tenant B's own thread and assistant."""
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    backend = make_backend(request.param, request, tmp_path_factory.mktemp("tenancy"))
    settings = live_settings(emulator, backend)
    gw = start_gateway(settings, add_tenant(settings.database_url, "a"))
    try:
        b_tenant = gw.add_tenant("b")
        a, b = gw.openai(), gw.openai(b_tenant)
        uploaded = a.files.create(file=("numbers.csv", CSV), purpose="assistants")
        assistant = a.beta.assistants.create(
            model=MODEL,
            tools=[{"type": "code_interpreter"}],
            tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
        )
        thread = a.beta.threads.create(messages=[{"role": "user", "content": code_input(CELL)}])
        run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed"
        message = a.beta.threads.messages.list(thread_id=thread.id).data[0]
        step = a.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
        response = a.responses.create(model="gpt-4.1", input="Say hello.")
        b_asst = b.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
        theirs = {
            "asst": assistant.id,
            "thread": thread.id,
            "msg": message.id,
            "run": run.id,
            "step": step.id,
            "resp": response.id,
        }
        b_thread = b.beta.threads.create().id
        yield World(gw, emulator, a, b, theirs, b_thread, b_asst.id, b_tenant)
    finally:
        gw.close()
        emulator.close()


Call = Callable[[OpenAI, dict[str, str], World], Any]

CASES: dict[str, Call] = {
    "assistants.retrieve": lambda c, i, w: c.beta.assistants.retrieve(i["asst"]),
    "assistants.update": lambda c, i, w: c.beta.assistants.update(i["asst"], name="mine"),
    "assistants.delete": lambda c, i, w: c.beta.assistants.delete(i["asst"]),
    "threads.retrieve": lambda c, i, w: c.beta.threads.retrieve(i["thread"]),
    "threads.update": lambda c, i, w: c.beta.threads.update(i["thread"], metadata={"k": "v"}),
    "threads.delete": lambda c, i, w: c.beta.threads.delete(i["thread"]),
    "messages.create": lambda c, i, w: c.beta.threads.messages.create(
        i["thread"], role="user", content="hi"
    ),
    "messages.list": lambda c, i, w: c.beta.threads.messages.list(i["thread"]),
    "messages.retrieve": lambda c, i, w: c.beta.threads.messages.retrieve(
        i["msg"], thread_id=i["thread"]
    ),
    "messages.update": lambda c, i, w: c.beta.threads.messages.update(
        i["msg"], thread_id=i["thread"], metadata={"k": "v"}
    ),
    "messages.delete": lambda c, i, w: c.beta.threads.messages.delete(
        i["msg"], thread_id=i["thread"]
    ),
    "runs.create": lambda c, i, w: c.beta.threads.runs.create(i["thread"], assistant_id=w.b_asst),
    "runs.create-stream": lambda c, i, w: c.beta.threads.runs.create(
        i["thread"], assistant_id=w.b_asst, stream=True
    ),
    "runs.list": lambda c, i, w: c.beta.threads.runs.list(i["thread"]),
    "runs.retrieve": lambda c, i, w: c.beta.threads.runs.retrieve(i["run"], thread_id=i["thread"]),
    "runs.update": lambda c, i, w: c.beta.threads.runs.update(
        i["run"], thread_id=i["thread"], metadata={"k": "v"}
    ),
    "runs.cancel": lambda c, i, w: c.beta.threads.runs.cancel(i["run"], thread_id=i["thread"]),
    "runs.submit_tool_outputs": lambda c, i, w: c.beta.threads.runs.submit_tool_outputs(
        i["run"], thread_id=i["thread"], tool_outputs=[{"tool_call_id": "call_1", "output": "x"}]
    ),
    "steps.list": lambda c, i, w: c.beta.threads.runs.steps.list(i["run"], thread_id=i["thread"]),
    "steps.retrieve": lambda c, i, w: c.beta.threads.runs.steps.retrieve(
        i["step"], thread_id=i["thread"], run_id=i["run"]
    ),
    "runs.create-with-their-assistant": lambda c, i, w: c.beta.threads.runs.create(
        w.b_thread, assistant_id=i["asst"]
    ),
    "threads.create_and_run-with-their-assistant": lambda c, i, w: c.beta.threads.create_and_run(
        assistant_id=i["asst"]
    ),
    "responses.create-previous_response_id": lambda c, i, w: c.responses.create(
        model="gpt-4.1", input="Go on.", previous_response_id=i["resp"]
    ),
    "responses.create-stream-previous_response_id": lambda c, i, w: c.responses.create(
        model="gpt-4.1", input="Go on.", previous_response_id=i["resp"], stream=True
    ),
}


def _refusal(call: Call, client: OpenAI, ids: dict[str, str], world: World) -> Any:
    """The 404's body with every id replaced by its role, so answers compare across ids."""
    with pytest.raises(openai.NotFoundError) as caught:
        call(client, ids, world)
    body = repr(caught.value.body)
    for role, value in ids.items():
        body = body.replace(value, f"<{role}>")
    return body


@pytest.mark.parametrize("call", CASES.values(), ids=CASES.keys())
def test_another_tenants_assistants_ids_get_the_upstreams_unknown_id_404(
    world: World, call: Call
) -> None:
    theirs = _refusal(call, world.b, world.theirs, world)
    assert theirs == _refusal(call, world.b, UNKNOWN, world)
    if call is not CASES["runs.submit_tool_outputs"]:  # the emulator has no such route
        assert theirs == _refusal(call, world.emulator.openai(), UNKNOWN, world)


@pytest.mark.parametrize(
    "path",
    ["/openai/assistants/{asst}", "/openai/threads/{thread}/messages", "/v1/threads/{thread}"],
    ids=["dated-assistant", "dated-thread-messages", "v1-thread"],
)
def test_every_url_form_is_scoped(world: World, path: str) -> None:
    r = world.gw.http(world.b_tenant).get(
        path.format(**world.theirs), params={"api-version": "2024-05-01-preview"}
    )
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] is None


def test_assistant_listings_show_only_the_callers_own(world: World) -> None:
    mine = {a.id for a in world.b.beta.assistants.list()}
    assert world.b_asst in mine
    assert world.theirs["asst"] not in mine
    theirs = {a.id for a in world.a.beta.assistants.list()}
    assert world.theirs["asst"] in theirs
    assert world.b_asst not in theirs


def test_the_owner_still_has_everything_and_can_continue(world: World) -> None:
    """Runs after every refusal above (same module): none of them touched tenant A's objects."""
    a, ids = world.a, world.theirs
    assert a.beta.assistants.retrieve(ids["asst"]).id == ids["asst"]
    assert [m.id for m in a.beta.threads.messages.list(ids["thread"], run_id=ids["run"])] == [
        ids["msg"]
    ]
    assert (
        a.beta.threads.runs.steps.retrieve(
            ids["step"], thread_id=ids["thread"], run_id=ids["run"]
        ).id
        == ids["step"]
    )
    run = a.beta.threads.create_and_run_poll(
        assistant_id=ids["asst"],
        thread={"messages": [{"role": "user", "content": code_input("print(6 * 7)")}]},
    )
    assert run.status == "completed"
    assert a.beta.threads.retrieve(run.thread_id).id == run.thread_id  # the new thread is A's
    with pytest.raises(openai.NotFoundError):
        world.b.beta.threads.retrieve(run.thread_id)
    follow_up = a.responses.create(
        model="gpt-4.1", input="Go on.", previous_response_id=ids["resp"]
    )
    assert follow_up.previous_response_id == ids["resp"]


def test_a_streamed_thread_and_run_belongs_to_its_creator_before_the_stream_ends(
    world: World,
) -> None:
    thread_id = None
    with world.a.beta.threads.create_and_run(
        assistant_id=world.theirs["asst"],
        thread={"messages": [{"role": "user", "content": code_input("print(1)")}]},
        stream=True,
    ) as stream:
        for event in stream:
            thread_id = getattr(event.data, "thread_id", None) or thread_id
            if thread_id:
                # Usable by its creator while the run still streams; nobody else's.
                assert world.a.beta.threads.retrieve(thread_id).id == thread_id
                with pytest.raises(openai.NotFoundError):
                    world.b.beta.threads.retrieve(thread_id)
                break
    assert thread_id is not None


def test_a_streamed_response_can_be_continued_as_soon_as_its_stream_ended(world: World) -> None:
    with world.a.responses.stream(model="gpt-4.1", input="Say hello.") as stream:
        first = stream.get_final_response()
    second = world.a.responses.create(
        model="gpt-4.1", input="Again.", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    with pytest.raises(openai.NotFoundError):
        world.b.responses.create(model="gpt-4.1", input="Mine?", previous_response_id=first.id)
