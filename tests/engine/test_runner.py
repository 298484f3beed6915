"""Responses generated end to end by the engine, over a real ContainerBackend and real kernels."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from openai.types.responses import Response

from cigate.clock import Clock
from cigate.emulator.files import FilesBackend
from cigate.engine.conformance import replay_through_sdk, stream_problems
from cigate.engine.containers import ContainerBackend
from cigate.engine.errors import ApiError
from cigate.engine.store import ResponsesBackend
from cigate.sandbox.kernel import Kernel
from cigate.testing.schema import load_spec, validate_event

# The kernel pool lives on the session's loop; so must every test that runs code in it.
pytestmark = pytest.mark.asyncio(loop_scope="session")

#: The image SHOW_PNG displays.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6300010000050001a5f645400000000049454e44ae426082"
)
AUTO = [{"type": "code_interpreter", "container": {"type": "auto"}}]
WRITE_CSV = (
    "```python\nwith open('/mnt/data/out.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')\n"
    "print('saved')\n```"
)

LIST_FILES = "```python\nimport os\nprint(sorted(os.listdir('/mnt/data')))\n```"
#: A cell that displays PNG_1X1, as a chart would.
SHOW_PNG = (
    "```python\nfrom IPython.display import Image, display\n"
    f"display(Image(data=bytes.fromhex({PNG_1X1.hex()!r})))\n```"
)
#: A cell that kills its own kernel: SIGKILL cannot be caught, the process is gone at once.
KILL_KERNEL = "```python\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n```"


def auto_with(file_ids: list[str]) -> dict[str, Any]:
    return {"type": "code_interpreter", "container": {"type": "auto", "file_ids": file_ids}}


async def create(backend: ResponsesBackend, **body: Any) -> tuple[dict[str, Any], list[Any]]:
    """Run one response to the end; return the final object and every event."""
    body.setdefault("model", "gpt-4.1")
    run = await backend.create(body)
    events = [event async for event in run.events.follow()]
    await run.finished.wait()
    check_schema(run.response(), events)
    return run.response(), events


def check_schema(response: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """What the emulator fixture checks on the wire, checked here without a server."""
    for event in events:
        validate_event(event)
    validator = load_spec().validator({"$ref": "#/components/schemas/Response"})
    assert [e.message for e in validator.iter_errors(response)] == []


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest.mark.sandbox
async def test_a_cell_that_writes_a_file_streams_the_exact_event_order_of_the_real_service(
    backend: ResponsesBackend,
) -> None:
    response, events = await create(backend, input=WRITE_CSV, tools=AUTO)
    assert stream_problems(events) == []
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * (len(events) - 18),
        "response.output_text.annotation.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert response["status"] == "completed"


@pytest.mark.sandbox
async def test_the_sdk_stream_helper_accepts_the_stream_and_returns_the_citation(
    backend: ResponsesBackend, containers: ContainerBackend
) -> None:
    _, events = await create(backend, input=WRITE_CSV, tools=AUTO)
    final = replay_through_sdk(events)
    [call, message] = final.output
    assert call.type == "code_interpreter_call"
    assert call.status == "completed"
    [citation] = message.content[0].annotations
    text = message.content[0].text
    assert text[citation.start_index : citation.end_index] == "sandbox:/mnt/data/out.csv"
    assert citation.filename == "out.csv"
    assert citation.container_id == call.container_id
    container = containers.get(call.container_id)
    record = containers.get_file(container, citation.file_id)
    assert (record.source, record.path) == ("assistant", "/mnt/data/out.csv")
    assert containers.read_file(container, record) == b"a,b\n1,2\n"


@pytest.mark.sandbox
async def test_the_final_response_validates_as_the_sdk_response_model(
    backend: ResponsesBackend,
) -> None:
    response, events = await create(
        backend, input=WRITE_CSV, tools=AUTO, include=["code_interpreter_call.outputs"]
    )
    parsed = Response.model_validate(response)
    assert parsed.id == response["id"]
    assert response["tools"] == AUTO  # echoed as sent, not resolved
    assert response["usage"]["total_tokens"] > 0
    assert events[-1]["response"] == response
    call = response["output"][0]
    assert call["outputs"] == [{"type": "logs", "logs": "saved"}]


@pytest.mark.sandbox
async def test_outputs_are_null_unless_included_and_empty_when_added(
    backend: ResponsesBackend,
) -> None:
    response, events = await create(backend, input=WRITE_CSV, tools=AUTO)
    assert response["output"][0]["outputs"] is None
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["outputs"] == []
    assert added["item"]["code"] == ""


@pytest.mark.sandbox
async def test_a_cell_that_raises_completes_with_the_traceback_in_its_logs(
    backend: ResponsesBackend,
) -> None:
    response, events = await create(
        backend,
        input="```python\nprint('before')\n1/0\n```",
        tools=AUTO,
        include=["code_interpreter_call.outputs"],
    )
    assert stream_problems(events) == []
    call, message = response["output"]
    assert call["status"] == "completed"
    logs = call["outputs"][0]["logs"]
    assert logs.startswith("before\n")
    assert "ZeroDivisionError: division by zero" in logs
    assert "raised ZeroDivisionError: division by zero" in message["content"][0]["text"]


@pytest.mark.sandbox
async def test_a_cell_past_its_deadline_is_interrupted_and_incomplete(
    backend: ResponsesBackend,
) -> None:
    response, events = await create(
        backend,
        input="```python\nimport time\ntime.sleep(1)\n```",
        tools=AUTO,
        include=["code_interpreter_call.outputs"],
        metadata={"cigate_exec_timeout": "0.05"},
    )
    assert stream_problems(events) == []
    call, message = response["output"]
    assert call["status"] == "incomplete"
    assert "interrupted" in call["outputs"][0]["logs"]
    assert "exceeded its time limit and was interrupted" in message["content"][0]["text"]
    assert response["status"] == "completed"


@pytest.mark.sandbox
async def test_images_become_data_url_outputs(backend: ResponsesBackend) -> None:
    response, _ = await create(
        backend,
        input=SHOW_PNG,
        tools=AUTO,
        include=["code_interpreter_call.outputs"],
    )
    [image] = response["output"][0]["outputs"]
    assert image["type"] == "image"
    assert image["url"].startswith("data:image/png;base64,iVBOR")
    assert base64.b64decode(image["url"].split(",", 1)[1]) == PNG_1X1


@pytest.mark.sandbox
async def test_previous_response_id_reuses_the_container_and_its_state(
    backend: ResponsesBackend,
) -> None:
    first, _ = await create(backend, input="```python\nx = 41\n```", tools=AUTO)
    second, _ = await create(
        backend,
        input="```python\nprint(x + 1)\n```",
        tools=AUTO,
        previous_response_id=first["id"],
        include=["code_interpreter_call.outputs"],
    )
    assert second["output"][0]["container_id"] == first["output"][0]["container_id"]
    assert second["output"][0]["outputs"] == [{"type": "logs", "logs": "42"}]
    assert second["previous_response_id"] == first["id"]


@pytest.mark.sandbox
async def test_an_explicit_container_id_is_used_and_unknown_ones_are_404(
    backend: ResponsesBackend, containers: ContainerBackend
) -> None:
    container = containers.create(name="mine")
    tools = [{"type": "code_interpreter", "container": container.id}]
    response, _ = await create(backend, input="```python\n1\n```", tools=tools)
    assert response["output"][0]["container_id"] == container.id
    assert response["tools"] == tools
    unknown = [{"type": "code_interpreter", "container": "cntr_nope"}]
    with pytest.raises(ApiError) as caught:
        await backend.create({"model": "m", "input": "x", "tools": unknown})
    assert caught.value.status == 404
    assert caught.value.message == "Container with id 'cntr_nope' not found."


@pytest.mark.sandbox
async def test_an_expired_container_is_refused_before_the_run_starts(
    backend: ResponsesBackend, containers: ContainerBackend, clock: Clock
) -> None:
    first, _ = await create(backend, input="```python\n1\n```", tools=AUTO)
    clock.advance(21 * 60)
    cid = first["output"][0]["container_id"]
    for body in (
        {"tools": AUTO, "previous_response_id": first["id"]},
        {"tools": [{"type": "code_interpreter", "container": cid}]},
    ):
        with pytest.raises(ApiError) as caught:
            await backend.create({"model": "m", "input": "```python\n2\n```", **body})
        assert (caught.value.status, caught.value.message) == (400, "Container is expired.")


@pytest.mark.sandbox
async def test_auto_container_file_ids_and_input_files_are_copied_in_as_user_files(
    backend: ResponsesBackend, containers: ContainerBackend, files: FilesBackend
) -> None:
    data = files.create("data.csv", b"n\n1\n2\n", "assistants", azure=True)
    pdf = files.create("doc.pdf", b"%PDF-1.4", "assistants", azure=True)
    response, _ = await create(
        backend,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": LIST_FILES},
                    {"type": "input_file", "file_id": pdf.id},
                ],
            }
        ],
        tools=[auto_with([data.id])],
        include=["code_interpreter_call.outputs"],
    )
    logs = response["output"][0]["outputs"][0]["logs"]
    assert "-data.csv" in logs
    assert "-doc.pdf" in logs
    container = containers.get(response["output"][0]["container_id"])
    assert {f.source for f in container.files.values()} == {"user"}
    assert response["output"][1]["content"][0]["annotations"] == []  # nothing was written
    with pytest.raises(ApiError) as caught:
        await backend.create({"model": "m", "tools": [auto_with(["file-nope"])]})
    assert caught.value.status == 404
    assert caught.value.param == "tools[0].container.file_ids"


async def test_without_the_tool_code_is_not_run_and_no_container_is_made(
    backend: ResponsesBackend, containers: ContainerBackend
) -> None:
    response, events = await create(backend, input=WRITE_CSV)
    assert stream_problems(events) == []
    [message] = response["output"]
    assert "cannot run code" in message["content"][0]["text"]
    assert containers.list() == []


@pytest.mark.sandbox
async def test_a_kernel_killed_mid_run_is_reported_to_the_model_and_replaced(
    backend: ResponsesBackend, containers: ContainerBackend
) -> None:
    response, _ = await create(
        backend,
        input=KILL_KERNEL + "\n```python\n6 * 7\n```",
        tools=AUTO,
        include=["code_interpreter_call.outputs"],
    )
    assert response["status"] == "completed"
    killed, answered = (i for i in response["output"] if i["type"] == "code_interpreter_call")
    assert killed["status"] == "completed"
    assert killed["outputs"][0]["logs"].startswith("KernelDied: The Python kernel died")
    assert answered["outputs"][0]["logs"] == "42"
    [container] = containers.list()
    assert isinstance(container.session, Kernel)
    assert container.session.restarts == 1


async def test_a_kernel_failure_mid_run_ends_the_stream_with_response_failed(
    backend: ResponsesBackend, containers: ContainerBackend
) -> None:
    # A kernel that dies on every one of its lives (MAX_RESTARTS + 1) cannot run the 12th cell.
    run = await backend.create(
        {"model": "m", "input": "\n".join([KILL_KERNEL] * 13), "tools": AUTO}
    )
    events = [e async for e in run.events.follow()]
    assert stream_problems(events) == []
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert set(failed["error"]) == {"code", "message"}
    assert failed["error"]["code"] == "server_error"
    assert failed["error"]["message"].startswith(
        "The code interpreter failed: cannot run code: the kernel died 11 times"
    )
    assert failed["output"][-1]["status"] == "failed"
    assert run.failure is not None
    assert run.failure.status == 500
    [container] = containers.list()
    assert isinstance(container.session, Kernel)
    assert not await container.session.is_alive()


@pytest.mark.sandbox
async def test_max_tool_calls_stops_running_cells(backend: ResponsesBackend) -> None:
    response, _ = await create(
        backend, input="```python\n1\n```\n```python\n2\n```", tools=AUTO, max_tool_calls=1
    )
    assert [i["type"] for i in response["output"]] == ["code_interpreter_call", "message"]
    assert response["max_tool_calls"] == 1


async def test_store_false_responses_cannot_be_retrieved(backend: ResponsesBackend) -> None:
    response, _ = await create(backend, input="hi", store=False)
    with pytest.raises(ApiError) as caught:
        backend.get(response["id"])
    assert caught.value.status == 404
    assert caught.value.message == f"Response with id '{response['id']}' not found."


async def test_unknown_previous_response_is_404_like_the_real_service(
    backend: ResponsesBackend,
) -> None:
    with pytest.raises(ApiError) as caught:
        await backend.create({"model": "m", "input": "x", "previous_response_id": "resp_nope"})
    assert (caught.value.status, caught.value.param, caught.value.message) == (
        404,
        "previous_response_id",
        "Previous response with id 'resp_nope' not found.",
    )


async def test_input_items_page_newest_first_with_cursor(backend: ResponsesBackend) -> None:
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    response, _ = await create(backend, input=inputs)
    page = backend.input_items(response["id"], limit=2)
    assert [i["content"][0]["text"] for i in page["data"]] == ["m4", "m3"]
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][1]["id"])
    rest = backend.input_items(response["id"], after=page["last_id"], limit=10)
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m2", "m1", "m0"]
    assert rest["has_more"] is False
    asc = backend.input_items(response["id"], order="asc", limit=100)
    assert [i["content"][0]["text"] for i in asc["data"]] == [f"m{i}" for i in range(5)]
    assert all(i["id"].startswith("msg_") and i["status"] == "completed" for i in asc["data"])


async def test_delete_answers_azure_shape_and_forgets_the_response(
    backend: ResponsesBackend,
) -> None:
    response, _ = await create(backend, input="hi")
    assert await backend.delete(response["id"]) == {
        "id": response["id"],
        "object": "response",
        "deleted": True,
    }
    with pytest.raises(ApiError):
        await backend.delete(response["id"])


@pytest.mark.sandbox
async def test_background_responses_start_queued_and_can_be_cancelled(
    backend: ResponsesBackend,
) -> None:
    run = await backend.create(
        {"model": "m", "input": "```python\nimport time\ntime.sleep(0.3)\n```", "tools": AUTO,
         "background": True}
    )  # fmt: skip
    assert run.response()["status"] == "queued"
    cancelled = await backend.cancel(run.id)
    assert cancelled.status == "cancelled"
