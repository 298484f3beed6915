"""Create-body validation: each refusal with the real service's status, code, param, message."""

from __future__ import annotations

from typing import Any

import pytest

from cigate.engine.errors import ApiError
from cigate.engine.request import AutoContainer, parse_create

CI = {"type": "code_interpreter", "container": {"type": "auto"}}


def ci_tool(container: Any) -> dict[str, Any]:
    return {"model": "m", "tools": [{"type": "code_interpreter", "container": container}]}


TOO_LONG = (
    "Invalid 'tools[0].container': string too long. Expected a string with maximum length 64, "
    "but got a string with length 65 instead."
)
INVALID_CASES = [
    ("missing-model", {"input": "hi"}, "model", "missing_required_parameter",
     "Missing required parameter: 'model'."),
    ("unknown-parameter", {"model": "m", "bogus": 1}, "bogus", "unknown_parameter",
     "Unknown parameter: 'bogus'."),
    ("tool-without-container", {"model": "m", "tools": [{"type": "code_interpreter"}]},
     "tools[0].container", "missing_required_parameter",
     "Missing required parameter: 'tools[0].container'."),
    ("container-id-too-long", ci_tool("c" * 65), "tools[0].container", "string_above_max_length",
     TOO_LONG),
    ("container-type", ci_tool({"type": "x"}), "tools[0].container.type", "invalid_value",
     "Invalid value: 'x'. Supported values are: 'auto'."),
    ("memory-limit", ci_tool({"type": "auto", "memory_limit": "2g"}),
     "tools[0].container.memory_limit", "invalid_value",
     "Invalid value: '2g'. Supported values are: '1g', '4g', '16g', '64g'."),
    ("include", {"model": "m", "include": ["nope"]}, "include[0]", "invalid_value", None),
    ("tool-choice", {"model": "m", "tool_choice": "sometimes"}, "tool_choice", "invalid_value",
     "Invalid value: 'sometimes'. Supported values are: 'none', 'auto', 'required'."),
    ("input-role", {"model": "m", "input": [{"role": "robot", "content": "x"}]},
     "input[0].role", "invalid_value", None),
    ("input-type", {"model": "m", "input": 3}, "input", "invalid_type",
     "Invalid type for 'input': expected a string or an array, but got an integer instead."),
    ("metadata-value", {"model": "m", "metadata": {"k": 1}}, "metadata.k", "invalid_type", None),
    ("exec-timeout", {"model": "m", "metadata": {"cigate_exec_timeout": "soon"}},
     "metadata.cigate_exec_timeout", "invalid_value", None),
    ("previous-and-conversation",
     {"model": "m", "previous_response_id": "resp_1", "conversation": "conv_1"},
     "previous_response_id", "mutually_exclusive_parameters", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param", "code", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID_CASES],
)
def test_invalid_bodies_are_refused_with_400_and_the_real_wording(
    body: dict[str, Any], param: str, code: str, message: str | None
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_create(body)
    error = caught.value
    assert (error.status, error.param, error.code, error.type) == (
        400,
        param,
        code,
        "invalid_request_error",
    )
    if message is not None:
        assert error.message == message


def test_a_string_input_is_one_user_message() -> None:
    req = parse_create({"model": "m", "input": "hi"})
    assert req.input_items == [{"type": "message", "role": "user", "content": "hi"}]


def test_the_code_interpreter_tool_is_parsed_and_everything_else_is_echoed() -> None:
    tool = {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-1"]}}
    req = parse_create(
        {
            "model": "dep",
            "input": "x",
            "tools": [{"type": "function", "name": "f", "parameters": {}}, tool],
            "include": ["code_interpreter_call.outputs"],
            "temperature": 0.2,
            "stream": True,
            "metadata": {"cigate_exec_timeout": "1.5"},
        }
    )
    assert req.code_interpreter is not None
    assert req.code_interpreter.index == 1
    assert req.code_interpreter.container == AutoContainer(("file-1",), None, None)
    assert req.include_outputs
    assert req.stream
    assert req.store
    assert req.exec_timeout == 1.5
    assert req.echo["temperature"] == 0.2
    assert req.echo["tools"][1] is tool
    assert "stream" not in req.echo
    assert "input" not in req.echo


@pytest.mark.parametrize(
    ("tool_choice", "mode"),
    [
        pytest.param("auto", "auto", id="auto"),
        pytest.param("none", "none", id="none"),
        pytest.param({"type": "code_interpreter"}, "required", id="forced"),
        pytest.param({"type": "function", "name": "f"}, "none", id="another-tool-forced"),
        pytest.param(
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "code_interpreter"}]},
            "auto",
            id="allowed",
        ),
    ],
)
def test_tool_choice_decides_whether_code_may_run(tool_choice: Any, mode: str) -> None:
    req = parse_create({"model": "m", "tools": [CI], "tool_choice": tool_choice})
    assert req.tool_mode == mode
    assert req.tool_choice == tool_choice  # echoed as sent


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conversation", 5),
        ("conversation", {"name": "x"}),
        ("prompt_cache_options", "30m"),
        ("prompt_cache_options", {"ttl": "1h", "mode": "implicit"}),
        ("prompt_cache_options", {"ttl": "30m", "mode": "sideways"}),
    ],
    ids=["conversation-number", "conversation-no-id", "cache-string", "cache-ttl", "cache-mode"],
)
def test_an_echoed_parameter_of_the_wrong_shape_is_the_services_400(field: str, value: Any) -> None:
    with pytest.raises(ApiError) as raised:
        parse_create({"model": "m", "input": "hi", field: value})
    assert raised.value.status == 400
    assert str(raised.value.param).startswith(field)


def test_moderation_settings_are_not_echoed_as_the_moderation_result() -> None:
    request = parse_create({"model": "m", "input": "hi", "moderation": {"anything": [1]}})
    assert "moderation" not in request.echo
