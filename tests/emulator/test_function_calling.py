"""The emulator as a scripted function-calling model, on Responses and Chat Completions.

Given a function tool that takes code, it calls it once per python block of the last user
message, reads the results, and answers with ``sandbox:`` links to the files they name. It never
runs code itself on this path (no container is made). Driven by the openai SDK; every body is
checked against the OpenAPI description by the ``emulator`` fixture.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import OpenAI

from cigate.engine.conformance import stream_problems
from cigate.engine.functions import FunctionTool, Turn, named_files, scripted_step
from cigate.testing.plugin import RunningEmulator

MODEL = "gpt-4.1"
PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "python",
    "description": "Run Python in a sandbox; /mnt/data is the working directory.",
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    "strict": True,
}
CHAT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": PYTHON_TOOL["name"],
        "parameters": PYTHON_TOOL["parameters"],
    },
}
TWO_BLOCKS = (
    "Run these:\n```python\nprint(1)\n```\nthen\n```python\n"
    "open('/mnt/data/a.csv', 'w').write('x')\n```\n"
)


def _result(*paths: str) -> str:
    return json.dumps({"status": "ok", "logs": "", "files": [f"/mnt/data/{p}" for p in paths]})


def test_the_responses_model_calls_the_function_once_per_block_then_links_the_files(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    first = client.responses.create(model=MODEL, input=TWO_BLOCKS, tools=[PYTHON_TOOL])
    [call] = first.output
    assert call.type == "function_call"
    assert call.name == "python"
    assert json.loads(call.arguments) == {"code": "print(1)\n"}
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        tools=[PYTHON_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": _result()}],
    )
    [call2] = second.output
    assert call2.type == "function_call"
    assert json.loads(call2.arguments)["code"].startswith("open('/mnt/data/a.csv'")
    third = client.responses.create(
        model=MODEL,
        previous_response_id=second.id,
        tools=[PYTHON_TOOL],
        input=[
            {"type": "function_call_output", "call_id": call2.call_id, "output": _result("a.csv")}
        ],
    )
    [message] = third.output
    assert message.type == "message"
    text = message.content[0].text
    assert "[a.csv](sandbox:/mnt/data/a.csv)" in text
    assert "I called python 2 times." in text
    assert message.content[0].annotations == []  # no container here: the caller cites


def test_the_whole_conversation_passed_back_without_previous_response_id_works_too(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    history: list[Any] = [{"role": "user", "content": TWO_BLOCKS}]
    calls = 0
    for _ in range(4):  # bounded: two calls and a reply expected
        response = client.responses.create(model=MODEL, input=history, tools=[PYTHON_TOOL])
        item = response.output[0]
        if item.type != "function_call":
            break
        calls += 1
        history.append(item.model_dump(exclude_none=True))
        history.append(
            {"type": "function_call_output", "call_id": item.call_id, "output": _result("b.png")}
        )
    assert calls == 2
    assert item.type == "message"
    assert "(sandbox:/mnt/data/b.png)" in item.content[0].text


def test_a_streamed_function_call_follows_the_service_event_order(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    with client.responses.stream(model=MODEL, input=TWO_BLOCKS, tools=[PYTHON_TOOL]) as stream:
        events = [e.model_dump() for e in stream]
        final = stream.get_final_response()
    kinds = [e["type"] for e in events]
    assert kinds[:3] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert deltas == final.output[0].arguments  # type: ignore[union-attr]
    assert stream_problems(events) == []


@pytest.mark.parametrize(
    ("tool_choice", "calls"),
    [("none", False), ("auto", True), ({"type": "function", "name": "python"}, True)],
    ids=["none-answers-in-text", "auto-calls", "forced-calls"],
)
def test_tool_choice_decides_whether_the_function_is_called(
    emulator: RunningEmulator, tool_choice: Any, calls: bool
) -> None:
    response = emulator.openai().responses.create(
        model=MODEL, input=TWO_BLOCKS, tools=[PYTHON_TOOL], tool_choice=tool_choice
    )
    assert (response.output[0].type == "function_call") is calls


def test_a_function_without_a_name_is_the_services_400(emulator: RunningEmulator) -> None:
    with emulator.http_client(headers=emulator.auth_headers) as http:
        response = http.post(
            "/openai/v1/responses",
            json={"model": MODEL, "input": "hi", "tools": [{"type": "function"}]},
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools[0].name"


def test_chat_completions_calls_the_tool_per_block_then_links_the_files(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    messages: list[Any] = [{"role": "user", "content": TWO_BLOCKS}]
    codes = []
    for _ in range(4):  # bounded
        completion = client.chat.completions.create(
            model=MODEL, messages=messages, tools=[CHAT_TOOL]
        )
        choice = completion.choices[0]
        if choice.finish_reason != "tool_calls":
            break
        [tool_call] = choice.message.tool_calls or []
        assert tool_call.type == "function"
        codes.append(json.loads(tool_call.function.arguments)["code"])
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": _result("c.txt")})
    assert codes == ["print(1)\n", "open('/mnt/data/a.csv', 'w').write('x')\n"]
    assert choice.finish_reason == "stop"
    assert "[c.txt](sandbox:/mnt/data/c.txt)" in (choice.message.content or "")


def test_streamed_chat_tool_calls_reassemble_to_the_whole_call(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": TWO_BLOCKS}],
        tools=[CHAT_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    arguments = ""
    name = None
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                name = call.function.name if call.function and call.function.name else name
                arguments += call.function.arguments or "" if call.function else ""
    assert (name, finish) == ("python", "tool_calls")
    assert json.loads(arguments) == {"code": "print(1)\n"}
    assert usage is not None
    assert usage.total_tokens > 0


def test_azure_deployment_chat_path_answers(emulator: RunningEmulator) -> None:
    client = emulator.azure_openai(api_version="2025-04-01-preview")
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "messages",
    [None, [], "hi", [{"content": "x"}], [{"role": "robot", "content": "x"}], [3]],
    ids=["missing", "empty", "string", "no-role", "bad-role", "not-object"],
)
def test_hostile_chat_bodies_get_a_400_envelope(emulator: RunningEmulator, messages: Any) -> None:
    body: dict[str, Any] = {"model": MODEL}
    if messages is not None:
        body["messages"] = messages
    with emulator.http_client(headers=emulator.auth_headers) as http:
        response = http.post("/openai/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (json.dumps({"files": ["/mnt/data/x y/é.csv"]}), ["x"]),  # a space ends the path
        (json.dumps({"files": ["/mnt/data/d/\u00e9.csv"]}), ["d/é.csv"]),
        ("wrote /mnt/data/out.png.", ["out.png"]),
        ("no files here", []),
        ("{not json /mnt/data/q.txt", ["q.txt"]),
    ],
    ids=["space-cut", "json-escape", "prose-period", "none", "broken-json"],
)
def test_named_files_reads_paths_out_of_any_result(result: str, expected: list[str]) -> None:
    assert named_files([result]) == expected


def test_the_scripted_step_is_deterministic_and_bounded_by_the_blocks() -> None:
    tool = FunctionTool("run", {}, "source")
    steps = [scripted_step(tool, Turn(TWO_BLOCKS, ["r"] * n)) for n in range(4)]
    assert [type(s).__name__ for s in steps] == ["CallFunction", "CallFunction", "str", "str"]
    assert steps == [scripted_step(tool, Turn(TWO_BLOCKS, ["r"] * n)) for n in range(4)]


def test_a_client_constructed_against_v1_base_url_works(emulator: RunningEmulator) -> None:
    client = OpenAI(
        base_url=emulator.openai_url,
        api_key=emulator.api_key,
        http_client=emulator.http_client(base_url=""),
    )
    response = client.responses.create(model=MODEL, input=TWO_BLOCKS, tools=[PYTHON_TOOL])
    assert response.output[0].type == "function_call"
