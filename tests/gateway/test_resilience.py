"""Upstream faults, a SIGKILLed gateway, and two gateway processes sharing one store."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest

from cigate.storage.metadata import MetadataStore
from cigate.testing.plugin import RunningEmulator
from cigate.testing.services import free_port
from tests.gateway.conftest import Backend, live_settings, local_backend
from tests.gateway.harness import Tenant
from tests.gateway.live import (
    CODE_TOOL,
    LiveGateway,
    add_tenant,
    code_input,
    serve_process,
    serving,
    start_gateway,
)

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

DATA = bytes(range(256)) * 5000
WRITE = "open('/mnt/data/f.bin', 'wb').write(bytes(range(256)) * 5000)"
CONTENT = "**/containers/*/files/*/content"


def _harvest(gw: LiveGateway) -> dict:
    response = gw.openai().responses.create(
        model="gpt-4.1", input=code_input(WRITE), tools=CODE_TOOL
    )
    [f] = gw.harvested(response.id)
    return f


FAULTS = {
    # Survived: transient or irrelevant to harvesting.
    "transient-500": ({"path": CONTENT, "method": "GET", "status": 500, "count": 2}, None),
    "rate-limited": ({"path": CONTENT, "method": "GET", "status": 429, "count": 1}, None),
    "truncated-body": (
        {"path": CONTENT, "method": "GET", "truncate_after_bytes": 1000, "count": 1},
        None,
    ),
    "dropped-mid-body": (
        {"path": CONTENT, "method": "GET", "drop_mid_body": True, "count": 1},
        None,
    ),
    "slow-download": ({"path": CONTENT, "method": "GET", "latency_ms": 300}, None),
    "list-fails-once": (
        {"path": "**/containers/*/files", "method": "GET", "status": 500, "count": 1},
        None,
    ),
    "list-timeout": ("list-timeout", None),
    # Recorded as failed with the error's class.
    "download-500": ("download-500", "upstream_unavailable"),
    "download-404-empty": ("download-404-empty", "file_not_found"),
    "checkaccess": ("checkaccess", "access_denied"),
    # The gateway's own credential refused (issue 13): the operator's to fix, so the copy is
    # recorded as transiently failed (the sweep tries it again), not as a refusal for good.
    "download-401": (
        {"path": CONTENT, "method": "GET", "status": 401, "body": "azure"},
        "upstream_unavailable",
    ),
}


@pytest.mark.parametrize(("fault", "failure"), list(FAULTS.values()), ids=list(FAULTS))
def test_every_upstream_fault_is_survived_or_recorded_with_its_class(
    sqlite_live_gateway: LiveGateway, emulator: RunningEmulator, fault, failure
) -> None:
    if isinstance(fault, str):
        emulator.control.switch(fault)
    else:
        emulator.control.add_fault(**fault)
    f = _harvest(sqlite_live_gateway)
    if failure is None:
        assert f["state"] == "stored", f
        content = sqlite_live_gateway.http().get(f"/files/{f['id']}/content")
        assert content.content == DATA
    else:
        assert f["state"] == "failed", f
        assert f["error"]["kind"] == failure
        assert f["tries"] == (1 if failure == "access_denied" else 3)
        r = sqlite_live_gateway.http().get(f"/files/{f['id']}/content")
        assert r.status_code == 502
        assert failure in r.json()["error"]["message"]


def test_a_gateway_killed_mid_harvest_finishes_the_harvest_after_a_restart(
    emulator: RunningEmulator, backend: Backend, tmp_path: Path, processes
) -> None:
    settings = live_settings(emulator, backend)
    tenant = add_tenant(settings.database_url, "acme")
    port = free_port()
    processes.append(serve_process(settings, port, tmp_path / "home"))
    emulator.control.add_fault(path=CONTENT, method="GET", latency_ms=30_000)
    base = f"http://127.0.0.1:{port}"
    with httpx2.Client(base_url=base, headers=tenant.headers, timeout=60) as http:
        body = {"model": "gpt-4.1", "input": code_input(WRITE), "tools": CODE_TOOL}
        response = http.post("/openai/v1/responses", json=body).json()
        rows: list = []
        for _ in range(100):
            rows = http.get(f"/responses/{response['id']}/files").json()["data"]
            if rows:
                break
            time.sleep(0.05)
        assert rows
        assert {r["state"] for r in rows} == {"pending"}
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(10)
        emulator.control.clear_faults()

        processes.append(serve_process(settings, port, tmp_path / "home"))
        rows = _rows_once_stored(http, response["id"])
        assert [r["state"] for r in rows] == ["stored"]
        assert http.get(f"/files/{rows[0]['id']}/content").content == DATA


def _rows_once_stored(http: httpx2.Client, response_id: str, timeout: float = 40) -> list:
    """``/responses/{id}/files`` once it lists files, all stored (or what it lists at timeout)."""
    rows: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = http.get(f"/responses/{response_id}/files").json()["data"]
        if rows and all(r["state"] == "stored" for r in rows):
            break
        time.sleep(0.2)
    return rows


def _wait_for_container(database_url: str, tenant_id: str, response_id: str) -> None:
    """Until the tap's background task has recorded the response's container (bounded)."""

    async def containers() -> tuple[str, ...]:
        async with await MetadataStore.open(database_url) as meta:
            record = await meta.get_response(tenant_id, response_id)
            return record.container_ids if record else ()

    deadline = time.monotonic() + 20
    while not asyncio.run(containers()):
        assert time.monotonic() < deadline, "the container was never recorded"
        time.sleep(0.05)


def test_a_gateway_killed_mid_stream_keeps_the_uncited_files_after_a_restart(
    emulator: RunningEmulator, backend: Backend, tmp_path: Path, processes
) -> None:
    """Killed while the second cell runs: the first cell's file was never cited and its
    container never listed. The restarted gateway's sweep reads the response upstream, waits
    while it runs, and records its file from the final answer (and the container's listing)."""
    settings = live_settings(emulator, backend)
    tenant = add_tenant(settings.database_url, "acme")
    port = free_port()
    processes.append(serve_process(settings, port, tmp_path / "home"))
    base = f"http://127.0.0.1:{port}"
    body = {
        "model": "gpt-4.1",
        "input": code_input(WRITE, "import time\ntime.sleep(6)"),
        "tools": CODE_TOOL,
        "stream": True,
    }
    with httpx2.Client(base_url=base, headers=tenant.headers, timeout=60) as http:
        response_id = None
        with http.stream("POST", "/openai/v1/responses", json=body) as stream:
            lines = stream.iter_lines()  # kept: a closed iterator would disconnect the client
            for line in lines:
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: ") :])
                response_id = response_id or event.get("response", {}).get("id")
                if event["type"] == "response.code_interpreter_call.interpreting" and (
                    event["output_index"] == 1
                ):
                    break  # the first cell wrote f.bin; the second is sleeping
            assert response_id is not None
            _wait_for_container(settings.database_url, tenant.id, response_id)
            processes[0].send_signal(signal.SIGKILL)
            processes[0].wait(10)

        processes.append(serve_process(settings, port, tmp_path / "home", harvest_relist_after="1"))
        rows = _rows_once_stored(http, response_id)
        assert [(r["filename"], r["state"], r["origin"]) for r in rows] == [
            ("f.bin", "stored", "citation")
        ]
        assert http.get(f"/responses/{response_id}/files").json()["listed"]
        assert http.get(f"/files/{rows[0]['id']}/content").content == DATA


def test_two_gateways_sharing_postgres_and_azurite_serve_each_others_files(
    emulator: RunningEmulator, postgres_azurite: Backend
) -> None:
    settings = live_settings(emulator, postgres_azurite)
    tenant: Tenant = add_tenant(settings.database_url, "acme")
    first = start_gateway(replace(settings, worker_id="gw-a"), tenant)
    second = start_gateway(replace(settings, worker_id="gw-b"), tenant)
    try:
        f = _harvest(first)
        assert f["state"] == "stored"
        cfile = f["upstream_file_id"]
        http = second.http()
        assert http.get(f"/files/{f['id']}/content").content == DATA
        sdk = second.openai()
        got = sdk.containers.files.content.retrieve(cfile, container_id=f["container_id"])
        assert got.read() == DATA
        link = http.post(f"/files/{f['id']}/links").json()
        path = link["url"].split(second.url, 1)[1]
        with httpx2.Client(base_url=first.url) as anonymous:
            assert anonymous.get(path).status_code in (200, 403)
    finally:
        first.close()
        second.close()


@pytest.fixture
def retrying_gateway(emulator: RunningEmulator, tmp_path: Path) -> Iterator[LiveGateway]:
    """A gateway whose resume loop retries transient failures after a fraction of a second."""
    backend = local_backend(tmp_path)
    settings = replace(
        live_settings(emulator, backend),
        resume_interval=0.1,
        harvest_retry_delay=0.3,
        harvest_retry_max_delay=0.6,
        harvest_retry_max_tries=30,
    )
    with serving(settings) as gateway:
        yield gateway


def _wait_for(gw: LiveGateway, file_id: str, done, timeout: float = 30) -> dict:
    """The file's record once ``done(record)`` (read from the listing: no on-demand retry)."""
    http = gw.http()
    deadline = time.monotonic() + timeout
    record: dict = {}
    while time.monotonic() < deadline:
        record = http.get(f"/files/{file_id}").json()
        if done(record):
            return record
        time.sleep(0.1)
    raise AssertionError(f"{file_id} never got there: {record}")


def test_a_transient_failure_is_retried_in_the_background_until_stored(
    retrying_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    emulator.control.switch("download-500")
    f = _harvest(retrying_gateway)
    assert (f["state"], f["error"]["kind"], f["tries"]) == ("failed", "upstream_unavailable", 3)
    emulator.control.switch_off("download-500")
    # Nobody asks for the file: the resume loop alone brings it in.
    _wait_for(retrying_gateway, f["id"], lambda r: r["state"] == "stored")
    content = retrying_gateway.http().get(f"/files/{f['id']}/content")
    assert content.content == DATA


def test_a_final_failure_is_not_retried_in_the_background(
    retrying_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    emulator.control.switch("checkaccess")
    f = _harvest(retrying_gateway)
    assert (f["state"], f["error"]["kind"], f["tries"]) == ("failed", "access_denied", 1)
    emulator.control.clear_faults()
    time.sleep(1.5)  # several sweeps, each well past the retry delay
    again = retrying_gateway.http().get(f"/files/{f['id']}").json()
    assert (again["state"], again["error"]["kind"], again["tries"]) == (
        "failed",
        "access_denied",
        1,
    )


def test_a_retry_that_finds_the_container_expired_records_it_and_stops(
    retrying_gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    emulator.control.switch("download-500")
    f = _harvest(retrying_gateway)
    assert (f["state"], f["error"]["kind"]) == ("failed", "upstream_unavailable")
    emulator.control.advance_clock(21 * 60)  # the container idles out
    emulator.control.switch_off("download-500")
    expired = _wait_for(
        retrying_gateway,
        f["id"],
        lambda r: r["state"] == "failed" and r["error"]["kind"] == "container_expired",
    )
    time.sleep(1.5)  # several sweeps: no more rounds
    again = retrying_gateway.http().get(f"/files/{f['id']}").json()
    assert (again["state"], again["tries"]) == ("failed", expired["tries"])
    assert again["error"]["kind"] == "container_expired"
