"""The upstream model behind the engine's model seam: any function-calling model runs the code.

The engine (:mod:`cigate.engine.runner`) asks a :class:`~cigate.engine.model.Model` for the
next step; here that is a call to the upstream model with one function tool, ``python``, whose
results are this run's cells. The conversation is rebuilt on every step from the engine's
items (earlier ``code_interpreter_call`` items become ``function_call`` + output pairs), so the
upstream keeps no state and ``store`` is off there: nothing of the conversation is kept by the
provider on this path.

Everything the model sends back is untrusted: arguments that are not a JSON object with a
string ``code``, code over :data:`MAX_CODE_CHARS`, or a call when no call is allowed any more,
are answered to the model as a function error (never run), at most :data:`MAX_BAD_CALLS` times
per step; then the response fails with a 502 naming the problem.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cigate.engine.errors import ApiError
from cigate.engine.model import Conversation, Reply, RunCode, Step, ToolResult, message_text
from cigate.sandbox.base import MOUNT_POINT

__all__ = ["MAX_BAD_CALLS", "MAX_CODE_CHARS", "PYTHON_TOOL", "UpstreamModel"]

log = logging.getLogger(__name__)

#: Longest cell the gateway runs (characters); a longer one is refused to the model.
MAX_CODE_CHARS = 256 * 1024
#: Unusable calls (bad arguments, calls when none is allowed) tolerated per step.
MAX_BAD_CALLS = 3
#: Longest logs a function result carries back to the model.
MAX_RESULT_LOGS = 8000
TOOL_NAME = "python"
PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "name": TOOL_NAME,
    "description": (
        "Run Python in a stateful Jupyter kernel. Files under /mnt/data persist between calls "
        "and are the user's files; the result lists the files a call wrote."
    ),
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python code to run."}},
        "required": ["code"],
        "additionalProperties": False,
    },
    "strict": True,
}
TOOL_INSTRUCTIONS = (
    "You can run Python with the `python` tool. To give the user a file, write it under "
    f"{MOUNT_POINT}/ and link it as [name](sandbox:{MOUNT_POINT}/name)."
)

#: ``post(api, body) -> (status, parsed JSON or None)``: one request to the upstream model.
Post = Callable[[str, dict[str, Any]], Awaitable[tuple[int, Any]]]


class UpstreamModel:
    """A :class:`~cigate.engine.model.Model` that asks the upstream over ``api``."""

    def __init__(self, post: Post, *, api: str = "responses") -> None:
        if api not in ("responses", "chat"):
            raise ValueError(f"unknown model API {api!r}")
        self.post = post
        self.api = api

    async def next_step(self, conversation: Conversation, results: Sequence[ToolResult]) -> Step:
        transcript = _transcript(conversation, results)
        allowed = conversation.code_interpreter and conversation.tool_choice != "none"
        forced = allowed and conversation.tool_choice == "required" and not results
        for _ in range(MAX_BAD_CALLS + 1):
            text, call = await self._ask(conversation, transcript, allowed, forced)
            if call is None:
                return Reply(text)
            call_id, arguments = call
            problem = _problem(arguments) if allowed else "no more code may run in this response"
            if problem is None:
                return RunCode(json.loads(arguments)["code"])
            log.info("upstream model sent an unusable call: %s", problem)
            transcript.extend(_pair(call_id, arguments, json.dumps({"error": problem})))
        raise ApiError(
            502,
            f"The upstream model sent {MAX_BAD_CALLS + 1} unusable tool calls in a row.",
            type="server_error",
        )

    async def _ask(
        self,
        conversation: Conversation,
        transcript: list[dict[str, Any]],
        allowed: bool,
        forced: bool,
    ) -> tuple[str, tuple[str, str] | None]:
        """One upstream round: the text it answered and its first call (id, raw arguments)."""
        model = conversation.model
        instructions = "\n\n".join(filter(None, [conversation.instructions, TOOL_INSTRUCTIONS]))
        choice = "required" if forced else ("auto" if allowed else "none")
        if self.api == "responses":
            body: dict[str, Any] = {
                "model": model,
                "instructions": instructions,
                "input": transcript,
                "tools": [PYTHON_TOOL],
                "tool_choice": choice,
                "parallel_tool_calls": False,
                "store": False,
            }
        else:
            body = {
                "model": model,
                "messages": [{"role": "system", "content": instructions}, *_chat(transcript)],
                "tools": [{"type": "function", "function": _chat_function()}],
                "tool_choice": choice,
                "parallel_tool_calls": False,
            }
        status, answer = await self.post(self.api, body)
        if status != 200 or not isinstance(answer, dict):
            raise _upstream_error(status, answer)
        return _read_responses(answer) if self.api == "responses" else _read_chat(answer)


def _problem(arguments: str) -> str | None:
    """Why ``arguments`` cannot be run, or ``None``."""
    if len(arguments) > MAX_CODE_CHARS * 2:
        return f"arguments over {MAX_CODE_CHARS * 2} characters"
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return 'arguments are not JSON; send {"code": "..."}'
    if not isinstance(parsed, dict) or not isinstance(parsed.get("code"), str):
        return "arguments must be an object with a string 'code'"
    if len(parsed["code"]) > MAX_CODE_CHARS:
        return f"code over {MAX_CODE_CHARS} characters"
    if "\0" in parsed["code"]:
        return "code contains a NUL character"
    return None


def _pair(call_id: str, arguments: str, output: str) -> list[dict[str, Any]]:
    return [
        {"type": "function_call", "call_id": call_id, "name": TOOL_NAME, "arguments": arguments},
        {"type": "function_call_output", "call_id": call_id, "output": output},
    ]


def _transcript(conversation: Conversation, results: Sequence[ToolResult]) -> list[dict[str, Any]]:
    """Responses-API input: messages as text, every code call as a function call + result."""
    out: list[dict[str, Any]] = []
    for item in conversation.items:
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in ("user", "assistant", "system", "developer"):
            out.append({"role": item["role"], "content": _message_content(item)})
        elif kind == "code_interpreter_call" and isinstance(item.get("code"), str):
            logs = "".join(
                str(o.get("logs", ""))
                for o in item.get("outputs") or ()
                if isinstance(o, dict) and o.get("type") == "logs"
            )
            arguments = json.dumps({"code": item["code"]})
            output = json.dumps({"status": item.get("status"), "logs": logs[-MAX_RESULT_LOGS:]})
            out.extend(_pair(str(item.get("id")), arguments, output))
    for number, tool in enumerate(results):
        arguments = json.dumps({"code": tool.code})
        out.extend(_pair(f"call_cigate_{number}", arguments, tool_output(tool)))
    return out


def _message_content(item: dict[str, Any]) -> str:
    """A message as text; an attached file is named by where the code finds it."""
    content = item.get("content")
    notes = (
        [
            f"(The file {part.get('filename') or part.get('file_id')} is in {MOUNT_POINT}/.)"
            for part in content
            if isinstance(part, dict) and part.get("type") == "input_file"
        ]
        if isinstance(content, list)
        else []
    )
    return "\n".join([message_text(item), *notes]).strip()


def tool_output(tool: ToolResult) -> str:
    """What the model reads of one cell: status, its logs (cut), error, images, files."""
    result = tool.result
    status = "timeout" if result.timed_out else ("error" if result.error is not None else "ok")
    body: dict[str, Any] = {"status": status, "logs": result.logs[-MAX_RESULT_LOGS:]}
    if result.error is not None:
        body["error"] = f"{result.error.ename}: {result.error.evalue}"
    if result.images:
        body["images_displayed"] = len(result.images)
    body["files"] = [f.path for f in tool.changed]
    return json.dumps(body, ensure_ascii=False)


def _chat_function() -> dict[str, Any]:
    return {k: PYTHON_TOOL[k] for k in ("name", "description", "parameters", "strict")}


def _chat(transcript: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Responses transcript as Chat Completions messages."""
    out: list[dict[str, Any]] = []
    for item in transcript:
        if item.get("type") == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.get("type") == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        else:
            role = "system" if item["role"] == "developer" else item["role"]
            out.append({"role": role, "content": item["content"]})
    return out


