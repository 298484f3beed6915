"""Streaming Responses (SSE) through the real openai SDK: order, invariants, helper, replay.

api-reference §2 and §7: the raw ``stream=True`` iterator must yield typed events in the exact
order of the real service, and ``client.responses.stream(...)`` must accept them and return the
citations from ``get_final_response()``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import openai
import pytest

from cigate.engine.conformance import CODE_CALL_ORDER, citation_problems, stream_problems
from cigate.testing.plugin import RunningEmulator

MODEL = "gpt-4.1"
AUTO: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]
OUTPUTS: list[Any] = ["code_interpreter_call.outputs"]
WRITE = "with open('/mnt/data/{name}', 'w') as f:\n    f.write({text!r})"
#: A cell whose kernel really dies: SIGKILL cannot be caught, the sandbox notices at once.
KILL_KERNEL = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
#: A killed kernel is reported to the model and replaced; one killed on every one of its
#: eleven lives (MAX_RESTARTS + 1) fails the response.
KILLS = (KILL_KERNEL,) * 12
KERNEL_DIED = "The code interpreter failed: cannot run code: the kernel died 11 times"


def cells(*codes: str) -> str:
    return "Run these.\n" + "".join(f"```python\n{code}\n```\n" for code in codes)


def raw_events(emulator: RunningEmulator, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("model", MODEL)
    with emulator.openai().responses.create(stream=True, **kwargs) as stream:
        return [event.to_dict() for event in stream]


def expected_order(events: list[dict[str, Any]]) -> list[str]:
    """§2.2 as a template, sized by the number of deltas and annotations actually sent."""
    out = ["response.created", "response.in_progress"]
    index = 2
    while events[index]["type"] == "response.output_item.added" and (
        events[index]["item"]["type"] == "code_interpreter_call"
    ):
        deltas = 0
        while events[index + 2 + deltas]["type"] == "response.code_interpreter_call_code.delta":
            deltas += 1
        out += ["response.output_item.added", CODE_CALL_ORDER[0]]
        out += [CODE_CALL_ORDER[1]] * deltas + list(CODE_CALL_ORDER[2:])
        out += ["response.output_item.done"]
        index = len(out)
    texts = sum(1 for e in events if e["type"] == "response.output_text.delta")
    notes = sum(1 for e in events if e["type"] == "response.output_text.annotation.added")
    out += ["response.output_item.added", "response.content_part.added"]
    out += ["response.output_text.delta"] * texts
    out += ["response.output_text.annotation.added"] * notes
    out += [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    return out


SCENARIOS = {
    "plain-text": {"input": "hello there"},
    "code-without-tool": {"input": cells("print(1)")},
    "one-cell-one-file": {"input": cells(WRITE.format(name="a.txt", text="A")), "tools": AUTO},
    "two-cells-two-files-with-outputs": {
        "input": cells(
            WRITE.format(name="one.txt", text="1"),
            "import os\nos.makedirs('/mnt/data/sub', exist_ok=True)\n"
            + WRITE.format(name="sub/two.txt", text="2"),
        ),
        "tools": AUTO,
        "include": OUTPUTS,
    },
    "a-cell-that-raises": {"input": cells("raise ValueError('boom')"), "tools": AUTO},
    "an-empty-cell": {"input": cells(""), "tools": AUTO},
}


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=list(SCENARIOS))
def test_raw_stream_keeps_the_exact_order_and_every_invariant(
    emulator: RunningEmulator, scenario: str
) -> None:
    events = raw_events(emulator, **SCENARIOS[scenario])
    assert stream_problems(events) == []
    assert [e["type"] for e in events] == expected_order(events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1


def test_the_stream_helper_returns_citations_that_download(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    code = WRITE.format(name="report.md", text="# Report\n")
    with client.responses.stream(model=MODEL, input=cells(code), tools=AUTO) as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.output_text.annotation.added" in seen
    message = final.output[-1]
    assert message.type == "message"
    text = message.content[0].text  # type: ignore[union-attr]
    [citation] = message.content[0].annotations  # type: ignore[union-attr]
    assert text[citation.start_index : citation.end_index] == "sandbox:/mnt/data/report.md"
    assert citation.filename == "report.md"
    data = client.containers.files.content.retrieve(
        citation.file_id, container_id=citation.container_id
    )
    assert data.read() == b"# Report\n"


def test_unicode_before_the_links_keeps_code_point_offsets(emulator: RunningEmulator) -> None:
    code = "print('Grüße, “naïve” café ✓ 🎉 日本語')\n" + WRITE.format(name="ü.txt", text="x")
    with emulator.openai().responses.stream(model=MODEL, input=cells(code), tools=AUTO) as s:
        final = s.get_final_response()
    part = final.output[-1].content[0]  # type: ignore[union-attr]
    assert "🎉 日本語" in part.text
    [citation] = part.annotations
    assert part.text[citation.start_index : citation.end_index] == "sandbox:/mnt/data/ü.txt"
    assert citation_problems(part.text, [a.to_dict() for a in part.annotations]) == []


async def test_the_async_stream_helper_gets_the_final_response(emulator: RunningEmulator) -> None:
    client = emulator.async_openai()
    code = WRITE.format(name="async.txt", text="a")
    async with client.responses.stream(model=MODEL, input=cells(code), tools=AUTO) as stream:
        final = await stream.get_final_response()
    [citation] = final.output[-1].content[0].annotations  # type: ignore[union-attr]
    assert citation.filename == "async.txt"
    await client.close()


def test_events_leave_while_the_cell_still_runs(emulator: RunningEmulator) -> None:
    # Over a real socket in both modes: the in-process transport buffers whole bodies.
    client = emulator.openai(
        http_client=emulator.http_client(base_url="", transport=httpx2.HTTPTransport())
    )
    arrivals: dict[str, float] = {}
    with client.responses.create(
        model=MODEL, input=cells("import time\ntime.sleep(1.0)"), tools=AUTO, stream=True
    ) as stream:
        for event in stream:
            arrivals.setdefault(event.type, time.monotonic())
    waited = (
        arrivals["response.code_interpreter_call.completed"]
        - arrivals["response.code_interpreter_call.interpreting"]
    )
    assert waited >= 0.8


def test_annotations_are_repeated_in_the_done_events_and_the_completed_response(
    emulator: RunningEmulator,
) -> None:
    events = raw_events(emulator, input=cells(WRITE.format(name="n.txt", text="n")), tools=AUTO)
    [added] = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    note = added["annotation"]
    part_done = next(e for e in events if e["type"] == "response.content_part.done")
    item_done = [e for e in events if e["type"] == "response.output_item.done"][-1]
    completed = events[-1]["response"]
    assert part_done["part"]["annotations"] == [note]
    assert item_done["item"]["content"][0]["annotations"] == [note]
    assert completed["output"][-1]["content"][0]["annotations"] == [note]
    assert added["annotation_index"] == 0


def test_a_stored_stream_can_be_replayed_after_a_sequence_number(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    events = raw_events(emulator, input=cells("print(3)"), tools=AUTO)
    response_id = events[0]["response"]["id"]
    with client.responses.retrieve(response_id, stream=True, starting_after=4) as replay:
        replayed = [event.to_dict() for event in replay]
    assert [unpadded(e) for e in replayed] == [unpadded(e) for e in events[5:]]


def unpadded(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its ``obfuscation`` padding (random on every send)."""
    return {k: v for k, v in event.items() if k != "obfuscation"}


