"""``UpstreamModel`` against generated tool arguments: only a JSON object with a string
``code`` (bounded, no NUL) is ever run; anything else is told to the model, a bounded number of
times, then a 502. The upstream is a function here (the model's answers are the input under
test); hypothesis generates them, bounded in count."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cigate.engine.errors import ApiError
from cigate.engine.model import Conversation, Reply, RunCode
from cigate.gateway.interpreter.model import MAX_BAD_CALLS, MAX_CODE_CHARS, UpstreamModel

CONVERSATION = Conversation(
    instructions=None,
    items=[{"type": "message", "role": "user", "content": "go"}],
    latest_input=[{"type": "message", "role": "user", "content": "go"}],
    code_interpreter=True,
)


def _valid(arguments: str) -> bool:
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return False
    return (
        isinstance(parsed, dict)
        and isinstance(parsed.get("code"), str)
        and len(parsed["code"]) <= MAX_CODE_CHARS
        and "\0" not in parsed["code"]
        and len(arguments) <= 2 * MAX_CODE_CHARS
    )


def _model(arguments: str, api: str) -> tuple[UpstreamModel, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    async def post(kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        seen.append(body)
        if api == "responses":
            call = {
                "type": "function_call",
                "call_id": "c",
                "name": "python",
                "arguments": arguments,
            }
            return 200, {"output": [call]}
        call = {
            "id": "c",
            "type": "function",
            "function": {"name": "python", "arguments": arguments},
        }
        return 200, {"choices": [{"message": {"role": "assistant", "tool_calls": [call]}}]}

    return UpstreamModel(post, api=api), seen


ARGUMENTS = st.one_of(
    st.text(max_size=200),
    st.builds(
        json.dumps,
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=10,
        ),
    ),
    st.builds(lambda code: json.dumps({"code": code}), st.text(max_size=200)),
)


@pytest.mark.parametrize("api", ["responses", "chat"], ids=["responses", "chat"])
@settings(max_examples=150, deadline=None)
@given(arguments=ARGUMENTS)
async def test_only_a_json_object_with_string_code_ever_runs(api: str, arguments: str) -> None:
    model, seen = _model(arguments, api)
    if _valid(arguments):
        step = await model.next_step(CONVERSATION, [])
        assert step == RunCode(json.loads(arguments)["code"])
        assert len(seen) == 1
        return
    with pytest.raises(ApiError) as caught:
        await model.next_step(CONVERSATION, [])
    assert caught.value.status == 502
    assert len(seen) == MAX_BAD_CALLS + 1


async def test_a_text_answer_is_the_reply() -> None:
    async def post(kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        part = {"type": "output_text", "text": "all done"}
        return 200, {"output": [{"type": "message", "content": [part]}]}

    assert await UpstreamModel(post).next_step(CONVERSATION, []) == Reply("all done")
