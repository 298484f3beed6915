"""Parsing and validating Assistants request bodies, with OpenAI's error wording.

Kept apart from the backend so the backend reads as the API's rules (who may run when, which
files exist) rather than as type checks. Only the code interpreter is a supported tool: a request
naming ``file_search`` or ``function`` is refused loudly instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cigate.engine.assistants.objects import text_block
from cigate.engine.errors import BadRequestError

__all__ = [
    "PageQuery",
    "RunParams",
    "message_content",
    "parse_assistant",
    "parse_attachments",
    "parse_metadata",
    "parse_run",
    "parse_tool_resources",
    "require_object",
]

MAX_METADATA_PAIRS = 16
#: Run parameters echoed on the run object as sent.
_ECHOED = (
    "temperature",
    "top_p",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
)


@dataclass(frozen=True)
class PageQuery:
    """``after``, ``before``, ``limit`` and ``order`` of one list request, validated."""

    after: str | None = None
    before: str | None = None
    limit: int = 20
    order: str = "desc"


@dataclass(frozen=True)
class RunParams:
    assistant_id: str
    model: str | None = None
    instructions: str | None = None
    additional_instructions: str | None = None
    additional_messages: list[Any] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    echo: dict[str, Any] = field(default_factory=dict)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequestError("Invalid type for request body: expected an object.")
    return body


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequestError(
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
        return None
    if not isinstance(value, str):
        raise BadRequestError(
            f"Invalid type for '{name}': expected a string, but got {type(value).__name__}.",
            param=name,
            code="invalid_type",
        )
    return value


def _invalid(name: str, expected: str) -> BadRequestError:
    return BadRequestError(
        f"Invalid value for '{name}': expected {expected}.", param=name, code="invalid_value"
    )


def _number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _typed(value: Any, types: tuple[str, ...]) -> bool:
    return isinstance(value, dict) and value.get("type") in types


def check_echoed(name: str, value: Any) -> Any:
    """A sampling or run option stored and echoed on objects as sent, checked first: the
    echoed object must stay one the SDK can read (the description's shapes and ranges)."""
    ok: dict[str, Callable[[Any], bool]] = {
        "temperature": lambda v: _number(v, 0, 2),
        "top_p": lambda v: _number(v, 0, 1),
        "max_prompt_tokens": lambda v: _number(v, 256, 2**31) and isinstance(v, int),
        "max_completion_tokens": lambda v: _number(v, 256, 2**31) and isinstance(v, int),
        "parallel_tool_calls": lambda v: isinstance(v, bool),
        "truncation_strategy": lambda v: (
            _typed(v, ("auto", "last_messages"))
            and (v.get("last_messages") is None or _number(v["last_messages"], 1, 2**31))
        ),
        "tool_choice": lambda v: (
            v in ("none", "auto", "required")
            or _typed(v, ("code_interpreter", "file_search"))
            or (
                _typed(v, ("function",))
                and isinstance(v.get("function"), dict)
                and isinstance(v["function"].get("name"), str)
            )
        ),
        "response_format": lambda v: (
            v == "auto"
            or _typed(v, ("text", "json_object"))
            or (
                _typed(v, ("json_schema",))
                and isinstance(v.get("json_schema"), dict)
                and isinstance(v["json_schema"].get("name"), str)
            )
        ),
    }
    expected = {
        "temperature": "a number between 0 and 2",
        "top_p": "a number between 0 and 1",
        "max_prompt_tokens": "an integer of at least 256",
        "max_completion_tokens": "an integer of at least 256",
        "parallel_tool_calls": "a boolean",
        "truncation_strategy": "an object with type 'auto' or 'last_messages'",
        "tool_choice": "'none', 'auto', 'required' or a tool object",
        "response_format": "'auto' or an object with type 'text', 'json_object' or 'json_schema'",
    }
    if not ok[name](value):
        raise _invalid(name, expected[name])
    return value


def parse_metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequestError(
            "Invalid 'metadata': expected an object of string values.",
            param="metadata",
            code="invalid_type",
        )
    if len(value) > MAX_METADATA_PAIRS:
        raise BadRequestError(
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(value)} properties "
            "instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    return dict(value)


def parse_tools(value: Any, param: str = "tools") -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequestError(
            f"Invalid type for '{param}': expected an array.", param=param, code="invalid_type"
        )
    tools = []
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "code_interpreter":
            raise BadRequestError(
                f"Invalid value: '{kind}'. The cigate emulator supports only 'code_interpreter'.",
                param=f"{param}[{i}].type",
                code="invalid_value",
            )
        tools.append({"type": "code_interpreter"})
    return tools


def parse_tool_resources(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequestError(
            "Invalid type for 'tool_resources': expected an object.",
            param="tool_resources",
            code="invalid_type",
        )
    ci = value.get("code_interpreter") or {}
    file_ids = ci.get("file_ids") or [] if isinstance(ci, dict) else None
    if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
        raise BadRequestError(
            "Invalid 'tool_resources.code_interpreter.file_ids': expected an array of strings.",
            param="tool_resources.code_interpreter.file_ids",
            code="invalid_type",
        )
    if len(file_ids) > 20:
        raise BadRequestError(
            "Invalid 'tool_resources.code_interpreter.file_ids': array too long. Expected an "
            f"array with maximum length 20, but got an array with length {len(file_ids)} "
            "instead.",
            param="tool_resources.code_interpreter.file_ids",
            code="array_above_max_length",
        )
    return {"code_interpreter": {"file_ids": list(file_ids)}}


def parse_assistant(body: dict[str, Any], *, create: bool) -> dict[str, Any]:
    """Fields of an ``Assistant`` present in the body (all required ones on create)."""
    fields: dict[str, Any] = {}
    model = _string(body, "model", required=create)
    if model is not None:
        fields["model"] = model
    for name in ("name", "description", "instructions"):
        if name in body:
            fields[name] = _string(body, name)
    if "tools" in body or create:
        fields["tools"] = parse_tools(body.get("tools"))
    if "tool_resources" in body:
        fields["tool_resources"] = parse_tool_resources(body["tool_resources"])
    if "metadata" in body or create:
        fields["metadata"] = parse_metadata(body.get("metadata"))
    for name in ("temperature", "top_p", "response_format"):
        if body.get(name) is not None:
            fields[name] = check_echoed(name, body[name])
    return fields


def message_content(value: Any, param: str) -> list[dict[str, Any]]:
    """A string, or an array of ``text``/``image_file``/``image_url`` parts, as content blocks."""
    if isinstance(value, str):
        return [text_block(value)]
    if not isinstance(value, list) or not value:
        raise BadRequestError(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    blocks = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append(text_block(part["text"]))
        elif kind in ("image_file", "image_url") and isinstance(part.get(kind), dict):
            blocks.append({"type": kind, kind: dict(part[kind])})
        else:
            raise BadRequestError(
                f"Invalid value: '{kind}'. Supported values are: 'text', 'image_file' and "
                "'image_url'.",
                param=f"{param}[{i}].type",
                code="invalid_value",
            )
    return blocks


def parse_attachments(value: Any, param: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequestError(
            f"Invalid type for '{param}': expected an array.", param=param, code="invalid_type"
        )
    out = []
    for i, item in enumerate(value):
        file_id = item.get("file_id") if isinstance(item, dict) else None
        if not isinstance(file_id, str):
            raise BadRequestError(
                f"Missing required parameter: '{param}[{i}].file_id'.",
                param=f"{param}[{i}].file_id",
                code="missing_required_parameter",
            )
        tools = parse_tools(item.get("tools"), f"{param}[{i}].tools")
        out.append({"file_id": file_id, "tools": tools})
    return out


def parse_run(body: dict[str, Any]) -> RunParams:
    assistant_id = _string(body, "assistant_id", required=True)
    assert assistant_id is not None
    extra = body.get("additional_messages") or []
    if not isinstance(extra, list):
        raise BadRequestError(
            "Invalid type for 'additional_messages': expected an array.",
            param="additional_messages",
            code="invalid_type",
        )
    return RunParams(
        assistant_id=assistant_id,
        model=_string(body, "model"),
        instructions=_string(body, "instructions"),
        additional_instructions=_string(body, "additional_instructions"),
        additional_messages=extra,
        tools=parse_tools(body["tools"]) if body.get("tools") is not None else None,
        metadata=parse_metadata(body.get("metadata")),
        stream=bool(body.get("stream")),
        echo={
            name: check_echoed(name, body[name]) for name in _ECHOED if body.get(name) is not None
        },
    )
