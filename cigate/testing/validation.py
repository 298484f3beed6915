"""Automatic schema checks on every reply the fixture's clients receive.

An httpx2 response hook wraps the body stream without buffering it ahead of the caller: JSON
bodies are checked when fully read, SSE bodies event by event as they pass (so streaming stays
streaming and truncation faults still reach the caller). Mismatches are recorded, never raised
inside the client; the ``emulator`` fixture fails the test at teardown if any were recorded.
Replies shaped by a fault rule (``x-cigate-fault``) are skipped: they are wrong on purpose.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2

from cigate.testing.schema import (
    SchemaMismatchError,
    validate_assistant_event,
    validate_body,
    validate_event,
)

FAULT_HEADER = "x-cigate-fault"


class _SseChecker:
    """Incremental SSE parser that validates each Responses event's ``data`` JSON."""

    def __init__(
        self, where: str, report: Callable[[str], None], *, assistants: bool = False
    ) -> None:
        self.where = where
        self.report = report
        self.buffer = ""
        #: Assistants streams: the name is in ``event:``, ``data`` is the bare object (§4.4).
        self.assistants = assistants

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk.decode("utf-8", errors="replace")
        self.buffer = self.buffer.replace("\r\n", "\n").replace("\r", "\n")
        while "\n\n" in self.buffer:
            block, self.buffer = self.buffer.split("\n\n", 1)
            self._event(block)

    def _event(self, block: str) -> None:
        data = "\n".join(
            line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")
        )
        if self.assistants:
            self._assistant_event(block, data)
            return
        lines = block.split("\n")
        if all(line.startswith(":") or not line for line in lines):
            return  # comments only
        names = [line[6:].strip() for line in lines if line.startswith("event:")]
        if not data:
            self.report(f"{self.where}: SSE event with empty data")
            return
        if data.startswith("[DONE]"):
            self.report(f"{self.where}: a Responses stream has no [DONE]")
            return
        if sum(line.startswith("data:") for line in lines) > 1:
            self.report(f"{self.where}: SSE data spread over several lines")
            return
        try:
            event = json.loads(data)
        except ValueError:
            self.report(f"{self.where}: SSE data is not JSON: {data[:200]!r}")
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if names and names[0] != kind:
            self.report(f"{self.where}: SSE event {names[0]!r} carries data of type {kind!r}")
            return
        try:
            validate_event(event)
        except SchemaMismatchError as exc:
            self.report(str(exc))

    def _assistant_event(self, block: str, data: str) -> None:
        names = [line[6:].strip() for line in block.split("\n") if line.startswith("event:")]
        name = names[0] if names else ""
        if not data:
            self.report(f"{self.where}: SSE event {name!r} with empty data")
            return
        try:
            parsed = data if name == "done" else json.loads(data)
        except ValueError:
            self.report(f"{self.where}: SSE data is not JSON: {data[:200]!r}")
            return
        try:
            validate_assistant_event(name, parsed)
        except SchemaMismatchError as exc:
            self.report(str(exc))


@dataclass
class ValidationRecorder:
    """Collects schema mismatches seen by the hooked clients."""

    failures: list[str] = field(default_factory=list)
    checked: int = 0

    def report(self, message: str) -> None:
        self.failures.append(message)

    def _plan(
        self, response: httpx2.Response
    ) -> tuple[str, Callable[[bytes], None], Callable[[bytes], None]] | None:
        """What to do with this response's bytes: (kind, per-chunk, at-end) or None."""
        request = response.request
        if FAULT_HEADER in response.headers or request.method == "HEAD":  # HEAD: no body
            return None
        ctype = response.headers.get("content-type", "")
        where = f"{request.method} {request.url.path} -> {response.status_code}"
        if ctype.startswith("text/event-stream"):
            path = request.url.path
            assistants = "/threads" in path
            if "/responses" not in path and not assistants:
                return None
            checker = _SseChecker(where, self.report, assistants=assistants)
            return "sse", checker.feed, lambda _body: None
        if not ctype.startswith("application/json"):
            return None

        def at_end(body: bytes) -> None:
            try:
                parsed = json.loads(body)
            except ValueError:
                self.report(f"{where}: body is not JSON: {body[:200]!r}")
                return
            try:
                if validate_body(request.method, request.url.path, response.status_code, parsed):
                    self.checked += 1
            except SchemaMismatchError as exc:
                self.report(str(exc))

        return "json", lambda _chunk: None, at_end

    def sync_hook(self, response: httpx2.Response) -> None:
        plan = self._plan(response)
        if plan is not None and not _already_read(response, *plan[1:]):
            response.stream = _SyncTee(response.stream, *plan[1:])

    async def async_hook(self, response: httpx2.Response) -> None:
        plan = self._plan(response)
        if plan is not None and not _already_read(response, *plan[1:]):
            response.stream = _AsyncTee(response.stream, *plan[1:])

    def sync_hooks(self) -> dict[str, list[Callable[[httpx2.Response], Any]]]:
        return {"response": [self.sync_hook]}

    def async_hooks(self) -> dict[str, list[Callable[[httpx2.Response], Awaitable[None]]]]:
        return {"response": [self.async_hook]}


def _already_read(
    response: httpx2.Response, on_chunk: Callable[[bytes], None], at_end: Callable[[bytes], None]
) -> bool:
    """Check a body that arrived in memory (mock transports) at once; False if still a stream."""
    try:
        content = response.content
    except httpx2.ResponseNotRead:
        return False
    on_chunk(content)
    at_end(content)
    return True


class _SyncTee(httpx2.SyncByteStream):
    def __init__(
        self, inner: Any, on_chunk: Callable[[bytes], None], at_end: Callable[[bytes], None]
    ) -> None:
        self.inner, self.on_chunk, self.at_end = inner, on_chunk, at_end

    def __iter__(self) -> Iterator[bytes]:
        parts: list[bytes] = []
        for chunk in self.inner:
            self.on_chunk(chunk)
            parts.append(chunk)
            yield chunk
        self.at_end(b"".join(parts))

    def close(self) -> None:
        self.inner.close()


class _AsyncTee(httpx2.AsyncByteStream):
    def __init__(
        self, inner: Any, on_chunk: Callable[[bytes], None], at_end: Callable[[bytes], None]
    ) -> None:
        self.inner, self.on_chunk, self.at_end = inner, on_chunk, at_end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        parts: list[bytes] = []
        async for chunk in self.inner:
            self.on_chunk(chunk)
            parts.append(chunk)
            yield chunk
        self.at_end(b"".join(parts))

    async def aclose(self) -> None:
        await self.inner.aclose()
