"""State records of the Assistants API and their wire shapes (api-reference §4.3).

Each record is a mutable dataclass owned by the backend; ``to_api()`` renders a fresh dict every
time, so an event or a response body is a snapshot that later changes never touch. Every field
the OpenAPI description marks required is always present (``null`` when unset), because the
emulator's bodies are validated against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cigate import ids
from cigate.engine.items import tokens

__all__ = [
    "Assistant",
    "Message",
    "Run",
    "RunStep",
    "Thread",
    "new_id",
    "text_block",
    "usage",
]

RunStatus = Literal[
    "queued",
    "in_progress",
    "requires_action",
    "cancelling",
    "cancelled",
    "failed",
    "completed",
    "incomplete",
    "expired",
]
#: Statuses after which a run never changes again (SDK ``runs_poll`` terminal set + cancelling).
TERMINAL: frozenset[str] = frozenset({"cancelled", "failed", "completed", "incomplete", "expired"})

_PREFIXES = {
    "assistant": "asst_",
    "thread": "thread_",
    "message": "msg_",
    "run": "run_",
    "step": "step_",
    "call": "call_",
}


def new_id(kind: str) -> str:
    """``asst_…``, ``thread_…``, ``msg_…``, ``run_…``, ``step_…``, ``call_…`` (24 base62)."""
    return ids.base62_id(_PREFIXES[kind], 24)


def text_block(value: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": annotations or []}}


def usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    """Deterministic token counts, the Responses engine's (:func:`cigate.engine.items.tokens`)."""
    prompt, completion = tokens(prompt_chars), tokens(completion_chars)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def code_interpreter_file_ids(tool_resources: dict[str, Any] | None) -> list[str]:
    ci = (tool_resources or {}).get("code_interpreter") or {}
    return [str(f) for f in ci.get("file_ids") or []]


@dataclass
class Assistant:
    id: str
    created_at: int
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    response_format: Any = "auto"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "assistant",
            "created_at": self.created_at,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "instructions": self.instructions,
            "tools": [dict(t) for t in self.tools],
            "tool_resources": _tool_resources(self.tool_resources),
            "metadata": dict(self.metadata),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": self.response_format,
        }


@dataclass
class Message:
    id: str
    thread_id: str
    created_at: int
    role: str
    content: list[dict[str, Any]]
    status: str = "completed"
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    completed_at: int | None = None
    incomplete_at: int | None = None
    incomplete_reason: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread.message",
            "created_at": self.created_at,
            "thread_id": self.thread_id,
            "status": self.status,
            "incomplete_details": (
                {"reason": self.incomplete_reason} if self.incomplete_reason else None
            ),
            "completed_at": self.completed_at,
            "incomplete_at": self.incomplete_at,
            "role": self.role,
            "content": [_copy(block) for block in self.content],
            "assistant_id": self.assistant_id,
            "run_id": self.run_id,
            "attachments": [_copy(a) for a in self.attachments],
            "metadata": dict(self.metadata),
        }

    def text(self) -> str:
        """The concatenated text blocks (what the scripted model reads)."""
        return "\n".join(b["text"]["value"] for b in self.content if b.get("type") == "text")


@dataclass
class RunStep:
    id: str
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: int
    type: str  # "tool_calls" | "message_creation"
    step_details: dict[str, Any]
    status: str = "in_progress"
    last_error: dict[str, str] | None = None
    completed_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    usage: dict[str, int] | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread.run.step",
            "created_at": self.created_at,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "type": self.type,
            "status": self.status,
            "step_details": _copy(self.step_details),
            "last_error": dict(self.last_error) if self.last_error else None,
            "expired_at": None,
            "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at,
            "completed_at": self.completed_at,
            "metadata": {},
            "usage": dict(self.usage) if self.usage else None,
        }


@dataclass
class Run:
    """One run; ``params`` are the resolved create parameters echoed on the object."""

    id: str
    thread_id: str
    assistant_id: str
    created_at: int
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    #: True when created through an Azure path: generated files get ``assistant-…`` ids.
    azure: bool
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    status: RunStatus = "queued"
    started_at: int | None = None
    completed_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    last_error: dict[str, str] | None = None
    usage: dict[str, int] | None = None
    steps: list[RunStep] = field(default_factory=list)
    expires_after: int = 600

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_api(self) -> dict[str, Any]:
        params = self.params
        return {
            "id": self.id,
            "object": "thread.run",
            "created_at": self.created_at,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "status": self.status,
            "required_action": None,
            "last_error": dict(self.last_error) if self.last_error else None,
            "expires_at": None if self.terminal else self.created_at + self.expires_after,
            "started_at": self.started_at,
            "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at,
            "completed_at": self.completed_at,
            "incomplete_details": None,
            "model": self.model,
            "instructions": self.instructions,
            "tools": [dict(t) for t in self.tools],
            "metadata": dict(self.metadata),
            "usage": dict(self.usage) if self.usage else None,
            "temperature": params.get("temperature", 1.0),
            "top_p": params.get("top_p", 1.0),
            "max_prompt_tokens": params.get("max_prompt_tokens"),
            "max_completion_tokens": params.get("max_completion_tokens"),
            "truncation_strategy": params.get("truncation_strategy")
            or {"type": "auto", "last_messages": None},
            "tool_choice": params.get("tool_choice") or "auto",
            "parallel_tool_calls": params.get("parallel_tool_calls", True),
            "response_format": params.get("response_format") or "auto",
        }


@dataclass
class Thread:
    id: str
    created_at: int
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    #: The thread's code-interpreter container (one kernel per thread), once a run needed it.
    container_id: str | None = None
    #: Files-API ids already copied into that container.
    copied_file_ids: set[str] = field(default_factory=set)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "tool_resources": _tool_resources(self.tool_resources),
            "metadata": dict(self.metadata),
        }

    def active_run(self) -> Run | None:
        for run in self.runs:
            if not run.terminal:
                return run
        return None

    def message(self, message_id: str) -> Message | None:
        for message in self.messages:
            if message.id == message_id:
                return message
        return None

    def run(self, run_id: str) -> Run | None:
        for run in self.runs:
            if run.id == run_id:
                return run
        return None


def _tool_resources(resources: dict[str, Any] | None) -> dict[str, Any]:
    """Always an object; ``code_interpreter.file_ids`` present (possibly empty) as OpenAI sends."""
    out = _copy(resources or {})
    out.setdefault("code_interpreter", {"file_ids": []})
    return dict(out)


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (cheaper than ``copy.deepcopy`` for these shapes)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
