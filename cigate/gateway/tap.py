"""Watches one relayed SSE stream and tells the harvester what it sees, without slowing it.

The relay hands every upstream chunk to :meth:`ResponseTap.feed` *after* forwarding it. The tap
splits events, decodes only the few that can matter (lifecycle events, and anything naming a
container), and turns them into harvester work on background tasks, so the client's next event
never waits for the database or the blob store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cigate.gateway.harvester import Harvester, walk_response
from cigate.harvest.sse import SSESplitter, parse_event

__all__ = ["ResponseTap"]

log = logging.getLogger(__name__)

#: Byte markers of the events the tap decodes; text and code deltas carry none of them.
_INTERESTING = (b'"container_id"', b'"response.created"', b'"response.completed"')
_TERMINAL = ("response.completed", "response.failed", "response.incomplete")


class ResponseTap:
    """Per-stream state: the response id, containers seen, citations already recorded."""

    def __init__(self, harvester: Harvester, tenant_id: str, upstream_name: str) -> None:
        self.harvester = harvester
        self.tenant_id = tenant_id
        self.upstream_name = upstream_name
        self.response_id: str | None = None
        self.containers: set[str] = set()
        self._cited: set[tuple[str, str]] = set()
        self._splitter = SSESplitter()
        self._finished = False
        self._citing: list[asyncio.Task[Any]] = []
        self._recording: asyncio.Task[Any] | None = None

    def feed(self, chunk: bytes) -> None:
        for raw in self._splitter.feed(chunk):
            self._event(raw)

    def _event(self, raw: bytes) -> None:
        event = parse_event(raw, _INTERESTING)
        if event is None:
            return
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = self.response_id or response["id"]
        if kind == "response.created" and self.response_id:
            self.harvester.live.add(self.response_id)
            self._recording = self.harvester.spawn(
                self.harvester.meta.record_response(
                    self.tenant_id,
                    self.response_id,
                    upstream=self.upstream_name,
                    model=response.get("model") if isinstance(response, dict) else None,
                    container_ids=[],
                ),
                name=f"cigate-record-{self.response_id}",
            )
        item = event.get("item")
        if isinstance(item, dict) and isinstance(item.get("container_id"), str):
            if item["container_id"] not in self.containers:
                # Claimed at first sight, long before a citation: the client may use the
                # container (list it, download from it) while the stream still runs. Recorded
                # on the response too, so a sweep can list it should this process die.
                self.harvester.spawn(
                    self._record_container(item["container_id"]),
                    name=f"cigate-claim-{item['container_id']}",
                )
            self.containers.add(item["container_id"])
        annotation = event.get("annotation")
        if isinstance(annotation, dict) and annotation.get("type") == "container_file_citation":
            self._cite(annotation)
        if kind in _TERMINAL and isinstance(response, dict):
            containers, citations = walk_response(response)
            self.containers |= containers
            for ann in citations:
                self._cite(ann)
            self.finish(response)

    async def _record_container(self, container_id: str) -> None:
        if not self.response_id:
            await self.harvester.meta.claim(self.tenant_id, "container", container_id)
            return
        if self._recording is not None:  # the response's first insert, to merge into
            await asyncio.gather(asyncio.shield(self._recording), return_exceptions=True)
        await self.harvester.meta.record_response(
            self.tenant_id,
            self.response_id,
            upstream=self.upstream_name,
            model=None,
            container_ids=[container_id],
        )

    def _cite(self, annotation: dict[str, Any]) -> None:
        key = (str(annotation.get("container_id")), str(annotation.get("file_id")))
        if key in self._cited:
            return
        self._cited.add(key)
        if isinstance(annotation.get("container_id"), str):
            self.containers.add(annotation["container_id"])
        self._citing.append(
            self.harvester.spawn(
                self.harvester.record_citation(self.tenant_id, self.response_id, annotation),
                name=f"cigate-cite-{key[1]}",
            )
        )

    async def recorded(self) -> None:
        """Wait until the response and its citations are recorded (failures are logged only).

        The relay awaits this before it ends the body, so a client that read the stream to its
        end can use the ids at once (``previous_response_id``, ``GET /responses/{id}``, a
        rewritten link). Recording a citation is one row; its copy runs on regardless.
        """
        tasks = [*([self._recording] if self._recording else []), *self._citing]
        if tasks:
            await asyncio.gather(*(asyncio.shield(t) for t in tasks), return_exceptions=True)

    def finish(self, response: dict[str, Any] | None = None) -> None:
        """The stream ended (terminal event, or cut off): reconcile the containers once."""
        if self._finished:
            return
        self._finished = True
        for raw in self._splitter.flush():  # a last event without its blank line
            self._event(raw)
        self.harvester.spawn(self._reconcile(response), name=f"cigate-reconcile-{self.response_id}")

    async def _reconcile(self, response: dict[str, Any] | None) -> None:
        # Cited files first, so their rows keep origin "citation" and the cited filename.
        await asyncio.gather(*self._citing, return_exceptions=True)
        if self.response_id:
            await self.harvester.meta.record_response(
                self.tenant_id,
                self.response_id,
                upstream=self.upstream_name,
                model=response.get("model") if response else None,
                container_ids=sorted(self.containers),
            )
        try:
            await self.harvester.reconcile(self.tenant_id, self.response_id, self.containers)
        finally:
            if self.response_id:
                self.harvester.live.discard(self.response_id)
