"""The event log of one response: numbered events, kept for replay, followed live by streams.

Every event a response emits gets the next ``sequence_number`` (0 on ``response.created``, +1 per
event, api-reference §2.1) and is appended to the log. A streaming request follows the log while
the response runs, so events leave as they happen rather than after the run; a later
``GET /responses/{id}?stream=true&starting_after=N`` replays the same events. The producer never
waits for a consumer: a client that disconnects does not stop the response, as on the real
service.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["EventLog", "encode_sse", "sse_stream"]

_PAD = 16
_PAD_CHARS = string.ascii_letters + string.digits


def encode_sse(event: dict[str, Any]) -> bytes:
    """``event: <type>\\ndata: <one-line JSON>\\n\\n``; no ``[DONE]`` ever follows (§2.1)."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


class EventLog:
    """Append-only, numbered events with any number of live followers."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Number and record one event; the dicts passed in must not be mutated afterwards."""
        if self.closed:
            raise RuntimeError("the response already ended; no more events")
        event = {"type": event_type, "sequence_number": len(self.events), **fields}
        self.events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        """No more events: followers drain what is left and stop."""
        self.closed = True
        self._wake()

    async def follow(self, starting_after: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every event after ``starting_after`` (all when None), then live ones until close."""
        async for batch in self.follow_batches(starting_after):
            for event in batch:
                yield event

    async def follow_batches(
        self, starting_after: int | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Like ``follow``, but each time hands over every event already emitted at once.

        The engine emits in bursts (all text deltas of a reply, say) without yielding to the
        loop; a stream that writes one burst per socket write instead of one per event keeps
        the same timing for the client and costs a fraction of the writes.
        """
        index = 0 if starting_after is None else max(0, starting_after + 1)
        while True:
            if index < len(self.events):
                batch = self.events[index:]
                index += len(batch)
                yield batch
                continue
            if self.closed:
                return
            changed = self._changed
            await changed.wait()

    def _wake(self) -> None:
        # Swap in a fresh Event so each waiter wakes once per batch of new events.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


async def sse_stream(
    batches: AsyncIterator[list[dict[str, Any]]], *, obfuscate: bool
) -> AsyncIterator[bytes]:
    """One write per burst of events that are ready (see ``EventLog.follow_batches``)."""
    async for batch in batches:
        events = [_obfuscated(e) for e in batch] if obfuscate else batch
        yield b"".join(encode_sse(event) for event in events)


def _obfuscated(event: dict[str, Any]) -> dict[str, Any]:
    """A delta event with the service's ``obfuscation`` padding: random characters that bring
    the delta's size to the next multiple of 16, so sizes on the wire tell little about it."""
    delta = event.get("delta")
    if not event["type"].endswith(".delta") or not isinstance(delta, str):
        return event
    size = _PAD - len(delta.encode()) % _PAD
    return {**event, "obfuscation": "".join(random.choices(_PAD_CHARS, k=size))}
