"""Output items, content parts and annotations of a response, shaped exactly as the wire has them.

Pure functions returning fresh dicts (api-reference §1.5-1.8): nothing here mutates an item once
built, so the same dict can sit in a stored response and in an already-sent event. The one piece
of logic is ``find_citations``: the real service turns every ``sandbox:/mnt/data/<path>`` URL in
the model's text that names a container file into a ``container_file_citation`` whose offsets are
end-exclusive *code-point* offsets of exactly that URL; Python ``str`` indices are code points.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any, Literal

from cigate.engine.containers import ContainerFile
from cigate.sandbox.base import MOUNT_POINT, ExecutionResult

__all__ = [
    "INCLUDE_CODE_OUTPUTS",
    "code_call_item",
    "container_file_citation",
    "execution_outputs",
    "find_citations",
    "function_call_item",
    "input_item_resource",
    "message_item",
    "output_text_part",
    "split_code",
    "split_text",
    "usage",
    "with_outputs",
]

#: The ``include`` value that fills ``code_interpreter_call.outputs``.
INCLUDE_CODE_OUTPUTS = "code_interpreter_call.outputs"

CodeCallStatus = Literal["in_progress", "interpreting", "completed", "incomplete", "failed"]
MessageStatus = Literal["in_progress", "completed", "incomplete"]

_SANDBOX_PREFIX = f"sandbox:{MOUNT_POINT}/"
#: Characters that may follow a cited URL: the end of a markdown link, space, quotes, brackets.
_URL_END = frozenset(")]>\"' \t\r\n")


def code_call_item(
    *,
    item_id: str,
    container_id: str,
    code: str,
    status: CodeCallStatus,
    outputs: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """A ``code_interpreter_call`` item (``outputs`` None unless the caller asked for them)."""
    return {
        "id": item_id,
        "type": "code_interpreter_call",
        "status": status,
        "code": code,
        "container_id": container_id,
        "outputs": outputs,
    }


def function_call_item(
    *, item_id: str, call_id: str, name: str, arguments: str, status: MessageStatus
) -> dict[str, Any]:
    """A ``function_call`` output item (``ResponseFunctionToolCall``)."""
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def with_outputs(item: dict[str, Any], include_outputs: bool) -> dict[str, Any]:
    """The item as a client sees it: stored items keep their outputs, ``include`` reveals them."""
    if item.get("type") != "code_interpreter_call" or include_outputs:
        return item
    return {**item, "outputs": None}


def execution_outputs(result: ExecutionResult) -> list[dict[str, Any]]:
    """``outputs`` of a finished call: its logs (when it logged anything), then its images."""
    outputs: list[dict[str, Any]] = []
    if result.logs:
        outputs.append({"type": "logs", "logs": result.logs})
    for image in result.images:
        encoded = base64.b64encode(image.data).decode("ascii")
        outputs.append({"type": "image", "url": f"data:{image.mime_type};base64,{encoded}"})
    return outputs


def output_text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "annotations": annotations, "logprobs": [], "text": text}


def message_item(
    *, item_id: str, status: MessageStatus, content: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def container_file_citation(
    *, container_id: str, file: ContainerFile, start_index: int, end_index: int
) -> dict[str, Any]:
    return {
        "type": "container_file_citation",
        "container_id": container_id,
        "end_index": end_index,
        "file_id": file.id,
        "filename": file.filename,
        "start_index": start_index,
    }


def find_citations(
    text: str, container_id: str, files: Iterable[ContainerFile]
) -> list[dict[str, Any]]:
    """One citation per ``sandbox:/mnt/data/<path>`` in ``text`` that names a known file.

    The longest known path wins at each position (``a.csv`` vs ``a.csv.bak``), and a URL must
    end where a link would end, so a prefix of an unknown name is never cited.
    """
    by_path = sorted(((f.relpath, f) for f in files), key=lambda pair: -len(pair[0]))
    citations: list[dict[str, Any]] = []
    start = text.find(_SANDBOX_PREFIX)
    while start != -1:
        rest = start + len(_SANDBOX_PREFIX)
        for relpath, file in by_path:
            end = rest + len(relpath)
            if text.startswith(relpath, rest) and (end == len(text) or text[end] in _URL_END):
                citations.append(
                    container_file_citation(
                        container_id=container_id, file=file, start_index=start, end_index=end
                    )
                )
                break
        start = text.find(_SANDBOX_PREFIX, rest)
    return citations


def input_item_resource(item: dict[str, Any], item_id: str) -> dict[str, Any]:
    """An input item as ``GET /responses/{id}/input_items`` lists it (``ResponseItem``).

    Messages get an id, ``type:"message"``, ``status:"completed"`` and typed parts (a string
    becomes one ``input_text``, or ``output_text`` for the assistant role); other items (earlier
    output items passed back) keep their own shape and id.
    """
    if item.get("type", "message") != "message":
        return {"id": item_id, **item} if "id" not in item else dict(item)
    role = item.get("role", "user")
    content = item.get("content")
    if isinstance(content, str):
        if role == "assistant":
            content = [output_text_part(content, [])]
        else:
            content = [{"type": "input_text", "text": content}]
    elif role == "assistant" and isinstance(content, list):
        content = [
            {"annotations": [], "logprobs": [], **part}
            if isinstance(part, dict) and part.get("type") == "output_text"
            else part
            for part in content
        ]
    return {
        "id": item.get("id") or item_id,
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content if isinstance(content, list) else [],
    }


def split_code(code: str) -> list[str]:
    """Code deltas as the real stream sends them: small pieces, here one line each."""
    return code.splitlines(keepends=True) or [""]


def split_text(text: str, words_per_delta: int = 4) -> list[str]:
    """Text deltas: a few words each, whitespace kept, so deltas concatenate to ``text``."""
    pieces: list[str] = []
    current: list[str] = []
    words = 0
    word = ""
    for ch in text:
        if ch.isspace() and word:
            current.append(word)
            word = ""
            words += 1
            if words == words_per_delta:
                pieces.append("".join(current))
                current, words = [], 0
        word += ch
    if word:
        current.append(word)
    if current:
        pieces.append("".join(current))
    return pieces or [""]


#: The emulator's tokenizer: about four characters a token, deterministic.
CHARS_PER_TOKEN = 4


def tokens(chars: int) -> int:
    """Tokens that ``chars`` characters count as (at least 1)."""
    return max(1, (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def usage(input_chars: int, output_chars: int) -> dict[str, Any]:
    """Deterministic token counts (see :func:`tokens`), shaped as the spec requires.

    The spec of record and SDK 3.54 require ``cache_write_tokens``; the 2025 recording (VF)
    lacks it. We send it (0) so bodies validate against both.
    """
    input_tokens = tokens(input_chars)
    output_tokens = tokens(output_chars)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
