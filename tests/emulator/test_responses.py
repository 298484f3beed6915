"""Responses create/retrieve/delete/input items through the real openai SDK (api-reference §1).

Every body the emulator sends here is validated against the OpenAPI spec by the fixture.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import openai
import pytest
from openai import OpenAI

from cigate.testing.plugin import RunningEmulator

MODEL = "gpt-4.1"
AUTO: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]
OUTPUTS: list[Any] = ["code_interpreter_call.outputs"]


def cell(code: str) -> str:
    return f"Please run this:\n```python\n{code}\n```"


def test_a_cell_runs_and_its_file_is_cited_and_downloadable(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    raw = client.responses.with_raw_response.create(
        model=MODEL,
        input=cell("with open('/mnt/data/squares.csv', 'w') as f:\n    f.write('n,sq\\n3,9\\n')"),
        tools=AUTO,
    )
    body = raw.http_response.json()
    assert body["tools"] == AUTO  # echoed as sent, not resolved to the container id
    assert isinstance(body["created_at"], int)
    assert (body["object"], body["parallel_tool_calls"], body["tool_choice"]) == (
        "response",
        True,
        "auto",
    )
    assert set(body["usage"]) == {
        "input_tokens",
        "input_tokens_details",
        "output_tokens",
        "output_tokens_details",
        "total_tokens",
    }
    response = raw.parse()
    assert response.status == "completed"
    assert response.model == MODEL
    call, message = response.output
    assert call.type == "code_interpreter_call"
    assert call.status == "completed"
    assert call.id.startswith("ci_")
    assert call.outputs is None  # not included
    assert message.type == "message"
    [citation] = message.content[0].annotations
    text = message.content[0].text
    assert text[citation.start_index : citation.end_index] == "sandbox:/mnt/data/squares.csv"
    assert citation.filename == "squares.csv"
    assert citation.container_id == call.container_id
    content = client.containers.files.content.retrieve(
        citation.file_id, container_id=citation.container_id
    )
    assert content.read() == b"n,sq\n3,9\n"
    listed = client.containers.files.retrieve(citation.file_id, container_id=call.container_id)
    assert (listed.source, listed.path) == ("assistant", "/mnt/data/squares.csv")


def test_included_outputs_carry_logs(emulator: RunningEmulator) -> None:
    response = emulator.openai().responses.create(
        model=MODEL, input=cell("print('hello')\n6 * 7"), tools=AUTO, include=OUTPUTS
    )
    outputs = response.output[0].outputs
    assert outputs is not None
    assert [o.type for o in outputs] == ["logs"]
    assert outputs[0].logs == "hello\n42"


def test_a_matplotlib_figure_becomes_a_png_data_url(emulator: RunningEmulator) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    response = emulator.openai().responses.create(
        model=MODEL, input=cell(code), tools=AUTO, include=OUTPUTS
    )
    outputs = response.output[0].outputs or []
    images = [o for o in outputs if o.type == "image"]
    assert len(images) == 1
    header, payload = images[0].url.split(",", 1)
    assert header == "data:image/png;base64"
    assert base64.b64decode(payload).startswith(b"\x89PNG\r\n\x1a\n")


def test_a_cell_that_raises_completes_with_the_traceback_in_its_logs(
    emulator: RunningEmulator,
) -> None:
    response = emulator.openai().responses.create(
        model=MODEL, input=cell("print('before')\n1 / 0"), tools=AUTO, include=OUTPUTS
    )
    call, message = response.output
    assert call.status == "completed"
    logs = call.outputs[0].logs  # type: ignore[index,union-attr]
    assert logs.startswith("before")
    assert "ZeroDivisionError" in logs
    assert "Traceback" in logs or "----> " in logs
    assert "raised ZeroDivisionError: division by zero" in message.content[0].text


def test_a_cell_past_its_deadline_is_interrupted(emulator: RunningEmulator) -> None:
    response = emulator.openai().responses.create(
        model=MODEL,
        input=cell("import time\ntime.sleep(30)"),
        tools=AUTO,
        include=OUTPUTS,
        metadata={"cigate_exec_timeout": "0.5"},
    )
    call, message = response.output
    assert call.status == "incomplete"
    assert "interrupted" in call.outputs[0].logs  # type: ignore[index,union-attr]
    assert "exceeded its time limit and was interrupted" in message.content[0].text
    assert response.metadata == {"cigate_exec_timeout": "0.5"}


def test_previous_response_id_keeps_the_kernel_state(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    first = client.responses.create(model=MODEL, input=cell("secret = 41"), tools=AUTO)
    second = client.responses.create(
        model=MODEL,
        input=cell("print(secret + 1)"),
        tools=AUTO,
        previous_response_id=first.id,
        include=OUTPUTS,
    )
    assert second.output[0].container_id == first.output[0].container_id  # type: ignore[union-attr]
    assert second.output[0].outputs[0].logs == "42"  # type: ignore[index,union-attr]
    assert second.previous_response_id == first.id


def test_an_explicit_container_id_is_used(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    container = client.containers.create(name="explicit")
    tools: list[Any] = [{"type": "code_interpreter", "container": container.id}]
    response = client.responses.create(model=MODEL, input=cell("x = 1"), tools=tools)
    assert response.output[0].container_id == container.id  # type: ignore[union-attr]
    assert response.tools[0].container == container.id  # type: ignore[union-attr]


def test_auto_container_file_ids_are_visible_to_the_code_as_user_files(
    emulator: RunningEmulator,
) -> None:
    client = emulator.azure_openai()
    uploaded = client.files.create(file=("numbers.csv", b"n\n1\n2\n3\n"), purpose="assistants")
    code = (
        "import glob, pandas as pd\n"
        "[path] = glob.glob('/mnt/data/*numbers.csv')\n"
        "print(pd.read_csv(path)['n'].sum())"
    )
    tools: list[Any] = [
        {"type": "code_interpreter", "container": {"type": "auto", "file_ids": [uploaded.id]}}
    ]
    response = client.responses.create(model=MODEL, input=cell(code), tools=tools, include=OUTPUTS)
    call = response.output[0]
    assert call.outputs[0].logs == "6"  # type: ignore[index,union-attr]
    v1 = emulator.openai()
    files = list(v1.containers.files.list(call.container_id))  # type: ignore[union-attr]
    assert [(f.source, f.path.endswith("-numbers.csv")) for f in files] == [("user", True)]


def test_an_expired_container_gives_400_container_is_expired(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    first = client.responses.create(model=MODEL, input=cell("1"), tools=AUTO)
    emulator.control.advance_clock(21 * 60)
    cid = first.output[0].container_id  # type: ignore[union-attr]
    for extra in (
        {"tools": AUTO, "previous_response_id": first.id},
        {"tools": [{"type": "code_interpreter", "container": cid}]},
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=MODEL, input=cell("2"), **extra)
        assert caught.value.status_code == 400
        assert caught.value.message == "Error code: 400 - Container is expired."


INVALID = [
    ("missing-model", {"input": "hi"}, 400, "model", "missing_required_parameter",
     "Missing required parameter: 'model'."),
    ("unknown-previous-response",
     {"model": MODEL, "input": "hi", "previous_response_id": "resp_nope"}, 404,
     "previous_response_id", None, "Previous response with id 'resp_nope' not found."),
    ("container-too-long",
     {"model": MODEL, "input": "hi",
      "tools": [{"type": "code_interpreter", "container": "cntr_" + "a" * 60}]},
     400, "tools[0].container", "string_above_max_length", None),
    ("container-of-64-chars-is-looked-up",
     {"model": MODEL, "input": "hi",
      "tools": [{"type": "code_interpreter", "container": "cntr_" + "a" * 59}]},
     404, "container_id", None, f"Container with id 'cntr_{'a' * 59}' not found."),
    ("unknown-container",
     {"model": MODEL, "input": "hi",
      "tools": [{"type": "code_interpreter", "container": "cntr_nope"}]},
     404, "container_id", None, "Container with id 'cntr_nope' not found."),
    ("bad-include", {"model": MODEL, "input": "hi", "include": ["bogus"]}, 400, "include[0]",
     "invalid_value", None),
    ("unknown-parameter", {"model": MODEL, "input": "hi", "extra_body": {"colour": "red"}}, 400,
     "colour", "unknown_parameter", "Unknown parameter: 'colour'."),
    ("obfuscation-not-a-boolean",
     {"model": MODEL, "input": "hi", "stream_options": {"include_obfuscation": "no"}},
     400, "stream_options.include_obfuscation", "invalid_type", None),
]  # fmt: skip


@pytest.mark.parametrize("case", [pytest.param(c[1:], id=c[0]) for c in INVALID])
def test_invalid_requests_are_refused_like_the_real_service(
    emulator: RunningEmulator, case: tuple[Any, ...]
) -> None:
    kwargs, status, param, code, message = case
    client = emulator.openai()
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(**kwargs)
    error = caught.value
    assert error.status_code == status
    assert error.param == param
    assert error.code == code
    assert error.type == "invalid_request_error"
    if message is not None:
        assert error.message == f"Error code: {status} - {message}"


def test_a_response_is_retrieved_deleted_and_then_gone(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    created = client.responses.create(model=MODEL, input=cell("print(1)"), tools=AUTO)
    again = client.responses.retrieve(created.id)
    assert again.id == created.id
    assert again.output[0].outputs is None  # type: ignore[union-attr]
    with_outputs = client.responses.retrieve(created.id, include=OUTPUTS)
    assert with_outputs.output[0].outputs[0].logs == "1"  # type: ignore[index,union-attr]
    raw = client.responses.with_raw_response.delete(created.id)
    assert raw.http_response.json() == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(created.id)
    assert caught.value.message == f"Error code: 404 - Response with id '{created.id}' not found."


def test_store_false_responses_are_not_retrievable(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    created = client.responses.create(model=MODEL, input="hello", store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_input_items_page_through_the_sdk_cursor(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    inputs: Any = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    created = client.responses.create(model=MODEL, input=inputs)
    page = client.responses.input_items.list(created.id, limit=2)
    assert page.has_more is True
    assert [i.content[0].text for i in page.data] == ["message 4", "message 3"]  # type: ignore[union-attr]
    everything = list(client.responses.input_items.list(created.id, limit=2))
    assert [i.content[0].text for i in everything] == [f"message {i}" for i in range(4, -1, -1)]  # type: ignore[union-attr]
    first = everything[-1]
    assert first.type == "message"
    assert first.id.startswith("msg_")
    assert first.status == "completed"  # type: ignore[union-attr]
    asc = client.responses.input_items.list(created.id, order="asc")
    assert [i.id for i in asc.data] == [i.id for i in reversed(everything)]


def test_text_without_code_is_a_plain_answer(emulator: RunningEmulator) -> None:
    response = emulator.openai().responses.create(
        model=MODEL, input="What is 2 + 2?", instructions="Be brief."
    )
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text.startswith("You said: What is 2 + 2?")
    assert response.instructions == "Be brief."


@pytest.mark.parametrize(
    "make_client",
    [
        pytest.param(lambda e: e.openai(), id="openai-v1"),
        pytest.param(lambda e: e.azure_openai(api_version="2025-04-01-preview"), id="azure-legacy"),
        pytest.param(lambda e: e.azure_openai(api_version="preview", base_url=e.v1_url),
                     id="azure-v1"),
        pytest.param(lambda e: e.openai(base_url=e.openai_url), id="openai-style"),
    ],
)  # fmt: skip
def test_every_client_form_creates_and_retrieves_responses(
    emulator: RunningEmulator, make_client: Any
) -> None:
    client: OpenAI = make_client(emulator)
    response = client.responses.create(model="my-deployment", input="Which URL form is this?")
    assert response.model == "my-deployment"
    assert response.output_text.startswith("You said: Which URL form is this?")
    assert client.responses.retrieve(response.id).status == "completed"


async def test_the_async_client_creates_a_response(emulator: RunningEmulator) -> None:
    client = emulator.async_openai()
    response = await client.responses.create(
        model=MODEL, input=cell("print('async')"), tools=AUTO, include=OUTPUTS
    )
    assert response.output[0].outputs[0].logs == "async"  # type: ignore[index,union-attr]
    await client.close()


def test_a_background_response_is_queued_then_polled_to_completion(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    queued = client.responses.create(
        model=MODEL, input=cell("print('later')"), tools=AUTO, background=True, include=OUTPUTS
    )
    assert queued.status == "queued"
    assert queued.background is True
    deadline = time.monotonic() + 30
    polled = client.responses.retrieve(queued.id, include=OUTPUTS)
    while polled.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.05)
        polled = client.responses.retrieve(queued.id, include=OUTPUTS)
    assert polled.status == "completed"
    assert polled.output[0].outputs[0].logs == "later"  # type: ignore[index,union-attr]


def test_only_background_responses_can_be_cancelled(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    done = client.responses.create(model=MODEL, input="hi")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(done.id)
    assert caught.value.message == (
        "Error code: 400 - Only responses created with background mode enabled can be cancelled."
    )


def test_input_items_default_to_twenty_newest_first_and_bound_the_limit(
    emulator: RunningEmulator,
) -> None:
    # §7.8: input-item lists default to order=desc and limit=20; limit is 1-100.
    client = emulator.openai()
    inputs: Any = [{"role": "user", "content": f"m{i}"} for i in range(25)]
    created = client.responses.create(model=MODEL, input=inputs)
    page = client.responses.input_items.list(created.id)
    assert len(page.data) == 20
    assert page.has_more is True
    assert page.data[0].content[0].text == "m24"  # type: ignore[union-attr]
    http = emulator.http_client(headers=emulator.auth_headers)
    for limit, code in (("0", "integer_below_min_value"), ("101", "integer_above_max_value")):
        reply = http.get(f"/openai/v1/responses/{created.id}/input_items", params={"limit": limit})
        assert reply.status_code == 400
        assert (reply.json()["error"]["param"], reply.json()["error"]["code"]) == ("limit", code)
    assert (
        len(http.get(f"/openai/v1/responses/{created.id}/input_items?limit=100").json()["data"])
        == 25
    )


def test_include_is_read_from_bracketed_query_parameters(emulator: RunningEmulator) -> None:
    # §1.1: the SDK sends array query parameters as ``include%5B%5D=...``.
    created = emulator.openai().responses.create(model=MODEL, input=cell("print(7)"), tools=AUTO)
    http = emulator.http_client(headers=emulator.auth_headers)
    path = f"/openai/v1/responses/{created.id}"
    plain = http.get(path).json()
    bracketed = http.get(path + "?include%5B%5D=code_interpreter_call.outputs").json()
    assert plain["output"][0]["outputs"] is None
    assert bracketed["output"][0]["outputs"] == [{"type": "logs", "logs": "7"}]
    refused = http.get(path + "?include%5B%5D=nope")
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "include[0]"
    items = http.get(path + "/input_items?include%5B%5D=code_interpreter_call.outputs")
    assert items.status_code == 200
