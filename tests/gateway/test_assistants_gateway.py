"""Seed 004 through the gateway: Assistants pass through, ``assistant-…`` files are harvested,
and the one ``/files/{id}/content`` serves them and ``cfile_…`` files after the upstream lost them.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai import AssistantEventHandler, OpenAI

from cigate.testing.plugin import RunningEmulator
from tests.gateway.live import CODE_TOOL, LiveGateway, code_input

pytestmark = [pytest.mark.sandbox, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CSV = b"sector,operating_profit\nTRANSPORTATION,12\nBANKING,7\n"
CHART = """
import glob
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
df = pd.read_csv(glob.glob("/mnt/data/*profits.csv")[0])
fig, ax = plt.subplots()
ax.bar(df.sector, df.operating_profit)
fig.savefig("/mnt/data/chart.png")
df.to_csv("/mnt/data/copy.csv", index=False)
"""


def _thread(client: OpenAI, code: str) -> tuple[str, str]:
    uploaded = client.files.create(file=("profits.csv", CSV), purpose="assistants")
    assistant = client.beta.assistants.create(
        model="gpt-4o-mini",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": code_input(code)}])
    return assistant.id, thread.id


def _cited(messages: Any) -> dict[str, str]:
    """file id -> how the reply cites it: ``image_file`` (an image is also linked in the text),
    else the ``file_path`` sandbox URL."""
    out: dict[str, str] = {}
    for message in messages:
        for block in message.content:
            if block.type == "image_file":
                out[block.image_file.file_id] = "image_file"
            elif block.type == "text":
                for ann in block.text.annotations:
                    if ann.type == "file_path":
                        out.setdefault(ann.file_path.file_id, ann.text)
    return out


def test_seed_004_through_the_gateway_harvests_every_assistant_file(
    sqlite_live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    gw = sqlite_live_gateway
    client = gw.openai()
    assistant_id, thread_id = _thread(client, CHART)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "completed"
    cited = _cited(client.beta.threads.messages.list(thread_id=thread_id, run_id=run.id))
    assert sorted(cited.values()) == ["image_file", "sandbox:/mnt/data/copy.csv"]
    files = gw.harvested(run.id, at_least=2)
    by_id = {f["upstream_file_id"]: f for f in files}
    assert set(by_id) == set(cited)
    assert {f["filename"] for f in files} == {"chart.png", "copy.csv"}
    assert all((f["state"], f["origin"]) == ("stored", "assistants") for f in files)

    upstream = emulator.openai()
    for file_id in cited:  # gone upstream: the gateway answers from its store
        upstream.files.delete(file_id)
    http = gw.http()
    png = next(i for i, how in cited.items() if how == "image_file")
    assert http.get(f"/files/{png}/content").content.startswith(b"\x89PNG")
    csv = next(i for i, how in cited.items() if how != "image_file")
    assert http.get(f"/files/{csv}/content").content == CSV
    assert client.files.content(csv).read() == CSV


def test_a_streamed_run_through_the_gateway_is_relayed_and_harvested(
    sqlite_live_gateway: LiveGateway,
) -> None:
    gw = sqlite_live_gateway
    client = gw.openai()
    assistant_id, thread_id = _thread(client, CHART)
    names: list[str] = []

    class Names(AssistantEventHandler):
        def on_event(self, event: Any) -> None:
            names.append(event.event)

    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=Names()
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()
    assert names[0] == "thread.run.created"
    assert names[-1] == "thread.run.completed"
    files = gw.harvested(run.id, at_least=2)
    assert {f["filename"] for f in files} == {"chart.png", "copy.csv"}


def test_one_endpoint_serves_a_cfile_and_an_assistant_file_after_the_container_expired(
    sqlite_live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    gw = sqlite_live_gateway
    client = gw.openai()
    response = client.responses.create(
        model="gpt-4.1",
        input=code_input("open('/mnt/data/resp.txt', 'w').write('from responses')"),
        tools=CODE_TOOL,
    )
    [cfile] = gw.harvested(response.id, at_least=1)
    assert cfile["upstream_file_id"].startswith("cfile_")

    assistant_id, thread_id = _thread(
        client, "open('/mnt/data/asst.txt', 'w').write('from assistants')"
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    client.beta.threads.messages.list(thread_id=thread_id)  # the gateway sees the citation
    [afile] = gw.harvested(run.id, at_least=1)
    assert afile["upstream_file_id"].startswith("assistant-")

    emulator.control.advance_clock(21 * 60)  # both containers expire upstream
    http = gw.http()
    for f, expected in ((cfile, b"from responses"), (afile, b"from assistants")):
        for any_id in (f["id"], f["upstream_file_id"]):
            got = http.get(f"/files/{any_id}/content")
            assert got.status_code == 200, got.text
            assert got.content == expected


def test_the_dated_azure_surface_passes_through_the_gateway(
    sqlite_live_gateway: LiveGateway,
) -> None:
    http = sqlite_live_gateway.http()
    version = {"api-version": "2024-05-01-preview"}
    created = http.post(
        "/openai/assistants",
        params=version,
        json={"model": "gpt-4o-mini", "tools": [{"type": "code_interpreter"}]},
    )
    assert created.status_code == 200, created.text
    assert created.json()["object"] == "assistant"
    missing = http.get("/openai/threads/thread_nope", params=version)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "No thread found with id 'thread_nope'."
