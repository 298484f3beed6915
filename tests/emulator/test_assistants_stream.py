"""Streaming Assistants runs: the SDK's ``AssistantEventHandler`` and the raw framing (§4.4).

The fixture validates each event against ``AssistantStreamEvent`` as it passes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import AssistantEventHandler, OpenAI
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads import ImageFile, Message, Text
from openai.types.beta.threads.runs import ToolCall

from cigate.emulator.auth import make_test_jwt
from cigate.testing.plugin import RunningEmulator

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "gpt-4o-mini"
CODE = """\
import matplotlib.pyplot as plt
plt.plot([3, 1, 2])
plt.show()
with open("/mnt/data/report.txt", "w") as f:
    f.write("streamed")
print("done")
"""
PROMPT = f"Plot it and write a report.\n```python\n{CODE}```\n"


class Recorder(AssistantEventHandler):
    """Keeps what the SDK's handler callbacks saw."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.texts: list[str] = []
        self.deltas: list[str] = []
        self.images: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.messages: list[Message] = []

    def on_event(self, event: AssistantStreamEvent) -> None:
        self.names.append(event.event)

    def on_text_delta(self, delta: Any, snapshot: Text) -> None:
        self.deltas.append(delta.value or "")

    def on_text_done(self, text: Text) -> None:
        self.texts.append(text.value)

    def on_image_file_done(self, image_file: ImageFile) -> None:
        self.images.append(image_file.file_id)

    def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.tool_calls.append(tool_call)

    def on_message_done(self, message: Message) -> None:
        self.messages.append(message)


def _setup(client: OpenAI) -> tuple[str, str]:
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": PROMPT}])
    return assistant.id, thread.id


def test_a_streamed_run_drives_the_sdks_event_handler(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    assistant_id, thread_id = _setup(client)
    handler = Recorder()
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=handler
    ) as stream:
        stream.until_done()
        final_run = stream.get_final_run()
        final_messages = stream.get_final_messages()
    assert final_run.status == "completed"
    names = handler.names
    assert names[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert names[-1] == "thread.run.completed"
    assert names.index("thread.run.step.completed") < names.index("thread.message.created")
    for name in ("thread.run.step.delta", "thread.message.delta", "thread.message.completed"):
        assert name in names
    # The SDK reports the last tool call done again at run completion: one call, seen twice.
    [call] = {c.id: c for c in handler.tool_calls}.values()
    assert call.type == "code_interpreter"
    assert call.code_interpreter.input == CODE
    assert [o.type for o in call.code_interpreter.outputs] == ["logs", "image"]
    [message] = final_messages
    assert message.status == "completed"
    image, text = message.content
    assert image.type == "image_file"
    assert handler.images == [image.image_file.file_id]
    assert text.type == "text"
    assert "".join(handler.deltas) == text.text.value == handler.texts[-1]
    [annotation] = text.text.annotations
    assert annotation.type == "file_path"
    assert annotation.text == "sandbox:/mnt/data/report.txt"
    assert text.text.value[annotation.start_index : annotation.end_index] == annotation.text
    assert client.files.content(annotation.file_path.file_id).read() == b"streamed"
    stored = client.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
    assert stored.content == message.content or stored.content[1].text.value == text.text.value


def test_the_raw_stream_ends_with_event_done_and_data_done(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    assistant_id, thread_id = _setup(client)
    http = emulator.http_client()
    headers = {"authorization": "Bearer " + make_test_jwt(), "content-type": "application/json"}
    with http.stream(
        "POST",
        f"/openai/threads/{thread_id}/runs?api-version=2024-05-01-preview",
        headers=headers,
        content=json.dumps({"assistant_id": assistant_id, "stream": True}),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    frames = [f for f in body.split("\n\n") if f]
    assert frames[-1] == "event: done\ndata: [DONE]"
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: thread.")
        data = json.loads(data_line.removeprefix("data: "))
        assert "type" not in data or data.get("object") != "thread.run"
    assert frames[-2].startswith("event: thread.run.completed\n")
