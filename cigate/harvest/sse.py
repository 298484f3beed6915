"""Incremental Server-Sent-Events splitter for the tee between client and harvester.

The relay forwards the upstream's bytes untouched; this parser only *watches* them. It splits on
blank lines (CR, LF or CRLF, as the SDK accepts), and decodes the ``data`` JSON of an event only
when a cheap byte test says the harvester could care (``interesting``), so the relay loop does
not pay ``json.loads`` for hundreds of text deltas per response.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["SSESplitter", "parse_event"]

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SSESplitter:
    """Feed bytes; get back complete raw events (without their terminating blank line).

    Called for every chunk of every relayed stream, so the usual chunk (one whole event, an
    empty buffer) is split in place: no copy into the buffer and back. A chunk without CR or
    LF cannot end an event and is only kept; otherwise only the last 3 bytes kept from before
    (a blank line split across chunks) and the new bytes are searched, never the whole buffer
    again, so a huge event arriving in many chunks costs linear time.
    """

    def __init__(self, max_buffer: int = 64 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max = max_buffer

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk and b"\r" not in chunk:
            self._buffer += chunk
            self._check_size()
            return []
        if self._buffer:
            search_from = max(0, len(self._buffer) - 3)
            self._buffer += chunk
            data: bytes | bytearray = self._buffer
        else:  # the usual case: the chunk itself is split and only its rest kept
            search_from, data = 0, chunk
        events: list[bytes] = []
        start = 0
        # Listed first: the search must let go of the buffer before it is cut.
        for match in list(_BOUNDARY.finditer(data, search_from)):
            events.append(bytes(data[start : match.start()]))  # of a chunk: the slice itself
            start = match.end()
        if data is chunk:
            self._buffer += memoryview(chunk)[start:]
        else:
            del self._buffer[:start]
        self._check_size()
        return events

    def _check_size(self) -> None:
        if len(self._buffer) > self._max:  # a stream that never ends an event: stop watching
            self._buffer.clear()

    def flush(self) -> list[bytes]:
        """The last event when the stream ended without a blank line."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return [rest] if rest.strip() else []


def parse_event(raw: bytes, interesting: tuple[bytes, ...] = ()) -> dict[str, Any] | None:
    """The event's ``data`` JSON object, or None when absent, not JSON, or not interesting."""
    if interesting:
        for marker in interesting:
            if marker in raw:
                break
        else:
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
