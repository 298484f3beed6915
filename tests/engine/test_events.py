"""The event log: numbering, SSE framing, live following and replay."""

from __future__ import annotations

import asyncio
import json

from cigate.engine.events import EventLog, encode_sse


def test_sse_frames_are_event_and_one_line_data_with_no_done_sentinel() -> None:
    frame = encode_sse({"type": "response.output_text.delta", "delta": "é\nx"})
    head, data, *rest = frame.decode().split("\n")
    assert head == "event: response.output_text.delta"
    assert json.loads(data.removeprefix("data: ")) == {
        "type": "response.output_text.delta",
        "delta": "é\nx",
    }
    assert rest == ["", ""]
    assert b"[DONE]" not in frame


def test_sequence_numbers_start_at_zero_and_grow_by_one() -> None:
    log = EventLog()
    numbers = [log.emit("e", n=i)["sequence_number"] for i in range(3)]
    assert numbers == [0, 1, 2]


async def test_a_follower_gets_past_events_then_live_ones_until_close() -> None:
    log = EventLog()
    log.emit("a")
    seen: list[str] = []

    async def follow() -> None:
        async for event in log.follow():
            seen.append(event["type"])

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    log.emit("b")
    await asyncio.sleep(0)
    assert seen == ["a", "b"]
    log.emit("c")
    log.close()
    await asyncio.wait_for(task, 1)
    assert seen == ["a", "b", "c"]


async def test_replay_starts_after_the_given_sequence_number() -> None:
    log = EventLog()
    for name in "abcd":
        log.emit(name)
    log.close()
    assert [e["type"] async for e in log.follow(starting_after=1)] == ["c", "d"]
    assert [e["type"] async for e in log.follow(starting_after=9)] == []


async def test_a_batch_follower_gets_every_ready_event_at_once() -> None:
    log = EventLog()
    for name in "abc":
        log.emit(name)
    batches = log.follow_batches()
    assert [e["type"] for e in await anext(batches)] == ["a", "b", "c"]
    log.emit("d")
    log.close()
    assert [[e["type"] for e in batch] async for batch in batches] == [["d"]]
