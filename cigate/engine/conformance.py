"""Checks that a Responses event stream keeps every rule of api-reference §2.2, §2.3 and §7.

``stream_problems(events)`` returns what is wrong (empty when the stream is faithful). Tests of the
emulator use it on what the engine emits; tests of the gateway can use it on what passes
through, since a proxy that reorders or renumbers events breaks the SDK's stream helper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

__all__ = ["CODE_CALL_ORDER", "citation_problems", "stream_problems"]

_LIFECYCLE = ("response.created", "response.in_progress", "response.queued")
_TERMINAL = ("response.completed", "response.failed", "response.incomplete")
#: Events of one code call between its ``output_item.added`` and ``output_item.done``.
CODE_CALL_ORDER = (
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call_code.delta",
    "response.code_interpreter_call_code.done",
    "response.code_interpreter_call.interpreting",
    "response.code_interpreter_call.completed",
)


def stream_problems(events: Sequence[dict[str, Any]]) -> list[str]:
    """Every broken invariant of the stream, as readable sentences."""
    problems: list[str] = []
    if not events:
        return ["the stream has no events"]
    first = events[0]
    if first.get("type") != "response.created":
        problems.append(f"first event is {first.get('type')!r}, not response.created")
    else:
        snap = first["response"]
        if snap.get("status") != "in_progress" or snap.get("output") != []:
            problems.append("response.created must carry status in_progress and output []")
        if snap.get("usage") is not None:
            problems.append("response.created must carry usage null")
    response_id = first.get("response", {}).get("id")
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    code_steps: dict[int, list[str]] = {}
    parts: set[tuple[str, int]] = set()
    annotations: dict[tuple[str, int], list[dict[str, Any]]] = {}
    text_done: set[tuple[str, int]] = set()
    for position, event in enumerate(events):
        kind = str(event.get("type"))
        where = f"event {position} ({kind})"
        if event.get("sequence_number") != position:
            problems.append(f"{where}: sequence_number {event.get('sequence_number')}")
        if "error" in event and kind != "error":
            problems.append(f"{where}: a top-level 'error' key makes the SDK raise")
        if kind in _LIFECYCLE + _TERMINAL and event["response"].get("id") != response_id:
            problems.append(f"{where}: lifecycle response id changed")
        if kind in _TERMINAL and position != len(events) - 1:
            problems.append(f"{where}: terminal event is not last")
        index: int = event.get("output_index", -1)
        if kind == "response.output_item.added":
            if index in added:
                problems.append(f"{where}: duplicate output index {index}")
            added[index] = event["item"]
            if event["item"].get("type") == "code_interpreter_call":
                item = event["item"]
                if item.get("code") != "" or item.get("outputs") != []:
                    problems.append(f"{where}: an added code call has code '' and outputs []")
                code_steps[index] = []
            continue
        if "output_index" in event and index not in added:
            problems.append(f"{where}: output index {index} before its output_item.added")
            continue
        if kind == "response.output_item.done":
            before = added[index]
            if (before.get("type"), before.get("id")) != (
                event["item"].get("type"),
                event["item"].get("id"),
            ):
                problems.append(f"{where}: completed output item identity changed")
            done[index] = event["item"]
            if index in code_steps:
                problems.extend(_code_order_problems(index, code_steps.pop(index)))
        elif kind.startswith("response.code_interpreter_call") and index in code_steps:
            code_steps[index].append(kind)
        key = (str(event.get("item_id")), int(event.get("content_index", 0)))
        if kind == "response.content_part.added":
            parts.add(key)
        elif kind in ("response.output_text.delta", "response.output_text.done"):
            if key not in parts:
                problems.append(f"{where}: text before its content_part.added")
            if not isinstance(event.get("logprobs"), list):
                problems.append(f"{where}: logprobs must be a list")
            if kind == "response.output_text.delta" and key in annotations:
                problems.append(f"{where}: a text delta after an annotation")
            if kind == "response.output_text.done":
                text_done.add(key)
                problems.extend(citation_problems(event["text"], annotations.get(key, [])))
        elif kind == "response.output_text.annotation.added":
            if key in text_done:
                problems.append(f"{where}: annotation after output_text.done")
            seen = annotations.setdefault(key, [])
            if event.get("annotation_index") != len(seen):
                problems.append(f"{where}: annotation_index {event.get('annotation_index')}")
            seen.append(event["annotation"])
        elif kind == "response.content_part.done" and event["part"].get(
            "annotations", []
        ) != annotations.get(key, []):
            problems.append(f"{where}: content_part.done lacks the streamed annotations")
    last = events[-1]
    if last.get("type") not in _TERMINAL:
        problems.append(f"the stream ends with {last.get('type')!r}, not a terminal event")
    elif last["type"] == "response.completed":
        missing = sorted(set(added) - set(done))
        if missing:
            problems.append(f"output items {missing} never got output_item.done")
        final = last["response"].get("output", [])
        if [i.get("id") for i in final] != [done[i].get("id") for i in sorted(done)]:
            problems.append("response.completed output differs from the done items")
        if last["response"].get("usage") is None:
            problems.append("response.completed must carry usage")
    return problems


def _code_order_problems(index: int, steps: list[str]) -> list[str]:
    collapsed = [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]]
    wanted = list(CODE_CALL_ORDER)
    if "response.code_interpreter_call_code.delta" not in collapsed:
        wanted.remove("response.code_interpreter_call_code.delta")
    if collapsed != wanted:
        return [f"code call at output {index}: events {collapsed}, expected {wanted}"]
    return []


def citation_problems(text: str, annotations: Sequence[dict[str, Any]]) -> list[str]:
    """Each container_file_citation must cover exactly ``sandbox:/mnt/data/<path>``."""
    problems = []
    for a in annotations:
        if a.get("type") != "container_file_citation":
            continue
        cited = text[a["start_index"] : a["end_index"]]
        if not cited.startswith("sandbox:/mnt/data/"):
            problems.append(f"citation {a['file_id']} covers {cited!r}, not a sandbox URL")
        elif PurePosixPath(cited).name != a.get("filename"):
            problems.append(f"citation {a['file_id']}: filename {a.get('filename')!r} ≠ {cited!r}")
    return problems


def replay_through_sdk(events: Sequence[dict[str, Any]]) -> Any:
    """Feed raw events to the ``openai`` SDK's stream accumulator; return its final response.

    Each event is first validated against the SDK's typed union (so a wrong field type fails
    here, not in a user's code), then handled exactly as ``client.responses.stream()`` does,
    which raises on every invariant of §2.3.
    """
    from openai import omit
    from openai.lib.streaming.responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    final = None
    for raw in events:
        for event in state.handle_event(adapter.validate_python(raw)):
            if event.type == "response.completed":
                final = event.response
    return final
