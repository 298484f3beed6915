"""``max_output_tokens``: a run that reaches its budget ends ``incomplete``, as the real service.

The emulator counts about four characters a token; the scripted model answers "You said: …", so a
long input makes a long answer. Every body and event here is also checked against the OpenAPI
description by the plugin's recorder.
"""

from __future__ import annotations

import openai
import pytest

from cigate.engine.conformance import stream_problems
from cigate.testing.plugin import RunningEmulator

MODEL = "gpt-4.1"
LONG = "Tell me about the quarterly numbers. " * 20  # ~740 characters, ~185 tokens
AUTO = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def test_an_answer_past_the_budget_is_cut_and_the_response_is_incomplete(
    emulator: RunningEmulator,
) -> None:
    response = emulator.openai().responses.create(model=MODEL, input=LONG, max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 16
    assert response.completed_at is None
    message = response.output[-1]
    assert message.type == "message"
    assert message.status == "incomplete"
    assert len(response.output_text) == 16 * 4
    assert LONG.startswith(response.output_text.removeprefix("You said: "))
    assert response.usage is not None
    assert response.usage.output_tokens == 16
    stored = emulator.openai().responses.retrieve(response.id)
    assert stored.status == "incomplete"
    assert stored.output_text == response.output_text


def test_an_answer_within_the_budget_completes(emulator: RunningEmulator) -> None:
    response = emulator.openai().responses.create(model=MODEL, input="hi", max_output_tokens=200)
    assert response.status == "completed"
    assert response.incomplete_details is None
    assert response.output_text.startswith("You said: hi\n")
    assert response.output[-1].status == "completed"
    assert response.usage is not None
    assert response.usage.output_tokens < 200


def test_the_stream_ends_with_response_incomplete(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    with client.responses.create(
        model=MODEL, input=LONG, max_output_tokens=20, stream=True
    ) as stream:
        events = [event.to_dict() for event in stream]
    assert stream_problems(events) == []
    assert events[-1]["type"] == "response.incomplete"
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert done[-1]["item"]["status"] == "incomplete"
    with client.responses.stream(model=MODEL, input=LONG, max_output_tokens=20) as helper:
        last = list(helper)[-1]
        # The SDK's helper only keeps a final response from response.completed, on the real
        # service too: an incomplete one is read from its terminal event.
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            helper.get_final_response()
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert len(last.response.output_text) == 20 * 4


def test_a_budget_spent_on_code_ends_before_the_answer(emulator: RunningEmulator) -> None:
    code = "total = " + " + ".join(str(n) for n in range(40)) + "\nprint(total)"  # > 64 chars
    response = emulator.openai().responses.create(
        model=MODEL,
        input=f"Run this.\n```python\n{code}\n```\n",
        tools=AUTO,  # type: ignore[list-item]
        include=["code_interpreter_call.outputs"],
        max_output_tokens=16,
    )
    assert response.status == "incomplete"
    assert [item.type for item in response.output] == ["code_interpreter_call"]
    call = response.output[0]
    assert call.type == "code_interpreter_call"
    assert call.status == "completed"  # the cell ran; only the answer was never written
    assert call.outputs is not None
    assert [o.type for o in call.outputs] == ["logs"]


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        (5, "integer_below_min_value", "Expected a value >= 16, but got 5 instead."),
        ("16", "invalid_type", "expected an integer, but got a string instead."),
    ],
)
def test_an_invalid_budget_is_refused_like_the_service(
    emulator: RunningEmulator, value: object, code: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        emulator.openai().responses.create(model=MODEL, input="hi", max_output_tokens=value)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == code
    assert body["param"] == "max_output_tokens"
    assert str(body["message"]).endswith(message)
