"""``--rewrite-links`` on streams: URLs split across deltas, offsets, framing, the SDK's helper.

Unit tests feed a hand-built stream (every event the SDK's accumulator checks) through
:class:`~cigate.gateway.rewrite.StreamRewriter` in awkward chunkings and replay the result
through the SDK's ``ResponseStreamState``; live tests stream through the gateway to the
emulator and download what the rewritten link names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cigate.engine.conformance import replay_through_sdk, stream_problems
from cigate.gateway.rewrite import StreamRewriter, by_path_url, rewrite_body
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import Backend, live_settings
from tests.gateway.live import (
    CODE_TOOL,
    LiveGateway,
    code_input,
    serving,
)

BASE = "http://gw.test"
RESP = "resp_1"
TEXT = (
    "Voilà — résumé ✓: [the sums](sandbox:/mnt/data/out/sums_é.csv) and "
    "[a chart](sandbox:/mnt/data/chart.png). Also see x; sand and sandbox: stay."
)


def _citation(name: str, file_id: str) -> dict[str, Any]:
    url = f"sandbox:/mnt/data/{name}"
    start = TEXT.index(url)
    return {
        "type": "container_file_citation",
        "container_id": "cntr_1",
        "file_id": file_id,
        "filename": name.rsplit("/", 1)[-1],
        "start_index": start,
        "end_index": start + len(url),
    }


ANNOTATIONS = [
    _citation("out/sums_é.csv", "cfile_a"),
    _citation("chart.png", "cfile_b"),
    {
        "type": "url_citation",
        "url": "https://x.example",
        "title": "x",
        "start_index": TEXT.index("x;"),
        "end_index": TEXT.index("x;") + 1,
    },
]


def _response(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": RESP,
        "object": "response",
        "created_at": 1757603567,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": "gpt-4.1",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "usage": None,
        "metadata": {},
    }


def _events(delta_size: int) -> list[dict[str, Any]]:
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "annotations": ANNOTATIONS, "logprobs": [], "text": TEXT}
    item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response("in_progress", [])},
        {"type": "response.in_progress", "response": _response("in_progress", [])},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            **at,
            "part": {**part, "text": "", "annotations": []},
        },
    ]
    events += [
        {
            "type": "response.output_text.delta",
            **at,
            "delta": TEXT[i : i + delta_size],
            "logprobs": [],
        }
        for i in range(0, len(TEXT), delta_size)
    ]
    events += [
        {
            "type": "response.output_text.annotation.added",
            **at,
            "annotation_index": i,
            "annotation": a,
        }
        for i, a in enumerate(ANNOTATIONS)
    ]
    events += [
        {"type": "response.output_text.done", **at, "text": TEXT, "logprobs": []},
        {"type": "response.content_part.done", **at, "part": part},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**item, "content": [part]},
        },
        {
            "type": "response.completed",
            "response": _response("completed", [{**item, "content": [part]}]),
        },
    ]
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


def _sse(events: list[dict[str, Any]], newline: str = "\n") -> bytes:
    return "".join(
        f"event: {e['type']}{newline}data: {json.dumps(e, ensure_ascii=False)}{newline * 2}"
        for e in events
    ).encode()


def _through(stream: bytes, chunk: int) -> list[dict[str, Any]]:
    rewriter = StreamRewriter(BASE)
    out = b"".join(rewriter.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk))
    out += rewriter.flush()
    blocks = [b for b in out.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    events = []
    for block in blocks:
        lines = block.decode().split("\n")
        assert lines[0].startswith("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        assert lines[0] == f"event: {data['type']}"  # framing kept: event line matches data
        events.append(data)
    return events


def _url(name: str) -> str:
    return by_path_url(BASE, RESP, name)


@pytest.mark.parametrize(
    "delta_size", [1, 3, 7, 500], ids=["1-char", "3-chars", "7-chars", "whole"]
)
@pytest.mark.parametrize(
    "chunk", [5, 64, 1 << 20], ids=["5-byte-chunks", "64-byte-chunks", "one-chunk"]
)
def test_a_stream_split_anywhere_is_rewritten_into_a_stream_the_sdk_accepts(
    delta_size: int, chunk: int
) -> None:
    original = _events(delta_size)
    events = _through(_sse(original), chunk)
    assert [e["sequence_number"] for e in events] == list(range(len(original)))
    assert [e["type"] for e in events] == [e["type"] for e in original]
    # Citations now cover gateway URLs, on purpose; every other rule holds as it did before.
    problems = [p for p in stream_problems(events) if "not a sandbox URL" not in p]
    assert problems == stream_problems(original)
    final = replay_through_sdk(events)
    [message] = final.output
    text, anns = message.content[0].text, message.content[0].annotations
    assert text[anns[0].start_index : anns[0].end_index] == _url("out/sums_é.csv")
    assert text[anns[1].start_index : anns[1].end_index] == _url("chart.png")
    assert text[anns[2].start_index : anns[2].end_index] == "x"
    assert text.startswith("Voilà — résumé ✓: [the sums](")
    assert text.endswith("Also see x; sand and sandbox: stay.")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    added = [e["annotation"] for e in events if e["type"].endswith("annotation.added")]
    assert deltas == done["text"] == text
    assert added == [a.model_dump() for a in anns]
    # The plain (non-streaming) rewrite of the same answer: the same text and offsets.
    plain = json.loads(rewrite_body(original[-1]["response"], BASE))
    assert plain["output"][0]["content"][0]["text"] == text
    assert plain["output"][0]["content"][0]["annotations"] == added


def test_a_held_back_tail_that_is_not_a_url_is_sent_with_the_next_delta() -> None:
    events = _through(_sse(_events(1)), 1 << 20)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    # "s", "a", "n", "d" could start "sandbox:/mnt/data/": sent empty until " " decides.
    i = deltas.index("sand ")
    assert deltas[i - 4 : i] == ["", "", "", ""]
    assert deltas[-1] == "."  # the last delta is let go when the text ends


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_events_without_links_pass_byte_for_byte(newline: str) -> None:
    plain = [e for e in _events(500) if "sandbox" not in json.dumps(e) and "delta" not in e]
    stream = _sse(plain, newline)
    rewriter = StreamRewriter(BASE)
    assert rewriter.feed(stream) + rewriter.flush() == stream


# -- live: SDK -> gateway (--rewrite-links) -> emulator --------------------------------------

NAME = "résumé_✓.txt"
CELL = f"open('/mnt/data/{NAME}', 'w', encoding='utf-8').write('données ✓')"


@pytest.fixture
def rewriting_gateway(emulator: RunningEmulator, backend: Backend) -> Iterator[LiveGateway]:
    settings = dataclasses.replace(live_settings(emulator, backend), rewrite_links=True)
    with serving(settings) as gateway:
        yield gateway


@pytest.mark.storage
@pytest.mark.sandbox
def test_streamed_and_plain_answers_get_the_same_rewritten_link_and_it_downloads(
    rewriting_gateway: LiveGateway,
) -> None:
    gw = rewriting_gateway
    client = gw.openai()
    with client.responses.stream(model="gpt-4.1", input=code_input(CELL), tools=CODE_TOOL) as s:
        streamed = s.get_final_response()
    plain = client.responses.create(model="gpt-4.1", input=code_input(CELL), tools=CODE_TOOL)
    http = gw.http()
    texts = []
    for response in (streamed, plain):
        part = response.output[-1].content[0]
        [ann] = part.annotations
        url = by_path_url(gw.url, response.id, NAME)
        assert part.text[ann.start_index : ann.end_index] == url
        assert "sandbox:" not in part.text
        got = http.get(url)
        assert got.status_code == 200, got.text
        assert got.content == "données ✓".encode()
        texts.append((part.text.replace(response.id, "<id>"), ann.start_index, ann.end_index))
    assert texts[0] == texts[1]
    other = gw.http(gw.add_tenant("other")).get(by_path_url(gw.url, streamed.id, NAME))
    assert other.status_code == 404
