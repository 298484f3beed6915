"""Incremental Server-Sent-Events splitter for the tee between client and harvester.

The relay forwards the upstream's bytes untouched; this parser only *watches* them. It splits on
blank lines (CR, LF or CRLF, as the SDK accepts), and decodes the ``data`` JSON of an event only
when a cheap byte test says the harvester could care (``interesting``), so the relay loop does
not pay ``json.loads`` for hundreds of text deltas per response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["SSESplitter", "parse_event"]

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SSESplitter:
    """Feed bytes; get back complete raw events (without their terminating blank line)."""

    def __init__(self, max_buffer: int = 64 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max = max_buffer

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buffer += chunk
        start = 0
        view = bytes(self._buffer) if b"\n" in chunk or b"\r" in chunk else b""
        if not view:
            self._check_size()
            return
        for match in _BOUNDARY.finditer(view):
            yield view[start : match.start()]
            start = match.end()
        del self._buffer[:start]
        self._check_size()

    def _check_size(self) -> None:
        if len(self._buffer) > self._max:  # a stream that never ends an event: stop watching
            self._buffer.clear()

    def flush(self) -> Iterator[bytes]:
        """The last event when the stream ended without a blank line."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if rest.strip():
            yield rest


def parse_event(raw: bytes, interesting: tuple[bytes, ...] = ()) -> dict[str, Any] | None:
    """The event's ``data`` JSON object, or None when absent, not JSON, or not interesting."""
    if interesting and not any(marker in raw for marker in interesting):
        return None
    data_lines: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
    if not data_lines:
        return None
    try:
        parsed = json.loads(b"\n".join(data_lines))
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
