"""The automatic validation hooks the fixture's clients carry (cigate.testing.validation)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest

from cigate.engine.events import encode_sse
from cigate.testing.validation import ValidationRecorder

BAD_CONTAINER = {"id": "cntr_1", "object": "container"}
GOOD_DELTA = {
    "type": "response.output_text.delta",
    "sequence_number": 0,
    "item_id": "m",
    "output_index": 0,
    "content_index": 0,
    "delta": "x",
    "logprobs": [],
}


class _Chunks(httpx2.SyncByteStream):
    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start : start + self.size]


def _client(recorder: ValidationRecorder, handler: httpx2.MockTransport) -> httpx2.Client:
    return httpx2.Client(
        transport=handler, event_hooks=recorder.sync_hooks(), base_url="http://emulator"
    )


def test_a_json_body_that_breaks_its_schema_is_recorded() -> None:
    recorder = ValidationRecorder()
    reply = httpx2.MockTransport(lambda request: httpx2.Response(200, json=BAD_CONTAINER))
    with _client(recorder, reply) as client:
        assert client.get("/openai/v1/containers/cntr_1").json() == BAD_CONTAINER
    assert len(recorder.failures) == 1
    assert "GET /containers/{container_id} -> 200" in recorder.failures[0]


def test_a_reply_shaped_by_a_fault_rule_is_not_checked() -> None:
    recorder = ValidationRecorder()
    reply = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200, json=BAD_CONTAINER, headers={"x-cigate-fault": "fault_1"}
        )
    )
    with _client(recorder, reply) as client:
        client.get("/openai/v1/containers/cntr_1")
    assert recorder.failures == []


@pytest.mark.parametrize("chunk", [7, 4096], ids=["split-mid-event", "whole"])
def test_sse_events_are_checked_one_by_one_however_they_are_chunked(chunk: int) -> None:
    bad = {**GOOD_DELTA, "sequence_number": 1}
    del bad["logprobs"]
    body = encode_sse(GOOD_DELTA) + encode_sse(bad)
    recorder = ValidationRecorder()
    reply = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Chunks(body, chunk)
        )
    )
    with _client(recorder, reply) as client:
        client.post("/openai/v1/responses")
    assert len(recorder.failures) == 1
    assert "logprobs" in recorder.failures[0]


def test_an_sse_event_with_empty_data_is_recorded() -> None:
    recorder = ValidationRecorder()
    reply = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=b"event: response.created\ndata: \n\n",
        )
    )
    with _client(recorder, reply) as client:
        client.post("/openai/v1/responses")
    assert recorder.failures == ["POST /openai/v1/responses -> 200: SSE event with empty data"]


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        pytest.param(
            f"event: response.created\ndata: {json.dumps(GOOD_DELTA)}\n\n",
            "SSE event 'response.created' carries data of type 'response.output_text.delta'",
            id="event-name-differs-from-type",
        ),
        pytest.param(
            "event: response.output_text.delta\n"
            + "".join(f"data: {line}\n" for line in json.dumps(GOOD_DELTA, indent=1).split("\n"))
            + "\n",
            "SSE data spread over several lines",
            id="multi-line-data",
        ),
        pytest.param("data: [DONE]\n\n", "a Responses stream has no [DONE]", id="done-sentinel"),
        pytest.param("data: \n\n", "SSE event with empty data", id="empty-data-no-event"),
    ],
)
def test_responses_sse_framing_is_checked(frame: str, problem: str) -> None:
    # §2.1 / §7.1: ``event:`` equals ``data.type``, data is one line of JSON, never empty, no
    # [DONE]. The SDK tolerates most of these; other SSE clients and the gateway do not.
    recorder = ValidationRecorder()
    reply = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=encode_sse(GOOD_DELTA) + frame.encode(),
        )
    )
    with _client(recorder, reply) as client:
        client.post("/openai/v1/responses")
    assert recorder.failures == [f"POST /openai/v1/responses -> 200: {problem}"]


def test_binary_replies_are_left_alone() -> None:
    recorder = ValidationRecorder()
    reply = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200, headers={"content-type": "application/octet-stream"}, content=b"\x00\x01"
        )
    )
    with _client(recorder, reply) as client:
        assert client.get("/openai/v1/containers/c/files/f/content").content == b"\x00\x01"
    assert recorder.failures == []


async def test_the_async_hook_records_too() -> None:
    recorder = ValidationRecorder()
    reply = httpx2.MockTransport(lambda request: httpx2.Response(200, json=BAD_CONTAINER))
    async with httpx2.AsyncClient(
        transport=reply, event_hooks=recorder.async_hooks(), base_url="http://emulator"
    ) as client:
        await client.get("/openai/v1/containers/cntr_1")
    assert len(recorder.failures) == 1
