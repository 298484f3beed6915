"""The model seam: what decides the next step of a response, and the deterministic scripted model.

The engine owns the Responses API mechanics (items, events, containers); a ``Model`` only decides
what to do next given the conversation so far and the results of the tool calls it already asked
for: run a code cell, or answer with text. The emulator plugs in ``ScriptedModel`` so tests and
the demo need no language model; the gateway's self-hosted interpreter will plug a real model
(function calling) into the same seam, and the engine around it stays unchanged.

A reply links generated files as markdown links to ``sandbox:/mnt/data/<path>``; turning those
URLs into ``container_file_citation`` annotations is the engine's job (as on the real service),
so a real model only has to write the links.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cigate.engine.containers import ContainerFile
from cigate.engine.functions import (
    CallFunction,
    FunctionTool,
    code_function,
    responses_turn,
    scripted_step,
)
from cigate.engine.structured import json_reply, scripted_json
from cigate.engine.text import extract_code_blocks, message_text, sandbox_url
from cigate.sandbox.base import ExecutionResult

__all__ = [
    "CallFunction",
    "Conversation",
    "Model",
    "Reply",
    "RunCode",
    "ScriptedModel",
    "Step",
    "ToolResult",
    "echo",
    "extract_code_blocks",
    "message_text",
    "sandbox_url",
]

#: Logs longer than this are cut in the reply text (the full logs are in the call's outputs).
_LOG_EXCERPT_CHARS = 1200


@dataclass(frozen=True)
class Conversation:
    """What the model sees: instructions, every input item so far, and which tools it may call.

    ``items`` are wire-shaped input items (messages, earlier output items), oldest first, with
    the items of the ``previous_response_id`` chain before this request's ``input``;
    ``latest_input`` is this request's ``input`` alone, normalised to a list of items.
    """

    instructions: str | None
    items: Sequence[dict[str, Any]]
    latest_input: Sequence[dict[str, Any]]
    code_interpreter: bool
    #: ``"auto"``, ``"none"``, ``"required"`` (a forced code interpreter also maps to required).
    tool_choice: str = "auto"
    #: The request's ``text.format`` when it asks for JSON (see :mod:`cigate.engine.structured`).
    text_format: dict[str, Any] | None = None
    #: Function tools the model may call (a call ends the response, the client runs it).
    functions: Sequence[FunctionTool] = ()
    #: The request's ``model`` (a real model behind the seam calls it by this name).
    model: str = ""

    def latest_user_text(self) -> str:
        """Text of the last user message of this request's input ('' when there is none)."""
        for item in reversed(self.latest_input):
            if item.get("role") == "user" and item.get("type", "message") == "message":
                return message_text(item)
        return ""


@dataclass(frozen=True)
class ToolResult:
    """One finished code-interpreter call, as the model gets to see it."""

    code: str
    result: ExecutionResult
    #: Files created or changed under /mnt/data by this call (path order).
    changed: Sequence[ContainerFile] = field(default_factory=tuple)


@dataclass(frozen=True)
class RunCode:
    """Next step: run this cell in the container's kernel."""

    code: str


@dataclass(frozen=True)
class Reply:
    """Last step: answer with this text (``sandbox:`` links become citations)."""

    text: str


Step = RunCode | Reply | CallFunction


class Model(Protocol):
    """Decides the next step of a response; called once per step until it replies."""

    async def next_step(self, conversation: Conversation, results: Sequence[ToolResult]) -> Step:
        """Return ``RunCode`` to call the code interpreter, ``CallFunction`` to end the response
        with a function call, or ``Reply`` to finish."""
        ...


