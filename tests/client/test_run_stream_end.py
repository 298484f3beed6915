"""A Responses stream that ends before its terminal event is an error, not an empty success."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from cigate.config import resolve_config
from cigate.exceptions import UpstreamUnavailableError
from cigate.runner import arun

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
