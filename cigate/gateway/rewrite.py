"""Optional link rewriting: ``sandbox:/mnt/data/x`` in answers -> the gateway's download URL.

Off by default, because it changes the body. When on, every ``sandbox:/mnt/data/<path>`` URL in
``output_text`` is replaced by ``{gateway}/responses/{response_id}/files/by-path/<path>`` and
every annotation offset (``start_index``/``end_index``/``index``: code points, end exclusive,
api-reference 1.7) is moved by the length differences before it, so the body stays valid for
the SDK and for clients that slice the text with the offsets.

Why a URL by *path* and not by file id: in a stream the URL is written by text deltas, and the
``cfile_…`` id only arrives later, in ``annotation.added`` (api-reference 2.2). The response id
(from ``response.created``) and the path are known when the URL is complete, so the same URL
can be computed for streamed and plain answers, and the gateway resolves it to the harvested
file (:func:`cigate.gateway.files.file_by_path`).

Streams go through :class:`StreamRewriter`, which keeps framing and ``sequence_number``s (one
event out per event in) and holds back only what it cannot decide yet:

* the text of each ``output_text`` part is accumulated as it arrives; the part of it that could
  still be (the start of) a ``sandbox:`` URL is not sent yet;
* each ``output_text.delta`` event is held until the next event: another delta of the same part
  lets it go with the text decided so far (possibly ``""``), anything else ends the part's text,
  and the held delta then carries everything left, rewritten;
* ``annotation.added``, ``output_text.done``, ``content_part.done``, ``output_item.done`` and
  the lifecycle snapshots (``response.completed`` …) are rewritten with the very function that
  rewrites plain bodies, so every offset agrees with the text the deltas spelt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cigate.harvest.sse import SSESplitter, parse_event

__all__ = [
    "SANDBOX_PREFIX",
    "StreamRewriter",
    "by_path_url",
    "rewrite_body",
    "rewrite_part",
    "rewrite_response",
    "rewrite_text",
]

SANDBOX_PREFIX = "sandbox:/mnt/data/"
#: Characters that end a URL in markdown or prose (whitespace is tested separately).
_STOP = frozenset(")]>\"'`<")
#: Sentence punctuation after a bare URL is not part of it.
_TRAILING = ".,;:!?"
_OFFSET_KEYS = ("start_index", "end_index", "index")

UrlFor = Callable[[str], str]
Shifts = list[tuple[int, int]]  # (end of a replaced URL in the old text, cumulative shift after)


def by_path_url(base: str, response_id: str, relpath: str) -> str:
    """The gateway URL that serves the file a response wrote at ``/mnt/data/<relpath>``."""
    return f"{base}/responses/{quote(response_id, safe='')}/files/by-path/{quote(relpath)}"


def _url_end(text: str, start: int) -> int | None:
    """Where the URL starting at ``start`` ends, or None if the text ends first."""
    for i in range(start + len(SANDBOX_PREFIX), len(text)):
        if text[i] in _STOP or text[i].isspace():
            return i
    return None


def _partial_prefix(text: str, floor: int) -> int:
    """Length of the longest tail of ``text`` (after ``floor``) that may begin a URL."""
    for k in range(min(len(SANDBOX_PREFIX) - 1, len(text) - floor), 0, -1):
        if text.endswith(SANDBOX_PREFIX[:k]):
            return k
    return 0


def rewrite_text(text: str, url_for: UrlFor, *, final: bool = True) -> tuple[str, Shifts, int]:
    """Rewrite every complete ``sandbox:`` URL of ``text``.

    Returns the new text of ``text[:cut]``, the shifts for :func:`moved`, and ``cut``: all of
    ``text`` when ``final``, else up to where an undecided URL (or a tail that may start one)
    begins. ``cut`` never falls inside a URL, so rewriting a text piece by piece from one cut
    to the next spells exactly what rewriting it whole does.
    """
    pieces: list[str] = []
    shifts: Shifts = []
    total = 0
    i = 0
    while True:
        j = text.find(SANDBOX_PREFIX, i)
        if j < 0:
            cut = len(text) if final else len(text) - _partial_prefix(text, i)
            pieces.append(text[i:cut])
            return "".join(pieces), shifts, cut
        end = _url_end(text, j)
        if end is None:
            if not final:
                pieces.append(text[i:j])
                return "".join(pieces), shifts, j
            end = len(text)
        while end > j + len(SANDBOX_PREFIX) and text[end - 1] in _TRAILING:
            end -= 1
        relpath = text[j + len(SANDBOX_PREFIX) : end]
        if not relpath:  # a bare prefix names no file: left as it is
            pieces.append(text[i:end])
            i = max(end, j + 1)
            continue
        url = url_for(relpath)
        pieces += [text[i:j], url]
        total += len(url) - (end - j)
        shifts.append((end, total))
        i = end


def moved(position: int, shifts: Shifts) -> int:
    """An offset of the old text, in the rewritten text (a URL's start stays its start)."""
    shift = 0
    for old_end, cumulative in shifts:
        if position >= old_end:
            shift = cumulative
    return position + shift


def _move_annotation(annotation: Any, shifts: Shifts) -> None:
    if isinstance(annotation, dict):
        for key in _OFFSET_KEYS:
            if isinstance(annotation.get(key), int):
                annotation[key] = moved(annotation[key], shifts)


def rewrite_part(part: dict[str, Any], url_for: UrlFor) -> None:
    """Rewrite one ``output_text`` part in place: its text and its annotations' offsets."""
    text = part.get("text")
    if part.get("type") != "output_text" or not isinstance(text, str):
        return
    part["text"], shifts, _ = rewrite_text(text, url_for)
    for annotation in part.get("annotations") or ():
        _move_annotation(annotation, shifts)


def _rewrite_item(item: Any, url_for: UrlFor) -> None:
    if isinstance(item, dict):
        for part in item.get("content") or ():
            if isinstance(part, dict):
                rewrite_part(part, url_for)


def rewrite_response(response: dict[str, Any], base: str) -> None:
    """Rewrite every ``output_text`` part of a Response object in place."""
    response_id = response.get("id")
    if not isinstance(response_id, str):
        return
    for item in response.get("output") or ():
        _rewrite_item(item, lambda path: by_path_url(base, response_id, path))


def rewrite_body(body: dict[str, Any], base: str) -> bytes:
    """A rewritten copy of a parsed Response body, serialised."""
    copy = json.loads(json.dumps(body))
    rewrite_response(copy, base)
    return json.dumps(copy, separators=(",", ":"), ensure_ascii=False).encode()


# -- streams ---------------------------------------------------------------------------------

#: Events decoded when rewriting; every other event is passed on as its bytes.
_DECODE = (b"output_text.delta", b"annotation.added", SANDBOX_PREFIX.encode(), b"response.created")
_DELTA = "response.output_text.delta"


@dataclass
class _Part:
    original: str = ""  # the upstream's text of the part so far
    cut: int = 0  # how much of it the client has been sent (rewritten)


class StreamRewriter:
    """Rewrites the links of one Responses SSE stream (see the module docstring).

    ``feed`` takes upstream bytes and returns the bytes to send on (complete events only);
    ``flush`` returns what is left when the upstream stream ended.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.response_id: str | None = None
        self._splitter = SSESplitter()
        self._parts: dict[tuple[Any, Any], _Part] = {}
        self._held: tuple[bytes, dict[str, Any]] | None = None

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(raw) for raw in self._splitter.feed(chunk))

    def flush(self) -> bytes:
        out = b"".join(self._event(raw) for raw in self._splitter.flush())
        return out + self._release(final=True)

    def _url_for(self, relpath: str) -> str:
        assert self.response_id is not None
        return by_path_url(self.base, self.response_id, relpath)

    def _event(self, raw: bytes) -> bytes:
        data = parse_event(raw, _DECODE)
        kind = data.get("type") if data else None
        key = (data.get("item_id"), data.get("content_index")) if data else None
        out = b""
        if self._held is not None and not (kind == _DELTA and key == _key(self._held[1])):
            out += self._release(final=True)  # the held part's text has ended
        if data is None or kind is None:
            return out + raw + _terminator(raw)
        response = data.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = self.response_id or response["id"]
        if self.response_id is None:  # no id to build URLs with (not a Responses stream)
            return out + raw + _terminator(raw)
        if kind == _DELTA and isinstance(data.get("delta"), str):
            out += self._release(final=False)
            self._parts.setdefault(_key(data), _Part()).original += data["delta"]
            self._held = (raw, data)
            return out
        before = json.dumps(data)
        self._rewrite(data)
        if json.dumps(data) == before:  # nothing to rewrite: the upstream's bytes, unchanged
            return out + raw + _terminator(raw)
        return out + _serialise(raw, data)

    def _rewrite(self, data: dict[str, Any]) -> None:
        if data.get("type") == "response.output_text.annotation.added":
            part = self._parts.get(_key(data))
            if part is not None:
                _, shifts, _ = rewrite_text(part.original, self._url_for)
                _move_annotation(data.get("annotation"), shifts)
        if data.get("type") == "response.output_text.done" and isinstance(data.get("text"), str):
            data["text"], _, _ = rewrite_text(data["text"], self._url_for)
        if isinstance(data.get("part"), dict):
            rewrite_part(data["part"], self._url_for)
        if isinstance(data.get("item"), dict):
            _rewrite_item(data["item"], self._url_for)
        if isinstance(data.get("response"), dict):
            rewrite_response(data["response"], self.base)

    def _release(self, *, final: bool) -> bytes:
        """Send the held delta with the text decided so far (all of it when ``final``)."""
        if self._held is None:
            return b""
        raw, data = self._held
        self._held = None
        part = self._parts[_key(data)]
        text, _, cut = rewrite_text(part.original[part.cut :], self._url_for, final=final)
        part.cut += cut
        if text == data["delta"]:
            return raw + _terminator(raw)
        data["delta"] = text
        return _serialise(raw, data)


def _key(data: dict[str, Any]) -> tuple[Any, Any]:
    return (data.get("item_id"), data.get("content_index"))


def _newline(raw: bytes) -> bytes:
    if b"\r\n" in raw:
        return b"\r\n"
    return b"\r" if b"\r" in raw else b"\n"


def _terminator(raw: bytes) -> bytes:
    return _newline(raw) * 2


def _serialise(raw: bytes, data: dict[str, Any]) -> bytes:
    """The event with its ``data`` replaced; other lines (``event:``, ``id:``) kept as they were."""
    newline = _newline(raw)
    payload = b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    lines: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            if payload:
                lines.append(payload)
                payload = b""
        else:
            lines.append(line)
    return newline.join(lines) + newline * 2
