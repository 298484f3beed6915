"""Watches one relayed SSE stream and notes what it shows, without slowing it.

The relay hands every upstream chunk to :meth:`ResponseTap.feed`. The tap splits events,
decodes only the few that can matter (lifecycle events, which carry the Response, and anything
naming a container) and notes their facts in the stream's one
:class:`~cigate.gateway.recorder.Sighting`. It writes nothing and starts nothing: the
recorder's keeper writes the sighting in the background, so the client's next event never
waits for the database or the blob store.
"""

from __future__ import annotations

from cigate.gateway.recorder import Sighting
from cigate.harvest.sse import SSESplitter, parse_event

__all__ = ["ResponseTap"]

#: Byte markers of the events the tap decodes; text and code deltas carry none of them.
_INTERESTING = (b'"container_id"', b'"response":')


class ResponseTap:
    """Splits one stream into events and notes their facts in ``sighting``."""

    def __init__(self, sighting: Sighting) -> None:
        self.sighting = sighting
        #: Complete events seen so far (decoded or not).
        self.events = 0
        self._splitter = SSESplitter()

    def feed(self, chunk: bytes) -> None:
        for raw in self._splitter.feed(chunk):
            self.events += 1
            self._event(raw)

    def flush(self) -> None:
        """The stream is over: note a last event that came without its blank line."""
        for raw in self._splitter.flush():
            self._event(raw)

    def _event(self, raw: bytes) -> None:
        event = parse_event(raw, _INTERESTING)
        if event is None:
            return
        response = event.get("response")
        if isinstance(response, dict):
            self.sighting.see_response(response)
        item = event.get("item")
        if isinstance(item, dict) and isinstance(item.get("container_id"), str):
            self.sighting.see_container(item["container_id"])
        annotation = event.get("annotation")
        if isinstance(annotation, dict) and annotation.get("type") == "container_file_citation":
            self.sighting.see_citation(annotation)
