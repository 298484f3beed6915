"""The control plane: reset, clock, request ids on every reply."""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest
from starlette.testclient import TestClient

from cigate.emulator.app import create_app
from cigate.emulator.settings import EmulatorSettings
from cigate.testing.plugin import RunningEmulator


def test_reset_forgets_containers_files_faults_and_clock(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    client.containers.create(name="c")
    client.files.create(file=("a.txt", b"a"), purpose="assistants")
    emulator.control.add_fault(path="/nothing", status=500)
    emulator.control.advance_clock(600)
    emulator.control.reset()
    assert list(client.containers.list()) == []
    assert list(client.files.list()) == []
    assert emulator.control.faults() == []
    assert emulator.control.clock()["offset"] == 0


def test_advancing_the_clock_moves_now_forward(emulator: RunningEmulator) -> None:
    before = emulator.control.clock()
    after = emulator.control.advance_clock(90)
    assert after["offset"] == before["offset"] + 90
    assert after["now"] >= before["now"] + 90


@pytest.mark.parametrize(
    "seconds", [-1, "ten", None, True], ids=["negative", "text", "null", "boolean"]
)
def test_the_clock_only_moves_forward_by_a_number(
    emulator: RunningEmulator, seconds: object
) -> None:
    response = emulator.http_client().post("/_emulator/clock/advance", json={"seconds": seconds})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "seconds"


def test_container_timestamps_follow_the_emulator_clock(emulator: RunningEmulator) -> None:
    client = emulator.openai(max_retries=0)
    first = client.containers.create(name="a")
    emulator.control.advance_clock(3600)
    second = client.containers.create(name="b")
    assert second.created_at - first.created_at >= 3600


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/openai/v1/files", id="success"),
        pytest.param("/openai/v1/containers/cntr_x", id="api-error"),
        pytest.param("/openai/files", id="azure-gateway-error"),
        pytest.param("/nowhere", id="unknown-root-path"),
        pytest.param("/_emulator/clock", id="control-plane"),
    ],
)
def test_every_reply_carries_request_ids(emulator: RunningEmulator, path: str) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).get(path)
    assert response.headers["x-request-id"]
    assert response.headers["apim-request-id"] == response.headers["x-request-id"]
    assert response.headers["x-ms-region"] == "emulator"


@pytest.mark.parametrize(
    ("path", "fault"),
    [
        pytest.param("/openai/v1/files", None, id="v1-401"),
        pytest.param("/openai/files?api-version=2025-04-01-preview", None, id="legacy-401"),
        pytest.param("/v1/files", None, id="openai-style-401"),
        pytest.param("/openai/v1/files", {"status": 429, "body": "empty"}, id="fault-429"),
        pytest.param("/openai/v1/files", {"status": 404, "body": "text"}, id="fault-404-text"),
    ],
)
def test_refusals_and_faults_carry_request_ids(
    emulator: RunningEmulator, path: str, fault: dict[str, object] | None
) -> None:
    headers: dict[str, str] = {}
    if fault is not None:
        emulator.control.add_fault(path=path.split("?", maxsplit=1)[0], **fault)
        headers = emulator.auth_headers
    response = emulator.http_client(headers=headers).get(path)
    assert response.status_code >= 400
    assert response.headers["x-request-id"]
    assert response.headers["apim-request-id"] == response.headers["x-request-id"]


def test_request_ids_differ_per_request_and_reach_sdk_errors(emulator: RunningEmulator) -> None:
    http = emulator.http_client(headers=emulator.auth_headers)
    ids = {http.get("/openai/v1/files").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    with pytest.raises(openai.NotFoundError) as info:
        emulator.openai(max_retries=0).containers.retrieve("cntr_missing")
    assert info.value.request_id


def test_the_health_endpoint_answers_ok(emulator: RunningEmulator) -> None:
    assert emulator.http_client().get("/_emulator/health").json() == {"status": "ok"}


@pytest.mark.sandbox
def test_the_status_endpoint_says_what_the_sandbox_enforces_and_by_which_mechanism(
    emulator: RunningEmulator,
) -> None:
    body = emulator.http_client().get("/_emulator/status").json()
    assert body["status"] == "ok"
    sandbox = body["sandbox"]
    assert set(sandbox["limits"]) == {
        "memory",
        "processes",
        "cpu",
        "disk",
        "tmp",
        "containers",
        "kill",
    }
    for entry in sandbox["limits"].values():
        assert entry["mechanism"]  # never silently without one
    assert sandbox["max_containers"] == sandbox["limits"]["containers"]["value"]
    assert sandbox["live_containers"] >= 0
    if os.geteuid() == 0 and sandbox["isolation"]["mode"] == "bubblewrap":
        # What CI and the development VMs offer (machine-notes): all of it by the kernel.
        assert sandbox["limits"]["memory"]["mechanism"].startswith("cgroup")
        assert sandbox["limits"]["processes"]["mechanism"].startswith("cgroup")
        assert sandbox["limits"]["cpu"]["mechanism"].startswith("cgroup")
        assert sandbox["limits"]["disk"]["mechanism"].startswith("ext4 volume")
        assert sandbox["warnings"] == []


@pytest.mark.sandbox
def test_readiness_says_what_the_sandbox_enforces(emulator: RunningEmulator) -> None:
    response = emulator.http_client().get("/readyz")  # no key: a probe of the orchestrator
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    status = emulator.http_client().get("/_emulator/status").json()["sandbox"]
    assert body["sandbox"]["isolation"] == status["isolation"]
    assert body["sandbox"]["limits"] == status["limits"]
    assert body["sandbox"]["warnings"] == status["warnings"]


def test_readiness_is_a_503_until_the_emulator_has_started(tmp_path: Path) -> None:
    settings = EmulatorSettings(api_keys=("k",), data_dir=tmp_path, pool_size=0)
    response = TestClient(create_app(settings)).get("/readyz")  # lifespan not entered
    assert response.status_code == 503
    assert response.json() == {"status": "starting", "sandbox": None}