def test_deltas_carry_obfuscation_padding_unless_it_is_turned_off(
    emulator: RunningEmulator,
) -> None:
    request = {"input": cells("print(3)"), "tools": AUTO}
    padded = raw_events(emulator, **request)
    deltas = [e for e in padded if e["type"].endswith(".delta")]
    assert {e["type"] for e in deltas} == {
        "response.code_interpreter_call_code.delta",
        "response.output_text.delta",
    }
    for event in deltas:
        size = len(event["delta"].encode()) + len(event["obfuscation"])
        assert size % 16 == 0
        assert event["obfuscation"].isalnum()
    assert not any("obfuscation" in e for e in padded if not e["type"].endswith(".delta"))
    plain = raw_events(emulator, **request, stream_options={"include_obfuscation": False})
    assert not any("obfuscation" in e for e in plain)
    with emulator.openai().responses.retrieve(
        plain[0]["response"]["id"], stream=True, include_obfuscation=False
    ) as replay:
        assert not any("obfuscation" in e.to_dict() for e in replay)
    with emulator.openai().responses.retrieve(plain[0]["response"]["id"], stream=True) as replay:
        assert any("obfuscation" in e.to_dict() for e in replay)  # on by default


def test_an_expired_container_fails_before_the_stream_starts(emulator: RunningEmulator) -> None:
    client = emulator.openai()
    first = client.responses.create(model=MODEL, input=cells("1"), tools=AUTO)
    emulator.control.advance_clock(21 * 60)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODEL,
            input=cells("2"),
            tools=AUTO,
            previous_response_id=first.id,
            stream=True,
        )
    assert caught.value.message == "Error code: 400 - Container is expired."


