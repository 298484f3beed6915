"""A Responses stream that ends before its terminal event is an error, not an empty success."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from cigate.client._assistants import arun_assistants
from cigate.client._config import resolve_config
from cigate.client._responses import arun
from cigate.exceptions import UpstreamUnavailableError

from .conftest import fast

CREATED = {
    "type": "response.created",
    "sequence_number": 0,
    "response": {
        "id": "resp_1",
        "object": "response",
        "created_at": 0,
        "status": "in_progress",
        "model": "gpt-4.1",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    },
}


def _cut_stream(request: httpx2.Request) -> httpx2.Response:
    body = f"event: response.created\ndata: {json.dumps(CREATED)}\n\n"
    return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def test_a_stream_that_ends_without_response_completed_raises(tmp_path: Path) -> None:
    config = fast(
        resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", model="gpt-4.1", env={})
    )
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(_cut_stream)) as http:
        client = config.async_openai_client(http_client=http)
        with pytest.raises(UpstreamUnavailableError, match="ended before"):
            await arun("hi", config=config, client=client, out=tmp_path, reconcile=False)


def _assistants(request: httpx2.Request) -> httpx2.Response:
    path = request.url.path
    if path.endswith("/runs"):  # the run's stream: closed before any thread.run.* event
        body = "event: done\ndata: [DONE]\n\n"
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
    if path.endswith("/threads"):
        return httpx2.Response(200, json={"id": "thread_1", "object": "thread", "created_at": 0})
    if request.method == "DELETE":
        return httpx2.Response(200, json={"id": "asst_1", "object": "assistant.deleted"})
    return httpx2.Response(
        200,
        json={"id": "asst_1", "object": "assistant", "created_at": 0, "model": "gpt-4.1"},
    )


async def test_an_assistants_stream_that_ends_without_the_run_raises(tmp_path: Path) -> None:
    config = fast(
        resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", model="gpt-4.1", env={})
    )
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(_assistants)) as http:
        client = config.async_openai_client(http_client=http)
        with pytest.raises(UpstreamUnavailableError, match="ended before"):
            await arun_assistants("hi", config=config, client=client, out=tmp_path)


def _error_event(request: httpx2.Request) -> httpx2.Response:
    error = {"type": "error", "sequence_number": 1, "code": "server_error", "message": "boom"}
    body = (
        f"event: response.created\ndata: {json.dumps(CREATED)}\n\n"
        f"event: error\ndata: {json.dumps(error)}\n\n"
    )
    return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def test_an_error_event_in_the_stream_raises_the_cigate_error_itself(
    tmp_path: Path,
) -> None:
    config = fast(
        resolve_config(endpoint="http://127.0.0.1:9/", api_key="k", model="gpt-4.1", env={})
    )
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(_error_event)) as http:
        client = config.async_openai_client(http_client=http)
        with pytest.raises(UpstreamUnavailableError, match="boom"):  # not an ExceptionGroup
            await arun("hi", config=config, client=client, out=tmp_path, reconcile=False)
