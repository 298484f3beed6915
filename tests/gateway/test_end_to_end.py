"""The official SDK through the gateway to the emulator: pass-through, harvest, expiry, facade."""

from __future__ import annotations

import re
import time

import openai
import pytest

from cigate.testing.plugin import RunningEmulator
from tests.gateway.live import CODE_TOOL, LiveGateway, code_input

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

BIG = bytes(range(256)) * 5000  # 1.28 MB: crosses a 1 MiB chunk boundary
CSV = b"a,b\n1,2\n"
WRITE_FILES = """
data = bytes(range(256)) * 5000
open('/mnt/data/numbers.bin', 'wb').write(data)
open('/mnt/data/table.csv', 'wb').write(b'a,b\\n1,2\\n')
print('done')
"""
EXPECTED = {"numbers.bin": BIG, "table.csv": CSV}


def _run(gw: LiveGateway, *, stream: bool, cells: tuple[str, ...] = (WRITE_FILES,)) -> tuple:
    client = gw.openai()
    if not stream:
        response = client.responses.create(
            model="gpt-4.1", input=code_input(*cells), tools=CODE_TOOL
        )
        return response, []
    events = list(
        client.responses.create(
            model="gpt-4.1", input=code_input(*cells), tools=CODE_TOOL, stream=True
        )
    )
    final = events[-1]
    assert final.type == "response.completed"
    return final.response, events


def _masked(body: bytes) -> bytes:
    """The body with its generated ids and timestamps replaced (they differ per call)."""
    body = re.sub(rb"\b(resp|msg|rs|ci|cntr|cfile)_[0-9a-f]+", rb"\1_X", body)
    return re.sub(rb'"(created_at|completed_at)":\d+', rb'"\1":0', body)


def _citations(response) -> list:
    return [
        ann
        for item in response.output
        if item.type == "message"
        for part in item.content
        for ann in part.annotations
        if ann.type == "container_file_citation"
    ]


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "plain"])
def test_files_survive_container_expiry_on_every_download_path(
    live_gateway: LiveGateway, emulator: RunningEmulator, stream: bool
) -> None:
    response, events = _run(live_gateway, stream=stream)
    if stream:
        numbers = [e.sequence_number for e in events]
        assert numbers == list(range(len(events)))  # relayed whole and in order
    citations = _citations(response)
    assert {c.filename for c in citations} == set(EXPECTED)
    files = live_gateway.harvested(response.id, at_least=len(EXPECTED))
    assert {f["filename"]: f["state"] for f in files} == dict.fromkeys(EXPECTED, "stored")

    emulator.control.advance_clock(21 * 60)
    container_id = citations[0].container_id
    upstream = emulator.openai()
    with pytest.raises(openai.APIStatusError):
        upstream.containers.files.content.retrieve(citations[0].file_id, container_id=container_id)

    http = live_gateway.http()
    sdk = live_gateway.openai()
    for f in files:
        expected = EXPECTED[f["filename"]]
        cfile = f["upstream_file_id"]
        assert http.get(f"/files/{f['id']}/content").content == expected
        assert http.get(f"/files/{cfile}/content").content == expected
        got = sdk.containers.files.content.retrieve(cfile, container_id=container_id)
        assert got.read() == expected
        meta = sdk.containers.files.retrieve(cfile, container_id=container_id)
        assert (meta.bytes, meta.path) == (len(expected), f"/mnt/data/{f['filename']}")
    listed = sdk.containers.files.list(container_id=container_id)
    assert {f.id for f in listed} == {f["upstream_file_id"] for f in files}


def test_files_the_model_never_cited_are_harvested_at_completion(
    live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    upstream = emulator.openai()
    container = upstream.containers.create(name="with-input")
    upstream.containers.files.create(container.id, file=("input.txt", b"uploaded before"))
    response = live_gateway.openai().responses.create(
        model="gpt-4.1",
        input=code_input("open('/mnt/data/out.txt', 'w').write('made by code')"),
        tools=[{"type": "code_interpreter", "container": container.id}],
    )
    files = live_gateway.harvested(response.id, at_least=2)
    by_name = {f["filename"].rsplit("-", 1)[-1]: f for f in files}
    assert by_name["out.txt"]["origin"] == "citation"
    uncited = [f for f in files if f["origin"] == "listing"]
    assert len(uncited) == 1
    assert uncited[0]["state"] == "stored"
    http = live_gateway.http()
    assert http.get(f"/files/{uncited[0]['id']}/content").content == b"uploaded before"


def test_the_stream_arrives_event_by_event_while_a_slow_cell_runs(
    live_gateway: LiveGateway,
) -> None:
    client = live_gateway.openai()
    started = time.monotonic()
    arrivals: dict[str, float] = {}
    stream = client.responses.create(
        model="gpt-4.1",
        input=code_input("import time\ntime.sleep(1.5)\nprint('slow')"),
        tools=CODE_TOOL,
        stream=True,
    )
    for event in stream:
        arrivals.setdefault(event.type, time.monotonic() - started)
    assert arrivals["response.completed"] - arrivals["response.created"] > 1.2
    assert (
        arrivals["response.code_interpreter_call.interpreting"]
        < arrivals["response.completed"] - 1.2
    )


def test_a_plain_answer_passes_through_byte_for_byte(
    live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    body = {"model": "gpt-4.1", "input": "hello there"}
    through = live_gateway.http().post("/openai/v1/responses", json=body)
    assert through.status_code == 200
    direct = emulator.http_client().post(
        "/openai/v1/responses", json=body, headers=emulator.auth_headers
    )
    assert _masked(through.content) == _masked(direct.content)
    fetched = live_gateway.http().get(f"/openai/v1/responses/{through.json()['id']}")
    assert fetched.json()["id"] == through.json()["id"]


def test_upstream_errors_keep_their_status_and_body(live_gateway: LiveGateway) -> None:
    r = live_gateway.http().post("/openai/v1/responses", json={"input": "no model"})
    assert r.status_code == 400
    assert set(r.json()["error"]) >= {"message", "type", "code", "param"}
    with pytest.raises(openai.BadRequestError):
        live_gateway.openai().responses.create(input="no model")  # type: ignore[call-overload]


def test_the_legacy_azure_url_form_is_forwarded(live_gateway: LiveGateway) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=live_gateway.url,
        api_key=live_gateway.tenant.key,
        api_version="2025-04-01-preview",
        http_client=live_gateway.raw_http(),
        max_retries=0,
    )
    response = client.responses.create(model="gpt-4.1", input="hi")
    assert response.status == "completed"


def test_files_api_ids_are_fetched_once_and_belong_to_the_first_tenant(
    live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    uploaded = emulator.openai().files.create(
        file=("notes.txt", b"assistants era"), purpose="assistants"
    )
    http = live_gateway.http()
    r = http.get(f"/files/{uploaded.id}/content")
    assert (r.status_code, r.content) == (200, b"assistants era")
    sdk = live_gateway.openai()
    assert sdk.files.content(uploaded.id).read() == b"assistants era"
    assert sdk.files.retrieve(uploaded.id).filename == "notes.txt"
    other = live_gateway.add_tenant("other")
    assert live_gateway.http(other).get(f"/files/{uploaded.id}/content").status_code == 404
    assert live_gateway.http(other).get(f"/files/{uploaded.id}").status_code == 404
