"""``POST /responses`` bodies: validation with the real service's error messages, and parsing.

Errors copy the OpenAI wording and ``param`` paths (``Missing required parameter: 'model'.``,
``Invalid 'tools[0].container': string too long…``) because clients and tests match on them.
Everything the engine does not interpret is kept in ``echo`` and sent back on the response
object, as the real service echoes its request parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cigate.engine.containers import MEMORY_LIMITS
from cigate.engine.errors import BadRequestError
from cigate.engine.items import INCLUDE_CODE_OUTPUTS

__all__ = [
    "EXEC_TIMEOUT_METADATA_KEY",
    "INCLUDABLE",
    "AutoContainer",
    "CodeInterpreterTool",
    "CreateRequest",
    "parse_create",
    "parse_input_items",
]

#: ``metadata`` key that lowers the per-cell execution timeout (seconds) for one response.
EXEC_TIMEOUT_METADATA_KEY = "cigate_exec_timeout"
#: Longest container id Azure accepts in ``tools[].container`` (api-reference §1.4).
MAX_CONTAINER_ID_CHARS = 64

INCLUDABLE = (
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    INCLUDE_CODE_OUTPUTS,
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
)

#: Top-level create parameters of SDK 3.54 (``ResponseCreateParamsBase``) plus ``stream``.
KNOWN_PARAMS = frozenset(
    (
        "access_programs", "background", "background_options", "context_management",
        "conversation", "image", "include", "input", "instructions", "max_output_tokens",
        "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
        "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
        "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
        "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
        "top_logprobs", "top_p", "truncation", "user",
    )
)  # fmt: skip
_CI = "code_interpreter"
_ROLES = ("user", "assistant", "system", "developer")
_TOOL_CHOICE_MODES = ("none", "auto", "required")


@dataclass(frozen=True)
class AutoContainer:
    """``{"type": "auto", "file_ids": [...], "memory_limit": "4g"}``: a new or reused container."""

    file_ids: tuple[str, ...] = ()
    memory_limit: str | None = None
    network_policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class CodeInterpreterTool:
    index: int
    container: str | AutoContainer


@dataclass(frozen=True)
class CreateRequest:
    model: str
    #: ``input`` normalised to a list of items (a string becomes one user message).
    input_items: list[dict[str, Any]]
    instructions: str | None
    tools: list[dict[str, Any]]
    code_interpreter: CodeInterpreterTool | None
    #: The wire value, echoed as sent (``"auto"`` when absent).
    tool_choice: Any
    #: ``"none"``, ``"auto"`` or ``"required"``: what the model may or must do.
    tool_mode: str
    include: tuple[str, ...]
    previous_response_id: str | None
    store: bool
    stream: bool
    background: bool
    metadata: dict[str, str]
    max_tool_calls: int | None
    #: Output budget; a run that reaches it ends ``incomplete`` (reason ``max_output_tokens``).
    max_output_tokens: int | None
    #: ``stream_options.include_obfuscation`` (default on): pad streamed deltas.
    include_obfuscation: bool
    #: ``text.format`` when it asks for JSON (``json_schema``/``json_object``), else ``None``.
    text_format: dict[str, Any] | None
    exec_timeout: float | None
    #: Other parameters the response object echoes.
    echo: dict[str, Any] = field(default_factory=dict)

    @property
    def include_outputs(self) -> bool:
        return INCLUDE_CODE_OUTPUTS in self.include


def parse_create(body: Any) -> CreateRequest:
    """Validate a create body and return it parsed; raise ``BadRequestError`` as the service."""
    if not isinstance(body, dict):
        raise BadRequestError(
            "Invalid type for request body: expected an object.", code="invalid_type"
        )
    for key in body:
        if key not in KNOWN_PARAMS:
            raise BadRequestError(
                f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
            )
    model = body.get("model")
    if model is None or model == "":
        raise _missing("model")
    _expect(isinstance(model, str), "model", "a string", model)
    instructions = body.get("instructions")
    ok = instructions is None or isinstance(instructions, str)
    _expect(ok, "instructions", "a string", instructions)
    tools = body.get("tools") or []
    _expect(isinstance(tools, list), "tools", "an array", tools)
    metadata = body.get("metadata") or {}
    _check_metadata(metadata)
    tool_choice = body.get("tool_choice", "auto")
    include = body.get("include") or []
    _expect(isinstance(include, list), "include", "an array", include)
    for i, value in enumerate(include):
        if value not in INCLUDABLE:
            raise _invalid_value(f"include[{i}]", value, INCLUDABLE)
    previous = body.get("previous_response_id")
    _expect(
        previous is None or isinstance(previous, str), "previous_response_id", "a string", previous
    )
    if previous is not None and body.get("conversation") is not None:
        raise BadRequestError(
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'.",
            param="previous_response_id",
            code="mutually_exclusive_parameters",
        )
    max_tool_calls = body.get("max_tool_calls")
    _expect(
        max_tool_calls is None or (isinstance(max_tool_calls, int) and max_tool_calls >= 1),
        "max_tool_calls",
        "a positive integer",
        max_tool_calls,
    )
    max_output_tokens = _max_output_tokens(body.get("max_output_tokens"))
    include_obfuscation = _include_obfuscation(body.get("stream_options"))
    text_format = _text_format(body.get("text"))
    store = body.get("store")
    background = bool(body.get("background"))
    if background and store is False:
        raise BadRequestError(
            "Background mode requires 'store' to be true.", param="background", code=None
        )
    _check_echoed_shapes(body)
    echo = {
        k: v
        for k, v in body.items()
        # ``moderation`` on a response is the moderation *result*, not the request's setting.
        if k
        not in ("input", "stream", "stream_options", "include", "store", "background", "moderation")
    }
    return CreateRequest(
        model=model,
        input_items=parse_input_items(body.get("input")),
        instructions=instructions,
        tools=tools,
        code_interpreter=_code_interpreter(tools),
        tool_choice=tool_choice,
        tool_mode=_tool_mode(tool_choice),
        include=tuple(include),
        previous_response_id=previous,
        store=store is not False,
        stream=bool(body.get("stream")),
        background=background,
        metadata=metadata,
        max_tool_calls=max_tool_calls,
        max_output_tokens=max_output_tokens,
        include_obfuscation=include_obfuscation,
        text_format=text_format,
        exec_timeout=_exec_timeout(metadata),
        echo=echo,
    )


def parse_input_items(value: Any, param: str = "input") -> list[dict[str, Any]]:
    """``input`` (or a conversation's ``items``) as a list of checked items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    _expect(isinstance(value, list), param, "a string or an array", value)
    items: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        _expect(isinstance(item, dict), f"{param}[{i}]", "an object", item)
        kind = item.get("type", "message")
        if kind == "message" or ("role" in item and "type" not in item):
            role = item.get("role")
            if role not in _ROLES:
                if role is None:
                    raise _missing(f"{param}[{i}].role")
                raise _invalid_value(f"{param}[{i}].role", role, _ROLES)
            content = item.get("content")
            if content is None:
                raise _missing(f"{param}[{i}].content")
            ok = isinstance(content, (str, list))
            _expect(ok, f"{param}[{i}].content", "a string or an array", content)
            if isinstance(content, list):
                for j, part in enumerate(content):
                    _expect(
                        isinstance(part, dict) and isinstance(part.get("type"), str),
                        f"{param}[{i}].content[{j}]",
                        "an object with a type",
                        part,
                    )
            items.append({"type": "message", **item})
        else:
            items.append(dict(item))
    return items


def _code_interpreter(tools: list[Any]) -> CodeInterpreterTool | None:
    found: CodeInterpreterTool | None = None
    for i, tool in enumerate(tools):
        _expect(isinstance(tool, dict), f"tools[{i}]", "an object", tool)
        if "type" not in tool:
            raise _missing(f"tools[{i}].type")
        if tool["type"] == "function":
            if tool.get("name") is None:
                raise _missing(f"tools[{i}].name")
            _expect(isinstance(tool["name"], str), f"tools[{i}].name", "a string", tool["name"])
        if tool["type"] != "code_interpreter":
            continue
        if "container" not in tool:
            raise _missing(f"tools[{i}].container")
        container = tool["container"]
        param = f"tools[{i}].container"
        if isinstance(container, str):
            if len(container) > MAX_CONTAINER_ID_CHARS:
                raise BadRequestError(
                    f"Invalid '{param}': string too long. Expected a string with maximum "
                    f"length {MAX_CONTAINER_ID_CHARS}, but got a string with length "
                    f"{len(container)} instead.",
                    param=param,
                    code="string_above_max_length",
                )
            found = CodeInterpreterTool(i, container)
        elif isinstance(container, dict):
            found = CodeInterpreterTool(i, _auto_container(container, param))
        else:
            _expect(False, param, "a string or an object", container)
    return found


def _auto_container(container: dict[str, Any], param: str) -> AutoContainer:
    kind = container.get("type")
    if kind is None:
        raise _missing(f"{param}.type")
    if kind != "auto":
        raise _invalid_value(f"{param}.type", kind, ("auto",))
    file_ids = container.get("file_ids") or []
    _expect(
        isinstance(file_ids, list) and all(isinstance(f, str) for f in file_ids),
        f"{param}.file_ids",
        "an array of strings",
        file_ids,
    )
    memory_limit = container.get("memory_limit")
    if memory_limit is not None and memory_limit not in MEMORY_LIMITS:
        raise _invalid_value(f"{param}.memory_limit", memory_limit, MEMORY_LIMITS)
    return AutoContainer(tuple(file_ids), memory_limit, container.get("network_policy"))


def _tool_mode(tool_choice: Any) -> str:
    if isinstance(tool_choice, str):
        if tool_choice not in _TOOL_CHOICE_MODES:
            raise _invalid_value("tool_choice", tool_choice, _TOOL_CHOICE_MODES)
        return tool_choice
    if isinstance(tool_choice, dict):
        if tool_choice.get("type") == "code_interpreter":
            return "required"
        if tool_choice.get("type") == "allowed_tools":
            allowed = tool_choice.get("tools") or []
            if not any(isinstance(t, dict) and t.get("type") == _CI for t in allowed):
                return "none"
            return "required" if tool_choice.get("mode") == "required" else "auto"
        return "none"  # another tool is forced: the code interpreter is not called
    _expect(False, "tool_choice", "a string or an object", tool_choice)
    return "auto"


def _check_metadata(metadata: Any) -> None:
    _expect(isinstance(metadata, dict), "metadata", "an object", metadata)
    if len(metadata) > 16:
        raise BadRequestError(
            f"Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        _expect(isinstance(value, str), f"metadata.{key}", "a string", value)


def _exec_timeout(metadata: dict[str, str]) -> float | None:
    raw = metadata.get(EXEC_TIMEOUT_METADATA_KEY)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise BadRequestError(
            f"Invalid 'metadata.{EXEC_TIMEOUT_METADATA_KEY}': expected a positive number of "
            f"seconds, got '{raw}'.",
            param=f"metadata.{EXEC_TIMEOUT_METADATA_KEY}",
            code="invalid_value",
        )
    return seconds


def _missing(param: str) -> BadRequestError:
    return BadRequestError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _invalid_value(param: str, value: Any, allowed: tuple[str, ...]) -> BadRequestError:
    choices = ", ".join(f"'{a}'" for a in allowed)
    return BadRequestError(
        f"Invalid value: '{value}'. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


#: The service's floor for ``max_output_tokens``.
MIN_OUTPUT_TOKENS = 16


_TEXT_FORMATS = ("text", "json_schema", "json_object")


def _text_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    _expect(isinstance(text, dict), "text", "an object", text)
    fmt = text.get("format")
    if fmt is None:
        return None
    _expect(isinstance(fmt, dict), "text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind is None:
        raise _missing("text.format.type")
    if kind not in _TEXT_FORMATS:
        raise _invalid_value("text.format.type", kind, _TEXT_FORMATS)
    if kind == "json_schema":
        if not fmt.get("name"):
            raise _missing("text.format.name")
        if fmt.get("schema") is None:
            raise _missing("text.format.schema")
        _expect(isinstance(fmt["schema"], dict), "text.format.schema", "an object", fmt["schema"])
    return None if kind == "text" else dict(fmt)


def _include_obfuscation(options: Any) -> bool:
    if options is None:
        return True
    _expect(isinstance(options, dict), "stream_options", "an object", options)
    flag = options.get("include_obfuscation", True)
    _expect(isinstance(flag, bool), "stream_options.include_obfuscation", "a boolean", flag)
    return bool(flag)


def _max_output_tokens(value: Any) -> int | None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
    _expect(ok, "max_output_tokens", "an integer", value)
    if value is not None and value < MIN_OUTPUT_TOKENS:
        raise BadRequestError(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {value} instead.",
            param="max_output_tokens",
            code="integer_below_min_value",
        )
    return value  # type: ignore[no-any-return]


#: ``prompt_cache_options`` values the service knows (the response echoes them).
_CACHE_TTLS = ("30m",)
_CACHE_MODES = ("implicit", "explicit")


def _check_echoed_shapes(body: dict[str, Any]) -> None:
    """Parameters the response echoes must have the shape the response gives them, or the
    service's 400: an echoed value of another shape would make the response itself invalid."""
    conversation = body.get("conversation")
    ok = conversation is None or isinstance(conversation, str)
    ok = ok or (isinstance(conversation, dict) and isinstance(conversation.get("id"), str))
    _expect(ok, "conversation", "a string or an object with an id", conversation)
    options = body.get("prompt_cache_options")
    if options is not None:
        _expect(isinstance(options, dict), "prompt_cache_options", "an object", options)
        if options.get("ttl") not in _CACHE_TTLS:
            raise _invalid_value("prompt_cache_options.ttl", options.get("ttl"), _CACHE_TTLS)
        if options.get("mode") not in _CACHE_MODES:
            raise _invalid_value("prompt_cache_options.mode", options.get("mode"), _CACHE_MODES)


def _expect(ok: bool, param: str, expected: str, value: Any) -> None:
    if not ok:
        got = type(value).__name__ if value is not None else "null"
        raise BadRequestError(
            f"Invalid type for '{param}': expected {expected}, but got {_json_type(got)} instead.",
            param=param,
            code="invalid_type",
        )


def _json_type(python_type: str) -> str:
    return {
        "str": "a string",
        "int": "an integer",
        "float": "a decimal",
        "bool": "a boolean",
        "list": "an array",
        "dict": "an object",
        "null": "null",
    }.get(python_type, python_type)