def _read_responses(answer: dict[str, Any]) -> tuple[str, tuple[str, str] | None]:
    texts: list[str] = []
    for item in answer.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            call_id = item.get("call_id")
            arguments = item.get("arguments")
            if item.get("name") != TOOL_NAME:
                arguments = "{}"  # a tool we did not offer: answered as unusable
            return "", (str(call_id), arguments if isinstance(arguments, str) else "")
        if item.get("type") == "message":
            texts.extend(
                str(part.get("text", ""))
                for part in item.get("content") or ()
                if isinstance(part, dict) and part.get("type") == "output_text"
            )
    return "".join(texts), None


def _read_chat(answer: dict[str, Any]) -> tuple[str, tuple[str, str] | None]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ApiError(502, "The upstream model answered without a choice.", type="server_error")
    message = choices[0].get("message")
    message = message if isinstance(message, dict) else {}
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            arguments = function.get("arguments")
            if function.get("name") != TOOL_NAME:
                arguments = "{}"
            return "", (str(call.get("id")), arguments if isinstance(arguments, str) else "")
    content = message.get("content")
    return (content if isinstance(content, str) else ""), None


def _upstream_error(status: int, answer: Any) -> ApiError:
    """The upstream's own error (4xx keeps its status), else a 502 that names no internals."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if 400 <= status < 500 and isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return ApiError(
            status,
            error["message"],
            type=str(error.get("type") or "invalid_request_error"),
            code=code if isinstance(code, str) else None,
            param=error.get("param") if isinstance(error.get("param"), str) else None,
        )
    return ApiError(
        502, f"The upstream model failed (HTTP {status}).", type="server_error", code=None
    )
