"""The event log of one Assistants run and its SSE framing (api-reference §4.4).

Assistants streams differ from Responses streams in three ways the SDK relies on: the event name
is only in the ``event:`` line (``data`` is the bare object, no ``type``/``sequence_number``);
deltas are ``thread.message.delta`` / ``thread.run.step.delta`` objects keyed by ``index``; and
the stream ends with ``event: done`` / ``data: [DONE]``. As with responses, the run emits into the
log whether or not anyone listens, and a streaming request follows the log live.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["DONE_FRAME", "RunEventLog", "encode_assistant_sse"]

DONE_FRAME = b"event: done\ndata: [DONE]\n\n"


def encode_assistant_sse(event: str, data: dict[str, Any]) -> bytes:
    """``event: <name>\\ndata: <one-line JSON>\\n\\n``."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


class RunEventLog:
    """Append-only ``(event, data)`` pairs with live followers; closing ends every follower."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.closed = False
        self._changed = asyncio.Event()

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Record one event; ``data`` must be a fresh snapshot (it is never copied)."""
        if self.closed:
            raise RuntimeError("the run already ended; no more events")
        self.events.append((event, data))
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def follow_batches(self) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
        """Every event emitted so far at once, then each new burst (as ``EventLog``'s)."""
        index = 0
        while True:
            if index < len(self.events):
                batch = self.events[index:]
                index += len(batch)
                yield batch
                continue
            if self.closed:
                return
            await self._changed.wait()

    async def frames(self) -> AsyncIterator[bytes]:
        """The SSE body: one write per burst of events as they happen, then ``done``."""
        async for batch in self.follow_batches():
            yield b"".join(encode_assistant_sse(event, data) for event, data in batch)
        yield DONE_FRAME

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