class ScriptedModel:
    """Runs every python block of the latest user input (else of the instructions), then reports.

    Deterministic: the same conversation and the same tool results give the same steps and the
    same text, byte for byte, so tests can assert on them.
    """

    async def next_step(self, conversation: Conversation, results: Sequence[ToolResult]) -> Step:
        tool = code_function(conversation.functions)
        if tool is not None and not conversation.code_interpreter:
            # A function-calling model: each python block goes out as a call of ``tool``.
            turn = responses_turn(conversation.items)
            if extract_code_blocks(turn.user_text):
                step = scripted_step(tool, turn)
                return step if isinstance(step, CallFunction) else Reply(step)
        blocks = self.code_blocks(conversation)
        if not blocks:
            return self._reply(conversation, echo(conversation.latest_user_text()), results)
        if not conversation.code_interpreter or conversation.tool_choice == "none":
            return self._reply(
                conversation,
                f"I found {_count(len(blocks), 'python block')} but cannot run code: "
                "this request does not enable the code_interpreter tool.",
                results,
            )
        if len(results) < len(blocks):
            return RunCode(blocks[len(results)])
        if conversation.text_format is not None:
            return self._reply(conversation, report(results, with_files=False), results)
        return Reply(report(results))

    @staticmethod
    def _reply(conversation: Conversation, prose: str, results: Sequence[ToolResult]) -> Reply:
        """``prose``, or JSON when the request's ``text.format`` asks for it."""
        fmt = conversation.text_format
        if fmt is None:
            return Reply(prose)
        scripted = scripted_json(conversation.latest_user_text())
        if scripted is not None:
            return Reply(scripted)
        links = [sandbox_url(f.relpath) for f in _changed_files(results)]
        return Reply(json_reply(fmt, prose, links))

    @staticmethod
    def code_blocks(conversation: Conversation) -> list[str]:
        blocks = extract_code_blocks(conversation.latest_user_text())
        if not blocks and conversation.instructions:
            blocks = extract_code_blocks(conversation.instructions)
        return blocks


def report(results: Sequence[ToolResult], *, with_files: bool = True) -> str:
    """The reply after running cells: what each printed or raised, then a link per file."""
    lines = [f"I ran {_count(len(results), 'code cell')}."]
    for number, tool in enumerate(results, start=1):
        lines.append("")
        lines.extend(_cell_summary(number, tool.result))
    files = _changed_files(results)
    if files and with_files:
        lines.append("")
        lines.append("Files:" if len(files) > 1 else "File:")
        lines.extend(f"- [{f.filename}]({sandbox_url(f.relpath)})" for f in files)
    return "\n".join(lines)


def _cell_summary(number: int, result: ExecutionResult) -> list[str]:
    if result.timed_out:
        head = f"Cell {number} exceeded its time limit and was interrupted."
    elif result.error is not None:
        head = f"Cell {number} raised {result.error.ename}: {result.error.evalue}"
    else:
        head = f"Cell {number} finished."
    lines = [head]
    if result.images:
        lines.append(f"It displayed {_count(len(result.images), 'image')}.")
    # A traceback is already summarised in the head line; keep what the cell printed first.
    logs = result.logs if result.error is None else (result.stdout + result.stderr).rstrip("\n")
    if logs.strip():
        excerpt = logs if len(logs) <= _LOG_EXCERPT_CHARS else logs[:_LOG_EXCERPT_CHARS] + "\n…"
        lines.extend(["Output:", "```", excerpt, "```"])
    return lines


def _changed_files(results: Sequence[ToolResult]) -> list[ContainerFile]:
    """Files changed by any call, each once, in order of first change."""
    seen: dict[str, ContainerFile] = {}
    for tool in results:
        for f in tool.changed:
            seen.setdefault(f.id, f)
    return list(seen.values())


def echo(text: str) -> str:
    """The scripted model's answer to a message without python blocks."""
    snippet = " ".join(text.split())
    if len(snippet) > 200:
        snippet = snippet[:200] + "…"
    if not snippet:
        return "Hello! Send a fenced python block and I will run it with the code interpreter."
    return (
        f"You said: {snippet}\n\n"
        "(This is the cigate emulator's scripted model: it runs fenced python blocks with "
        "the code interpreter. Your message had none.)"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
