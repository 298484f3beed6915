"""A response run as an HTTP answer: its SSE stream, or its JSON once it is over.

The emulator and the gateway's self-hosted interpreter answer ``POST /responses`` and
``GET /responses/{id}?stream=true`` the same way; this is that one way.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response, StreamingResponse

from cigate.engine.events import sse_stream
from cigate.engine.runner import ResponseRun

__all__ = ["SSE_HEADERS", "answer_created", "stream_events"]

#: No proxy may buffer or cache an event stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_events(
    run: ResponseRun, *, starting_after: int | None = None, obfuscate: bool = True
) -> StreamingResponse:
    """The run's events as SSE, from after ``starting_after`` (a replay) or from the start."""
    return StreamingResponse(
        sse_stream(run.events.follow_batches(starting_after), obfuscate=obfuscate),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def answer_created(run: ResponseRun) -> Response:
    """The answer to the ``POST`` that created ``run``: its stream, at once when background,
    else its final JSON (a failure of the run raised as its API error)."""
    req = run.plan.request
    if req.stream:
        return stream_events(run, obfuscate=req.include_obfuscation)
    if not req.background:
        await run.finished.wait()
        if run.failure is not None:
            raise run.failure
    return JSONResponse(run.response())
