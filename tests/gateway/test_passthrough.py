"""Generic pass-through: uploads, containers and any other OpenAI path, scoped per tenant.

The official SDK through the gateway to the emulator, on SQLite + disk only: the scoping logic
is the gateway's, the backend's part (the owners table) is covered by the storage suite.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from cigate.client._config import resolve_config
from cigate.client._responses import run
from cigate.testing.plugin import RunningEmulator
from tests.gateway.live import LiveGateway, code_input

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

MODEL = "gpt-4.1"


def test_a_file_uploaded_through_the_gateway_belongs_to_the_uploader(
    sqlite_live_gateway: LiveGateway,
) -> None:
    gw = sqlite_live_gateway
    a = gw.openai()
    b = gw.openai(gw.add_tenant("other"))
    uploaded = a.files.create(file=("notes.txt", b"mine only"), purpose="assistants")
    assert uploaded.id.startswith(("assistant-", "file-"))
    assert a.files.retrieve(uploaded.id).purpose == "assistants"
    assert uploaded.id in {f.id for f in a.files.list()}
    assert uploaded.id not in {f.id for f in b.files.list()}
    for call in (
        lambda: b.files.retrieve(uploaded.id),
        lambda: b.files.content(uploaded.id),
        lambda: b.files.delete(uploaded.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert a.files.content(uploaded.id).read() == b"mine only"
    assert a.files.delete(uploaded.id).deleted


def test_a_container_created_through_the_gateway_works_end_to_end_and_survives_expiry(
    sqlite_live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    gw = sqlite_live_gateway
    sdk = gw.openai()
    container = sdk.containers.create(name="through-the-gateway")
    upload = sdk.containers.files.create(container.id, file=("input.csv", b"n\n1\n2\n3\n"))
    assert upload.path.endswith("input.csv")
    assert container.id in {c.id for c in sdk.containers.list()}
    assert sdk.containers.retrieve(container.id).name == "through-the-gateway"
    # Live: the upload is listed and downloadable before anything was harvested.
    assert upload.id in {f.id for f in sdk.containers.files.list(container_id=container.id)}
    content = sdk.containers.files.content.retrieve(upload.id, container_id=container.id)
    assert content.read() == b"n\n1\n2\n3\n"

    cell = (
        "import glob\nsrc = glob.glob('/mnt/data/*input.csv')[0]\n"
        "total = sum(int(x) for x in open(src).read().split()[1:])\n"
        "open('/mnt/data/total.txt', 'w').write(str(total))"
    )
    response = sdk.responses.create(
        model=MODEL,
        input=code_input(cell),
        tools=[{"type": "code_interpreter", "container": container.id}],
    )
    files = gw.harvested(response.id, at_least=2)
    total = next(f for f in files if f["filename"].endswith("total.txt"))

    emulator.control.advance_clock(21 * 60)
    cfile = total["upstream_file_id"]
    assert sdk.containers.files.content.retrieve(cfile, container_id=container.id).read() == b"6"
    listed = {f.id for f in sdk.containers.files.list(container_id=container.id)}
    assert cfile in listed  # from the store: the container is gone
    sdk.containers.delete(container.id)


def test_another_tenant_gets_404_on_every_path_of_a_container(
    sqlite_live_gateway: LiveGateway,
) -> None:
    gw = sqlite_live_gateway
    a = gw.openai()
    container = a.containers.create(name="a's")
    upload = a.containers.files.create(container.id, file=("secret.txt", b"secret"))
    cid, fid = container.id, upload.id
    b = gw.openai(gw.add_tenant("other"))
    calls = {
        "retrieve": lambda: b.containers.retrieve(cid),
        "delete": lambda: b.containers.delete(cid),
        "files.list": lambda: b.containers.files.list(container_id=cid),
        "files.create": lambda: b.containers.files.create(cid, file=("x.txt", b"x")),
        "files.retrieve": lambda: b.containers.files.retrieve(fid, container_id=cid),
        "files.content": lambda: b.containers.files.content.retrieve(fid, container_id=cid),
        "files.delete": lambda: b.containers.files.delete(fid, container_id=cid),
        "responses.create": lambda: b.responses.create(
            model=MODEL,
            input=code_input("print(open('/mnt/data/secret.txt').read())"),
            tools=[{"type": "code_interpreter", "container": cid}],
        ),
    }
    for name, call in calls.items():
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert "secret" not in str(caught.value.body), name
    assert cid not in {c.id for c in b.containers.list()}
    raw = gw.http(gw.add_tenant("third")).get(f"/openai/v1/containers/{cid}/anything/else")
    assert raw.status_code == 404
    # Tenant A still has everything.
    assert [f.id for f in a.containers.files.list(container_id=cid)] == [fid]


@pytest.mark.parametrize("method", ["GET", "POST"], ids=["get", "post"])
def test_a_path_outside_the_api_gets_an_openai_shaped_404(
    sqlite_live_gateway: LiveGateway, method: str
) -> None:
    r = sqlite_live_gateway.http().request(method, "/no/such/route")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_cigate_run_works_with_the_gateway_as_its_endpoint(
    sqlite_live_gateway: LiveGateway, tmp_path: Path
) -> None:
    gw = sqlite_live_gateway
    data = tmp_path / "numbers.csv"
    data.write_text("n\n1\n2\n3\n")
    prompt = code_input(
        "import glob\nsrc = glob.glob('/mnt/data/*numbers.csv')[0]\n"
        "total = sum(int(x) for x in open(src).read().split()[1:])\n"
        "open('/mnt/data/total.txt', 'w').write(str(total))"
    )
    config = resolve_config(endpoint=gw.url, api_key=gw.tenant.key, env={})
    out = tmp_path / "out"
    result = run(prompt, files=[data], model=MODEL, config=config, out=out)
    assert result.status == "completed"
    assert [r.ref.filename for r in result.results] == ["total.txt"]
    assert (out / "total.txt").read_text() == "6"
    assert result.response_id is not None
    harvested = gw.harvested(result.response_id, at_least=1)
    assert any(f["filename"].endswith("total.txt") for f in harvested)


def test_two_tenants_asking_for_an_unowned_file_at_once_never_both_get_it(
    sqlite_live_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    """A Files-API id made directly upstream belongs to the first tenant that asks for it; two
    asking at the same moment are settled by one atomic claim (5 rounds, threads released
    together by a barrier)."""
    gw = sqlite_live_gateway
    tenants = [gw.tenant, gw.add_tenant("rival")]
    clients = [gw.http(t) for t in tenants]
    for round_ in range(5):
        made = emulator.openai().files.create(
            file=(f"made-upstream-{round_}.txt", b"one owner"), purpose="assistants"
        )
        barrier = threading.Barrier(2)

        def ask(http: Any, file_id: str = made.id, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            return int(http.get(f"/openai/v1/files/{file_id}").status_code)

        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(ask, clients))
        assert sorted(statuses) == [200, 404], (round_, statuses)
        winner, loser = (clients[0], clients[1]) if statuses[0] == 200 else clients[::-1]
        assert winner.get(f"/files/{made.id}/content").content == b"one owner"
        assert loser.get(f"/files/{made.id}/content").status_code == 404
