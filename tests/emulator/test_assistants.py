"""Seed 004's Assistants code-interpreter flow through the real openai SDK (api-reference §4.2).

Every body the emulator sends is validated against the OpenAPI description by the fixture.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import openai
import pytest
from openai import OpenAI

from cigate.testing.plugin import RunningEmulator

# The SDK marks every Assistants method deprecated; the flow is still what users run.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "gpt-4o-mini"
AZURE_ID = re.compile(r"^assistant-[0-9A-Za-z]{22}$")
CSV = b"sector,operating_profit\nTRANSPORTATION,12\nTRANSPORTATION,30\nBANKING,7\n"
CHART_CODE = """\
import glob
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
df = pd.read_csv(glob.glob("/mnt/data/*profits.csv")[0])
total = df[df.sector == "TRANSPORTATION"].operating_profit.sum()
fig, ax = plt.subplots()
ax.bar(["TRANSPORTATION"], [total])
fig.savefig("/mnt/data/transport.png")
df.to_csv("/mnt/data/summary.csv", index=False)
print(total)
"""


def prompt(code: str) -> str:
    return f"Could you please create a bar chart for the operating profit?\n```python\n{code}```\n"


def seed_004_flow(client: OpenAI, code: str = CHART_CODE) -> tuple[Any, Any, list[Any]]:
    """Upload, assistant with the file, thread, message, run and poll, list messages."""
    uploaded = client.files.create(file=("profits.csv", CSV), purpose="assistants")
    assistant = client.beta.assistants.create(
        model=MODEL,
        name="my-agent",
        instructions="You are helpful agent",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content=prompt(code))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    messages = client.beta.threads.messages.list(thread_id=thread.id)
    return run, thread, list(messages)


def test_seed_004_flow_on_the_dated_azure_path_makes_durable_assistant_files(
    emulator: RunningEmulator,
) -> None:
    client = emulator.azure_openai(api_version="2024-05-01-preview", max_retries=0)
    run, thread, messages = seed_004_flow(client)
    assert run.status == "completed"
    assert run.usage is not None
    assert run.usage.total_tokens > 0
    reply, question = messages  # newest first
    assert (reply.role, question.role) == ("assistant", "user")
    assert reply.run_id == run.id
    assert reply.thread_id == thread.id
    image, text = reply.content
    assert image.type == "image_file"
    assert AZURE_ID.match(image.image_file.file_id)
    png = client.files.content(image.image_file.file_id).read()
    assert png.startswith(b"\x89PNG")
    assert text.type == "text"
    paths = {a.text: a for a in text.text.annotations if a.type == "file_path"}
    summary = paths["sandbox:/mnt/data/summary.csv"]
    value = text.text.value
    assert value[summary.start_index : summary.end_index] == summary.text
    assert AZURE_ID.match(summary.file_path.file_id)
    assert client.files.content(summary.file_path.file_id).read() == CSV
    meta = client.files.retrieve(summary.file_path.file_id)
    assert (meta.purpose, meta.filename) == ("assistants_output", "summary.csv")
    assert "42" in value


def test_seed_004_flow_on_the_v1_path_works_too(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    run, _, messages = seed_004_flow(client)
    assert run.status == "completed"
    assert messages[0].content[0].type == "image_file"


def test_the_openai_style_path_gives_file_ids(emulator: RunningEmulator) -> None:
    client = emulator.openai(base_url=emulator.openai_url, max_retries=0)
    run, _, messages = seed_004_flow(client)
    assert run.status == "completed"
    assert messages[0].content[0].image_file.file_id.startswith("file-")


def test_run_steps_carry_the_code_its_logs_and_displayed_images(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai(max_retries=0)
    code = "import matplotlib.pyplot as plt\nprint('hello')\nplt.plot([1, 2, 3])\nplt.show()\n"
    run, thread, messages = seed_004_flow(client, code)
    steps = list(client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id))
    creation, tool = steps  # newest first
    assert tool.type == "tool_calls"
    assert tool.status == "completed"
    [call] = tool.step_details.tool_calls
    assert call.type == "code_interpreter"
    assert call.id.startswith("call_")
    assert call.code_interpreter.input == code
    logs, image = call.code_interpreter.outputs
    assert (logs.type, logs.logs) == ("logs", "hello")
    assert image.type == "image"
    assert client.files.content(image.image.file_id).read().startswith(b"\x89PNG")
    assert creation.step_details.message_creation.message_id == messages[0].id
    again = client.beta.threads.runs.steps.retrieve(tool.id, thread_id=thread.id, run_id=run.id)
    assert again.id == tool.id
    assert messages[0].content[0].image_file.file_id == image.image.file_id
    # The Assistants tool returns a displayed image once (as an image output and its message
    # block); it does not also become a generated file, as it does on the Responses API.
    images = [c for c in messages[0].content if c.type == "image_file"]
    assert [c.image_file.file_id for c in images] == [image.image.file_id]


def test_the_thread_keeps_one_kernel_across_runs(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": prompt("x = 20\n")}])
    first = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    client.beta.threads.messages.create(thread.id, role="user", content=prompt("print(x + 22)\n"))
    second = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert (first.status, second.status) == ("completed", "completed")
    runs = client.beta.threads.runs.list(thread_id=thread.id)
    assert [r.id for r in runs] == [second.id, first.id]
    latest = client.beta.threads.messages.list(thread_id=thread.id, run_id=second.id)
    [reply] = list(latest)
    assert "42" in reply.content[0].text.value


def test_a_message_attachment_is_visible_to_the_code(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    uploaded = client.files.create(file=("notes.txt", b"attached!"), purpose="assistants")
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread.id,
        role="user",
        content=prompt("import glob\nprint(open(glob.glob('/mnt/data/*notes.txt')[0]).read())\n"),
        attachments=[{"file_id": uploaded.id, "tools": [{"type": "code_interpreter"}]}],
    )
    assert message.attachments is not None
    assert message.attachments[0].file_id == uploaded.id
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    reply = client.beta.threads.messages.list(thread_id=thread.id, limit=1).data[0]
    assert "attached!" in reply.content[0].text.value


def test_create_thread_and_run_in_one_call(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": prompt("print(6 * 7)\n")}]},
    )
    assert run.status == "completed"
    reply = client.beta.threads.messages.list(thread_id=run.thread_id).data[0]
    assert "42" in reply.content[0].text.value


def test_messages_page_with_order_after_before_and_limit(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    thread = client.beta.threads.create()
    made = [
        client.beta.threads.messages.create(thread.id, role="user", content=f"m{i}").id
        for i in range(5)
    ]
    asc = client.beta.threads.messages.list(thread.id, order="asc", limit=2)
    assert [m.id for m in asc.data] == made[:2]
    assert asc.has_more is True
    assert [m.id for m in asc.iter_pages().__next__().data] == made[:2]
    after = client.beta.threads.messages.list(thread.id, order="asc", after=made[1], limit=2)
    assert [m.id for m in after.data] == made[2:4]
    before = client.beta.threads.messages.list(thread.id, order="asc", before=made[3], limit=2)
    assert [m.id for m in before.data] == made[1:3]
    assert [m.id for m in client.beta.threads.messages.list(thread.id)] == made[::-1]
    one = client.beta.threads.messages.retrieve(made[2], thread_id=thread.id)
    assert one.content[0].text.value == "m2"


def test_assistants_and_threads_can_be_listed_retrieved_and_deleted(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai(max_retries=0)
    a = client.beta.assistants.create(model=MODEL, name="one", tools=[{"type": "code_interpreter"}])
    b = client.beta.assistants.create(model=MODEL, name="two")
    assert [x.id for x in client.beta.assistants.list()] == [b.id, a.id]
    assert client.beta.assistants.retrieve(a.id).name == "one"
    assert client.beta.assistants.update(a.id, name="uno").name == "uno"
    assert client.beta.assistants.delete(a.id).deleted is True
    thread = client.beta.threads.create(metadata={"k": "v"})
    assert client.beta.threads.retrieve(thread.id).metadata == {"k": "v"}
    assert client.beta.threads.delete(thread.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_a_run_can_be_cancelled_while_its_code_runs(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": prompt("import time\ntime.sleep(2)\n")}]
    )
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "queued"
    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert info.value.message == "Error code: 400 - Cannot cancel run with status 'cancelled'."


def test_a_run_whose_model_breaks_fails_with_a_server_error(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator's ScriptedModel cannot fail, so a Model that raises is plugged into the seam
    # a real model uses; the kernel-death test below fails a run for real.
    class Broken:
        async def next_step(self, conversation: Any, results: Any) -> Any:
            raise RuntimeError("boom")

    monkeypatch.setattr(emulator.backends.assistants, "model", Broken())
    client = emulator.openai(max_retries=0)
    assistant = client.beta.assistants.create(model=MODEL)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert "boom" in run.last_error.message


def test_a_run_whose_kernel_dies_fails_with_a_server_error(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
    kill = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    # A killed kernel is replaced; one that dies on all its lives (MAX_RESTARTS + 1) fails.
    content = "".join(prompt(kill) for _ in range(12))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
        )
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert run.last_error.message.startswith(
        "The run failed: cannot run code: the kernel died 11 times"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda c: c.beta.assistants.retrieve("asst_nope"),
            "No assistant found with id 'asst_nope'.",
            id="assistant",
        ),
        pytest.param(
            lambda c: c.beta.threads.retrieve("thread_nope"),
            "No thread found with id 'thread_nope'.",
            id="thread",
        ),
        pytest.param(
            lambda c: c.beta.threads.messages.list("thread_nope"),
            "No thread found with id 'thread_nope'.",
            id="thread-messages",
        ),
    ],
)
def test_unknown_ids_are_404_with_openais_message(
    emulator: RunningEmulator, call: Any, message: str
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        call(emulator.openai(max_retries=0))
    assert info.value.status_code == 404
    assert info.value.body == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_a_run_on_an_unknown_assistant_is_404(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    thread = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError) as info:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_nope")
    assert info.value.body["message"] == "No assistant found with id 'asst_nope'."  # type: ignore[index]
    assert info.value.param == "assistant_id"


def test_a_second_run_while_one_is_active_is_refused(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    assistant = client.beta.assistants.create(model=MODEL, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": prompt("import time\ntime.sleep(1)\n")}]
    )
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert info.value.body["message"] == (  # type: ignore[index]
        f"Thread {thread.id} already has an active run {run.id}."
    )
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread.id, role="user", content="more")
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed"


def test_unknown_file_ids_are_refused_when_attached(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(
            model=MODEL,
            tools=[{"type": "code_interpreter"}],
            tool_resources={"code_interpreter": {"file_ids": ["assistant-nope"]}},
        )
    assert info.value.param == "tool_resources"


def test_only_the_code_interpreter_tool_is_supported(emulator: RunningEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        emulator.openai(max_retries=0).beta.assistants.create(
            model=MODEL, tools=[{"type": "file_search"}]
        )
    assert info.value.param == "tools[0].type"
