"""The gateway runs ``code_interpreter`` itself (``--code-interpreter self``), over the emulator
acting only as a function-calling model.

Driven by the openai SDK through the gateway; each test also checks that the emulator made no
container (its own code interpreter was never used).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from cigate.engine.conformance import CODE_CALL_ORDER, stream_problems
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import live_settings, local_backend
from tests.gateway.live import LiveGateway, add_tenant, code_input, start_gateway
from tests.gateway.selfhosted import (
    AUTO,
    emulator_ran_no_code,
    interpreter,
    on_gateway,
    self_settings,
)

WRITE_CSV = "open('/mnt/data/squares.csv', 'w').write('n,sq\\n3,9\\n')\nprint('done')"


def _gateway(emulator: RunningEmulator, tmp_path: Path, **over: Any) -> LiveGateway:
    backend = local_backend(tmp_path)
    settings = self_settings(live_settings(emulator, backend), tmp_path, **over)
    return start_gateway(settings, add_tenant(settings.database_url, "acme"))


@pytest.fixture
def self_gateway(emulator: RunningEmulator, tmp_path: Path) -> Iterator[LiveGateway]:
    gateway = _gateway(emulator, tmp_path)
    try:
        yield gateway
    finally:
        gateway.close()


def _citation_ok(message: Any, container_id: str) -> Any:
    [citation] = message.content[0].annotations
    text = message.content[0].text
    assert citation.type == "container_file_citation"
    assert text[citation.start_index : citation.end_index] == "sandbox:/mnt/data/squares.csv"
    assert (citation.filename, citation.container_id) == ("squares.csv", container_id)
    return citation


def test_a_code_interpreter_response_runs_in_the_gateway_and_its_file_downloads(
    self_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    client = self_gateway.openai()
    response = client.responses.create(
        model="gpt-4.1",
        input=code_input(WRITE_CSV),
        tools=AUTO,
        include=["code_interpreter_call.outputs"],
    )
    assert response.status == "completed"
    call, message = response.output
    assert call.type == "code_interpreter_call"
    assert call.code == WRITE_CSV + "\n"
    assert call.container_id.startswith("cntr_")
    assert [o.type for o in call.outputs or []] == ["logs"]
    citation = _citation_ok(message, call.container_id)
    content = client.containers.files.content.retrieve(
        citation.file_id, container_id=citation.container_id
    )
    assert content.read() == b"n,sq\n3,9\n"
    assert emulator_ran_no_code(emulator)


def test_the_stream_has_the_hosted_tools_event_sequence(
    self_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    client = self_gateway.openai()
    with client.responses.stream(
        model="gpt-4.1", input=code_input(WRITE_CSV), tools=AUTO
    ) as stream:
        events = [e.model_dump(warnings=False) for e in stream]
        final = stream.get_final_response()
    assert stream_problems(events) == []
    kinds = [e["type"] for e in events]
    call_events = [k for k in kinds if k in CODE_CALL_ORDER]
    assert call_events[0] == CODE_CALL_ORDER[0]
    assert call_events[-3:] == list(CODE_CALL_ORDER[2:])
    assert kinds.index("response.code_interpreter_call.completed") < kinds.index(
        "response.output_text.delta"
    )
    assert kinds[-1] == "response.completed"
    _citation_ok(final.output[1], final.output[0].container_id)  # type: ignore[union-attr]
    assert emulator_ran_no_code(emulator)


def test_files_are_kept_after_the_container_expired(
    self_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    client = self_gateway.openai()
    response = client.responses.create(model="gpt-4.1", input=code_input(WRITE_CSV), tools=AUTO)
    citation = _citation_ok(response.output[1], response.output[0].container_id)  # type: ignore[union-attr]
    interp = interpreter(self_gateway)
    interp.clock.advance(21 * 60)
    expired = on_gateway(self_gateway, interp.containers.reap_expired())
    assert citation.container_id in expired
    retrieved = client.containers.retrieve(citation.container_id)
    assert retrieved.status == "expired"
    content = client.containers.files.content.retrieve(
        citation.file_id, container_id=citation.container_id
    )
    assert content.read() == b"n,sq\n3,9\n"


def test_previous_response_id_reuses_the_container(self_gateway: LiveGateway) -> None:
    client = self_gateway.openai()
    first = client.responses.create(model="gpt-4.1", input=code_input("x = 41"), tools=AUTO)
    second = client.responses.create(
        model="gpt-4.1",
        input=code_input("print(x + 1)"),
        tools=AUTO,
        previous_response_id=first.id,
        include=["code_interpreter_call.outputs"],
    )
    assert second.output[0].container_id == first.output[0].container_id  # type: ignore[union-attr]
    outputs = second.output[0].outputs  # type: ignore[union-attr]
    assert outputs is not None
    assert outputs[0].logs == "42"  # type: ignore[union-attr]


def test_a_stored_response_is_retrieved_and_replayed_from_the_gateway(
    self_gateway: LiveGateway,
) -> None:
    client = self_gateway.openai()
    response = client.responses.create(model="gpt-4.1", input=code_input(WRITE_CSV), tools=AUTO)
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text
    http = self_gateway.http()
    replay = http.get(f"/openai/v1/responses/{response.id}", params={"stream": "true"})
    kinds = [
        json.loads(line[len("data: ") :])["type"]
        for line in replay.text.splitlines()
        if line.startswith("data: ")
    ]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"


def test_another_tenant_reaches_nothing_of_a_self_hosted_response(
    self_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    owner = self_gateway.openai()
    response = owner.responses.create(model="gpt-4.1", input=code_input(WRITE_CSV), tools=AUTO)
    citation = _citation_ok(response.output[1], response.output[0].container_id)  # type: ignore[union-attr]
    stranger = self_gateway.openai(self_gateway.add_tenant("mallory"))
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        stranger.containers.files.content.retrieve(
            citation.file_id, container_id=citation.container_id
        )
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(
            model="gpt-4.1",
            input=code_input("print(open('/mnt/data/squares.csv').read())"),
            tools=[{"type": "code_interpreter", "container": citation.container_id}],
        )
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(
            model="gpt-4.1",
            input=code_input("print(1)"),
            tools=AUTO,
            previous_response_id=response.id,
        )


def test_chat_completions_upstream_gives_the_same_response(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    gateway = _gateway(emulator, tmp_path, interpreter_api="chat")
    try:
        response = gateway.openai().responses.create(
            model="gpt-4.1", input=code_input(WRITE_CSV), tools=AUTO
        )
        call, message = response.output
        _citation_ok(message, call.container_id)  # type: ignore[union-attr]
        assert emulator_ran_no_code(emulator)
    finally:
        gateway.close()


def test_auto_container_file_ids_are_copied_in_and_memory_limit_is_kept(
    self_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    client = self_gateway.openai()
    uploaded = client.files.create(file=("in.csv", b"a\n1\n2\n"), purpose="assistants")
    response = client.responses.create(
        model="gpt-4.1",
        input=code_input(
            "import glob\nprint(open(glob.glob('/mnt/data/*in.csv')[0]).read().count('\\n'))"
        ),
        tools=[
            {
                "type": "code_interpreter",
                "container": {"type": "auto", "file_ids": [uploaded.id], "memory_limit": "4g"},
            }
        ],
        include=["code_interpreter_call.outputs"],
    )
    call = response.output[0]
    assert call.outputs[0].logs == "3"  # type: ignore[union-attr,index]
    container = client.containers.retrieve(call.container_id)  # type: ignore[union-attr]
    assert container.memory_limit == "4g"
    assert emulator_ran_no_code(emulator)


def test_an_unknown_file_id_is_the_services_404(self_gateway: LiveGateway) -> None:
    http = self_gateway.http()
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-x"]}}]
    r = http.post("/openai/v1/responses", json={"model": "m", "input": "hi", "tools": tools})
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_an_explicit_container_with_an_upload_runs_and_can_be_deleted(
    self_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    client = self_gateway.openai()
    container = client.containers.create(
        name="mine", expires_after={"anchor": "last_active_at", "minutes": 5}
    )
    assert container.expires_after is not None
    assert container.expires_after.minutes == 5
    upload = client.containers.files.create(container.id, file=("data.txt", b"seven"))
    assert upload.source == "user"
    response = client.responses.create(
        model="gpt-4.1",
        input=code_input(
            "import glob\nn = open(glob.glob('/mnt/data/*data.txt')[0]).read()\n"
            "open('/mnt/data/out.txt', 'w').write(n.upper())"
        ),
        tools=[{"type": "code_interpreter", "container": container.id}],
    )
    assert response.output[0].container_id == container.id  # type: ignore[union-attr]
    listed = {f.path for f in client.containers.files.list(container.id)}
    assert "/mnt/data/out.txt" in listed
    assert [c.id for c in client.containers.list()] == [container.id]
    client.containers.delete(container.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(container.id)
    assert emulator_ran_no_code(emulator)


def test_an_expired_explicit_container_is_the_services_400(self_gateway: LiveGateway) -> None:
    client = self_gateway.openai()
    container = client.containers.create(name="short")
    interp = interpreter(self_gateway)
    interp.clock.advance(21 * 60)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="gpt-4.1",
            input=code_input("print(1)"),
            tools=[{"type": "code_interpreter", "container": container.id}],
        )
    assert caught.value.message.endswith("Container is expired.")
    assert client.containers.retrieve(container.id).status == "expired"


@pytest.mark.parametrize(
    ("tool_choice", "calls"),
    [("none", 0), ("auto", 1), ("required", 1), ({"type": "code_interpreter"}, 1)],
    ids=["none", "auto", "required", "forced-code-interpreter"],
)
def test_tool_choice_decides_whether_code_runs(
    self_gateway: LiveGateway, tool_choice: Any, calls: int
) -> None:
    response = self_gateway.openai().responses.create(
        model="gpt-4.1", input=code_input("print(1)"), tools=AUTO, tool_choice=tool_choice
    )
    kinds = [item.type for item in response.output]
    assert kinds.count("code_interpreter_call") == calls
    assert kinds[-1] == "message"


def test_interpreter_models_limits_self_mode_to_the_named_models(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    gateway = _gateway(emulator, tmp_path, interpreter_models="local-llama, gpt-oss")
    try:
        client = gateway.openai()
        mine = client.responses.create(model="gpt-oss", input=code_input(WRITE_CSV), tools=AUTO)
        assert emulator_ran_no_code(emulator)
        assert mine.output[0].container_id in {  # type: ignore[union-attr]
            c.id for c in client.containers.list()
        }
        hosted = client.responses.create(model="gpt-4.1", input=code_input(WRITE_CSV), tools=AUTO)
        assert hosted.status == "completed"
        assert not emulator_ran_no_code(emulator)  # another model: the upstream's hosted tool
    finally:
        gateway.close()


def test_a_displayed_figure_is_saved_as_a_file_cited_and_kept(
    self_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    client = self_gateway.openai()
    show = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [3, 1, 2])\nplt.show()\nprint('shown')"
    )
    response = client.responses.create(
        model="gpt-4.1",
        input=code_input(show),
        tools=AUTO,
        include=["code_interpreter_call.outputs"],
    )
    call, message = response.output
    kinds = [o.type for o in call.outputs or []]  # type: ignore[union-attr]
    assert kinds == ["logs", "image"]
    annotations = message.content[0].annotations  # type: ignore[union-attr]
    assert len(annotations) == 1, [(a.filename, a.file_id) for a in annotations]
    [citation] = annotations
    assert citation.filename.startswith("cfile_")
    assert citation.filename.endswith(".png")
    listed = client.containers.files.retrieve(citation.file_id, container_id=citation.container_id)
    assert listed.source == "assistant"
    interp = interpreter(self_gateway)
    interp.clock.advance(21 * 60)
    on_gateway(self_gateway, interp.containers.reap_expired())
    png = client.containers.files.content.retrieve(
        citation.file_id, container_id=citation.container_id
    ).read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert emulator_ran_no_code(emulator)


def test_a_container_created_with_file_ids_holds_them_and_foreign_ids_are_unknown(
    self_gateway: LiveGateway,
) -> None:
    client = self_gateway.openai()
    mine = client.files.create(file=("notes.txt", b"mine"), purpose="assistants")
    container = client.containers.create(name="with-files", file_ids=[mine.id])
    [listed] = list(client.containers.files.list(container.id))
    assert listed.path.endswith("notes.txt")
    assert listed.source == "user"
    other = self_gateway.openai(self_gateway.add_tenant("other"))
    with pytest.raises(openai.NotFoundError):
        other.containers.create(name="steal", file_ids=[mine.id])
    assert [c.name for c in other.containers.list()] == []


@pytest.mark.parametrize("api", ["responses", "chat"], ids=["responses", "chat-completions"])
def test_a_model_server_of_its_own_is_asked_and_the_upstream_never(
    emulator: RunningEmulator, tmp_path: Path, api: str
) -> None:
    gateway = _gateway(
        emulator,
        tmp_path,
        upstream="http://127.0.0.1:9",  # nobody listens: the main upstream must not be needed
        upstream_auth="none",
        interpreter_upstream=emulator.openai_url.rstrip("/"),  # an OpenAI-style /v1 server
        interpreter_upstream_auth="key",
        interpreter_upstream_key=emulator.api_key,
        interpreter_api=api,
    )
    try:
        response = gateway.openai().responses.create(
            model="local-model", input=code_input(WRITE_CSV), tools=AUTO
        )
        call, message = response.output
        _citation_ok(message, call.container_id)  # type: ignore[union-attr]
        assert emulator_ran_no_code(emulator)
    finally:
        gateway.close()


def test_memory_is_bounded_oldest_responses_and_long_expired_containers_are_forgotten(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    gateway = _gateway(emulator, tmp_path, interpreter_kept_responses=2)
    try:
        client = gateway.openai()
        made = [
            client.responses.create(model="gpt-4.1", input=code_input("1"), tools=AUTO)
            for _ in range(3)
        ]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(made[0].id)
        assert client.responses.retrieve(made[2].id).id == made[2].id
        interp = interpreter(gateway)
        assert len(interp.tenant_of) <= 2
        interp.clock.advance(21 * 60)
        on_gateway(gateway, interp.reap())
        assert {c.status for c in client.containers.list()} == {"expired"}
        interp.clock.advance(25 * 3600)
        on_gateway(gateway, interp.reap())
        assert list(client.containers.list()) == []
    finally:
        gateway.close()


def test_a_background_response_is_polled_to_its_end_and_another_is_cancelled(
    self_gateway: LiveGateway,
) -> None:
    client = self_gateway.openai()
    started = client.responses.create(
        model="gpt-4.1", input=code_input(WRITE_CSV), tools=AUTO, background=True
    )
    assert started.status in ("queued", "in_progress")
    for _ in range(600):  # bounded polling
        polled = client.responses.retrieve(started.id)
        if polled.status not in ("queued", "in_progress"):
            break
        time.sleep(0.05)
    assert polled.status == "completed"
    _citation_ok(polled.output[1], polled.output[0].container_id)  # type: ignore[union-attr]
    slow = client.responses.create(
        model="gpt-4.1",
        input=code_input("import time\ntime.sleep(30)"),
        tools=AUTO,
        background=True,
    )
    cancelled = client.responses.cancel(slow.id)
    assert cancelled.status == "cancelled"


def test_a_files_api_file_is_copied_into_a_container_by_id_only_for_its_owner(
    self_gateway: LiveGateway,
) -> None:
    client = self_gateway.openai()
    mine = client.files.create(file=("in.txt", b"by id"), purpose="assistants")
    container = client.containers.create(name="c")
    copied = client.containers.files.create(container.id, file_id=mine.id)
    assert copied.path.endswith("in.txt")
    content = client.containers.files.content.retrieve(copied.id, container_id=container.id)
    assert content.read() == b"by id"
    other = self_gateway.openai(self_gateway.add_tenant("other"))
    theirs = other.containers.create(name="c")
    with pytest.raises(openai.NotFoundError):
        other.containers.files.create(theirs.id, file_id=mine.id)