def test_a_killed_kernel_is_reported_in_the_cells_logs_and_the_next_cell_gets_a_new_one(
    emulator: RunningEmulator,
) -> None:
    events = raw_events(
        emulator,
        input=cells("kept = 1", KILL_KERNEL, "'kept' in dir()"),
        tools=AUTO,
        include=["code_interpreter_call.outputs"],
    )
    assert stream_problems(events) == []
    assert events[-1]["type"] == "response.completed"
    calls = [i for i in events[-1]["response"]["output"] if i["type"] == "code_interpreter_call"]
    assert [c["status"] for c in calls] == ["completed"] * 3
    logs = [c["outputs"][0]["logs"] if c["outputs"] else "" for c in calls]
    assert logs[1].startswith("KernelDied: The Python kernel died (killed by SIGKILL)")
    assert logs[2] == "False"  # a new kernel: state reset


def test_a_failure_mid_stream_ends_with_response_failed(emulator: RunningEmulator) -> None:
    events = raw_events(emulator, input=cells(*KILLS, "print('never')"), tools=AUTO)
    assert stream_problems(events) == []
    assert [e["type"] for e in events][-3:] == [
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.failed",
    ]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert set(failed["error"]) == {"code", "message"}
    assert failed["error"]["code"] == "server_error"
    assert failed["error"]["message"].startswith(KERNEL_DIED)
    statuses = [item["status"] for item in failed["output"]]
    assert statuses == ["completed"] * 11 + ["failed"]  # the last cell never ran


def test_a_failure_without_streaming_is_a_server_error(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model=MODEL, input=cells(*KILLS), tools=AUTO)
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"
    assert caught.value.message.startswith(f"Error code: 500 - {KERNEL_DIED}")


def test_raw_sse_frames_are_one_event_line_and_one_line_of_json_named_by_its_type(
    emulator: RunningEmulator,
) -> None:
    # §2.1 / §7.1, on the bytes themselves (the SDK would tolerate most deviations).
    body = {
        "model": MODEL,
        "input": cells("print('a\\u2028b')", WRITE.format(name="s.txt", text="s")),
        "tools": AUTO,
        "include": OUTPUTS,
        "stream": True,
    }
    reply = emulator.http_client(headers=emulator.auth_headers).post(
        "/openai/v1/responses", json=body
    )
    assert reply.headers["content-type"].startswith("text/event-stream")
    frames = reply.content.decode().split("\n\n")
    assert frames.pop() == ""  # the stream ends with a complete frame
    events = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        name = event_line.removeprefix("event: ")
        data = data_line.removeprefix("data: ")
        assert data
        assert data != "[DONE]"
        events.append(json.loads(data))
        assert events[-1]["type"] == name
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    # §7.6: with include, outputs hold logs (and images); the written file is never one of them.
    calls = [i for i in events[-1]["response"]["output"] if i["type"] == "code_interpreter_call"]
    assert [[o["type"] for o in call["outputs"]] for call in calls] == [["logs"], []]
