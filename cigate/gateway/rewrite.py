"""Optional link rewriting: ``sandbox:/mnt/data/x`` in answers -> the gateway's download URL.

Off by default, because it changes the body. When on, every ``container_file_citation``'s span
(``text[start_index:end_index]``, code-point offsets, end exclusive: api-reference 1.7) is
replaced by ``{gateway}/files/{cfile_id}/content`` and every annotation of the part that lies
after it is shifted by the length difference, so the body stays valid for the SDK and for
clients that slice the text with the offsets. Applied to non-streaming bodies; streamed text
deltas are relayed unchanged (their offsets are only known at the end of the part).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

__all__ = ["download_url", "rewrite_body", "rewrite_part"]

_START_KEYS = ("start_index", "index")


def download_url(base: str, file_id: str) -> str:
    return f"{base}/files/{quote(file_id, safe='')}/content"


def rewrite_part(part: dict[str, Any], base: str) -> None:
    """Rewrite one ``output_text`` part in place."""
    text = part.get("text")
    annotations = part.get("annotations")
    if not isinstance(text, str) or not isinstance(annotations, list):
        return
    edits: list[tuple[int, int, str]] = []
    for ann in annotations:
        if not isinstance(ann, dict) or ann.get("type") != "container_file_citation":
            continue
        start, end, file_id = ann.get("start_index"), ann.get("end_index"), ann.get("file_id")
        if not (isinstance(start, int) and isinstance(end, int) and isinstance(file_id, str)):
            continue
        if 0 <= start <= end <= len(text) and text[start:end].startswith("sandbox:"):
            edits.append((start, end, download_url(base, file_id)))
    if not edits:
        return
    edits.sort()
    pieces: list[str] = []
    cursor = 0
    shifts: list[tuple[int, int]] = []  # (old position, cumulative shift after it)
    total = 0
    for start, end, url in edits:
        if start < cursor:  # overlapping spans: keep the first
            continue
        pieces.append(text[cursor:start])
        pieces.append(url)
        cursor = end
        total += len(url) - (end - start)
        shifts.append((end, total))
    pieces.append(text[cursor:])
    part["text"] = "".join(pieces)

    def moved(position: int) -> int:
        shift = 0
        for old_end, cumulative in shifts:
            if position >= old_end:
                shift = cumulative
        return position + shift

    for ann in annotations:
        if not isinstance(ann, dict):
            continue
        for key in _START_KEYS:
            if isinstance(ann.get(key), int):
                ann[key] = moved(ann[key])
        if isinstance(ann.get("end_index"), int):
            ann["end_index"] = moved(ann["end_index"])


def rewrite_response(response: dict[str, Any], base: str) -> None:
    """Rewrite every ``output_text`` part of a Response object in place."""
    for item in response.get("output") or ():
        if isinstance(item, dict):
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    rewrite_part(part, base)


def rewrite_body(body: dict[str, Any], base: str) -> bytes:
    """A rewritten copy of a parsed Response body, serialised."""
    copy = json.loads(json.dumps(body))
    rewrite_response(copy, base)
    return json.dumps(copy, separators=(",", ":")).encode()
