"""Chat Completions with function tools: the emulator as an offline function-calling model.

Any OpenAI-compatible server (vLLM, Ollama, llama.cpp, Azure deployments) speaks this API; the
self-hosted code interpreter drives such a model, so the emulator answers it with the scripted
function-calling model of :mod:`cigate.engine.functions`: one ``tool_calls`` entry per python
block of the last user message, then a reply linking the files the ``tool`` results name. It
has no code interpreter here: nothing runs in the emulator on this path.

Served at ``/chat/completions`` (v1 and OpenAI prefixes) and at Azure's dated
``/deployments/{deployment}/chat/completions``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cigate import ids
from cigate.emulator.bodies import json_object
from cigate.emulator.state import emulator_state
from cigate.engine.errors import BadRequestError
from cigate.engine.functions import CallFunction, code_function, function_tools, scripted_step
from cigate.engine.functions import chat_turn as _chat_turn
from cigate.engine.items import split_text, tokens
from cigate.engine.model import echo
from cigate.engine.replies import SSE_HEADERS
from cigate.engine.store import deployment_not_found
from cigate.engine.text import message_text

__all__ = ["LEGACY_ROUTES", "ROUTES"]

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


async def create_completion(request: Request) -> Response:
    body = await json_object(request)
    model = request.path_params.get("deployment") or body.get("model")
    if not model:
        raise _missing("model")
    if not isinstance(model, str):
        raise _type("model", "a string", model)
    deployments = emulator_state(request.app).settings.deployments
    if deployments and model not in deployments:
        raise deployment_not_found()
    messages = _messages(body.get("messages"))
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _type("tools", "an array", tools)
    choice = body.get("tool_choice", "auto")
    usable = () if choice == "none" else function_tools(tools)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        usable = tuple(t for t in usable if t.name == choice["function"].get("name"))
    tool = code_function(usable)
    turn = _chat_turn(messages)
    step: CallFunction | str = (
        scripted_step(tool, turn) if tool is not None else echo(turn.user_text)
    )
    completion = _Completion(model, step, prompt_chars=sum(len(message_text(m)) for m in messages))
    if body.get("stream"):
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(
            completion.chunks(with_usage), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return JSONResponse(completion.body())


class _Completion:
    """One answer, rendered whole (``chat.completion``) or as chunks."""

    def __init__(self, model: str, step: CallFunction | str, *, prompt_chars: int) -> None:
        self.id = ids.chat_completion_id()
        self.created = int(time.time())
        self.model = model
        self.step = step
        self.call_id = ids.call_id()
        out = len(step.arguments) if isinstance(step, CallFunction) else len(step)
        prompt, completion = tokens(prompt_chars), tokens(out)
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if isinstance(self.step, CallFunction) else "stop"

    def body(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if isinstance(self.step, CallFunction):
            message["tool_calls"] = [
                {
                    "id": self.call_id,
                    "type": "function",
                    "function": {"name": self.step.name, "arguments": self.step.arguments},
                }
            ]
        else:
            message["content"] = self.step
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": self.usage,
        }

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        """A ``chat.completion.chunk``; ``delta=None`` is the usage chunk (no choices)."""
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [] if delta is None else [choice],
        }

    def _deltas(self) -> list[dict[str, Any]]:
        if not isinstance(self.step, CallFunction):
            pieces = split_text(self.step)
            return [{"role": "assistant", "content": ""}, *({"content": p} for p in pieces)]
        head = {"index": 0, "id": self.call_id, "type": "function"}
        first = {**head, "function": {"name": self.step.name, "arguments": ""}}
        rest = [
            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            for piece in split_text(self.step.arguments)
        ]
        return [{"role": "assistant", "content": None}, {"tool_calls": [first]}, *rest]

    async def chunks(self, with_usage: bool) -> AsyncIterator[bytes]:
        """The stream: deltas, the finishing chunk, the usage chunk when asked, ``[DONE]``."""
        chunks = [self._chunk(d) for d in self._deltas()]
        chunks.append(self._chunk({}, self.finish_reason))
        if with_usage:
            chunks.append({**self._chunk(None), "usage": self.usage})
        for chunk in chunks:
            yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"


def _messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise _missing("messages")
    if not isinstance(value, list):
        raise _type("messages", "an array", value)
    if not value:
        raise BadRequestError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise _type(f"messages[{i}]", "an object", message)
        role = message.get("role")
        if role is None:
            raise _missing(f"messages.[{i}].role")
        if role not in _ROLES:
            choices = ", ".join(f"'{r}'" for r in _ROLES)
            raise BadRequestError(
                f"Invalid value: '{role}'. Supported values are: {choices}.",
                param=f"messages.[{i}].role",
                code="invalid_value",
            )
    return value


def _missing(param: str) -> BadRequestError:
    return BadRequestError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _type(param: str, expected: str, value: Any) -> BadRequestError:
    got = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
    return BadRequestError(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


ROUTES: list[BaseRoute] = [Route("/chat/completions", create_completion, methods=["POST"])]
LEGACY_ROUTES: list[BaseRoute] = [
    Route("/deployments/{deployment}/chat/completions", create_completion, methods=["POST"])
]
