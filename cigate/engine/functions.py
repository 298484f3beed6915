"""Function tools and the scripted function-calling model, for the Responses and Chat APIs.

The self-hosted code interpreter (``cigate.gateway.interpreter``) needs an upstream that calls
*functions*, not the hosted tool; tests need one that works offline and decides the same way
every time. Given a function tool that takes code, the scripted model calls it with each fenced
python block of the last user message in turn (one call per model turn, as a real model does),
reads the function results that follow, and then answers with a ``sandbox:/mnt/data/...`` link
per file the results name. Both APIs reduce their conversation to a :class:`Turn` first, so the
decisions are one function, :func:`scripted_step`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cigate.engine.text import extract_code_blocks, message_text, sandbox_url
from cigate.sandbox.base import MOUNT_POINT

__all__ = [
    "CallFunction",
    "FunctionTool",
    "Turn",
    "code_function",
    "function_report",
    "function_tools",
    "named_files",
    "responses_turn",
    "scripted_step",
]

#: A path under /mnt/data in a function result; it ends where a quote, bracket or space does.
_MOUNT_PATH = re.compile(re.escape(MOUNT_POINT) + r"/([^\s\"'`<>()\[\]{},;|]+)")
#: Longest function result the scripted model reads for file names (a hostile result is cut).
_MAX_RESULT_CHARS = 1 << 20
#: Property names taken as "the code" of a function, in order of preference.
_CODE_NAMES = ("code", "source", "python", "script", "input")


@dataclass(frozen=True)
class FunctionTool:
    """A function tool as both APIs declare it; ``code_param`` is the string it takes code in."""

    name: str
    parameters: dict[str, Any]
    code_param: str | None


@dataclass(frozen=True)
class CallFunction:
    """Model step: call the function ``name`` with ``arguments`` (a JSON text)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Turn:
    """What the scripted model reads: the last user message and the results that followed it."""

    user_text: str
    results: Sequence[str]


def function_tools(tools: Iterable[Any]) -> tuple[FunctionTool, ...]:
    """Every well-formed function tool, in either API's shape (``{"type": "function", "name"}``
    on Responses, ``{"type": "function", "function": {"name"}}`` on Chat Completions)."""
    found: list[FunctionTool] = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        nested = tool.get("function")
        spec: dict[str, Any] = nested if isinstance(nested, dict) else tool
        name = spec.get("name")
        parameters = spec.get("parameters")
        if not isinstance(name, str) or not name:
            continue
        parameters = parameters if isinstance(parameters, dict) else {}
        found.append(FunctionTool(name, parameters, _code_param(parameters)))
    return tuple(found)


def code_function(tools: Sequence[FunctionTool]) -> FunctionTool | None:
    """The first function that takes code, or ``None``."""
    return next((t for t in tools if t.code_param is not None), None)


def _code_param(parameters: dict[str, Any]) -> str | None:
    """The string property that carries code: a well-known name, else the only string one."""
    props = parameters.get("properties")
    if not isinstance(props, dict):
        return None
    strings = [
        name
        for name, schema in props.items()
        if isinstance(schema, dict) and schema.get("type") == "string"
    ]
    for name in _CODE_NAMES:
        if name in strings:
            return name
    return strings[0] if len(strings) == 1 else None


def scripted_step(tool: FunctionTool, turn: Turn) -> CallFunction | str:
    """The next call (one per python block not yet run), else the reply text."""
    blocks = extract_code_blocks(turn.user_text)
    if len(turn.results) < len(blocks):
        code = blocks[len(turn.results)]
        return CallFunction(tool.name, json.dumps({tool.code_param: code}, ensure_ascii=False))
    return function_report(tool.name, turn.results)


def function_report(name: str, results: Sequence[str]) -> str:
    """The reply after the calls: how many, then one link per file the results name."""
    calls = len(results)
    lines = [f"I called {name} {calls} time{'s' if calls != 1 else ''}."]
    files = named_files(results)
    if files:
        lines.append("")
        lines.append("Files:" if len(files) > 1 else "File:")
        lines.extend(f"- [{path.rsplit('/', 1)[-1]}]({sandbox_url(path)})" for path in files)
    return "\n".join(lines)


def named_files(results: Sequence[str]) -> list[str]:
    """Paths relative to /mnt/data named in the results (JSON strings read as text), each once."""
    seen: dict[str, None] = {}
    for result in results:
        for text in _strings(result[:_MAX_RESULT_CHARS]):
            for match in _MOUNT_PATH.finditer(text):
                seen.setdefault(match.group(1).rstrip("."), None)
    return [path for path in seen if path]


def _strings(result: str) -> list[str]:
    """The strings inside a JSON result (so escapes are decoded), or the result itself."""
    try:
        parsed = json.loads(result)
    except ValueError:
        return [result]
    out: list[str] = []
    stack = [parsed]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return out


def responses_turn(items: Sequence[dict[str, Any]]) -> Turn:
    """The Responses conversation as a :class:`Turn`: ``function_call_output`` items after the
    last user message are the results (their ``output`` string, or its text parts)."""
    last_user = max(
        (
            i
            for i, item in enumerate(items)
            if item.get("role") == "user" and item.get("type", "message") == "message"
        ),
        default=-1,
    )
    if last_user < 0:
        return Turn("", ())
    results = [
        _output_text(item.get("output"))
        for item in items[last_user + 1 :]
        if item.get("type") == "function_call_output"
    ]
    return Turn(message_text(items[last_user]), results)


def chat_turn(messages: Sequence[dict[str, Any]]) -> Turn:
    """The Chat Completions conversation as a :class:`Turn`: ``tool`` messages are results."""
    last_user = max(
        (i for i, m in enumerate(messages) if m.get("role") == "user"),
        default=-1,
    )
    if last_user < 0:
        return Turn("", ())
    results = [
        _output_text(m.get("content")) for m in messages[last_user + 1 :] if m.get("role") == "tool"
    ]
    return Turn(message_text(messages[last_user]), results)


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in output
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
