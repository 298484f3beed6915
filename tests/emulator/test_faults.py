"""Scripted faults and Azure failure switches, observed at the HTTP and SDK level (api-ref 6.4).

Truncation and drops are also checked over the real uvicorn server whatever the mode, because
only a socket shows them for what they are.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pytest
import requests

from cigate.emulator.faults import CHECKACCESS_MESSAGE
from cigate.testing.plugin import RunningEmulator

CONTENT = "/openai/v1/containers/*/files/*/content"


def _container_with_file(
    emulator: RunningEmulator, data: bytes = b"0123456789" * 100
) -> tuple[str, str]:
    client = emulator.openai(max_retries=0)
    container = client.containers.create(name="faults")
    created = client.containers.files.create(container.id, file=("data.bin", data))
    return container.id, created.id


def _content_path(cid: str, fid: str) -> str:
    return f"/openai/v1/containers/{cid}/files/{fid}/content"


@pytest.mark.parametrize(
    ("body", "expected_type", "expected"),
    [
        pytest.param(
            "openai",
            "application/json",
            {"error": {"message": "boom", "type": "server_error", "param": None, "code": "x1"}},
            id="openai-envelope",
        ),
        pytest.param(
            "azure",
            "application/json",
            {"error": {"code": "x1", "message": "boom"}},
            id="azure-envelope",
        ),
        pytest.param("text", "text/plain", "boom", id="plain-text"),
        pytest.param("empty", None, "", id="empty"),
    ],
)
def test_a_status_rule_replaces_the_reply_with_the_chosen_body(
    emulator: RunningEmulator, body: str, expected_type: str | None, expected: object
) -> None:
    emulator.control.add_fault(
        path="/openai/v1/files", status=503, body=body, message="boom", code="x1"
    )
    response = emulator.http_client(headers=emulator.auth_headers).get("/openai/v1/files")
    assert response.status_code == 503
    if expected_type is None:
        assert response.content == b""
    else:
        assert response.headers["content-type"].startswith(expected_type)
        assert (response.json() if body in ("openai", "azure") else response.text) == expected
    assert response.headers["x-request-id"]
    assert response.headers["apim-request-id"]
    assert response.headers["x-cigate-fault"]


def test_a_rule_matches_only_its_method(emulator: RunningEmulator) -> None:
    emulator.control.add_fault(method="POST", path="/openai/v1/containers", status=500)
    http = emulator.http_client(headers=emulator.auth_headers)
    assert http.get("/openai/v1/containers").status_code == 200
    assert http.post("/openai/v1/containers", json={"name": "x"}).status_code == 500


def test_globs_match_one_segment_with_a_star_and_any_with_two(emulator: RunningEmulator) -> None:
    emulator.control.add_fault(path="/openai/v1/*", status=418)
    emulator.control.add_fault(path="/v1/**", status=419)
    http = emulator.http_client(headers=emulator.auth_headers)
    assert http.get("/openai/v1/files").status_code == 418
    assert http.get("/openai/v1/files/file-1").status_code == 404  # one star = one segment
    assert http.get("/v1/files/file-1/content").status_code == 419


def test_a_counted_rule_fires_that_many_times_then_stops(emulator: RunningEmulator) -> None:
    fault_id = emulator.control.add_fault(path="/openai/v1/files", status=500, count=2)
    http = emulator.http_client(headers=emulator.auth_headers)
    statuses = [http.get("/openai/v1/files").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    [rule] = emulator.control.faults()
    assert (rule["id"], rule["fired"], rule["remaining"]) == (fault_id, 2, 0)


@pytest.mark.parametrize(
    ("probability", "status"), [(0.0, 200), (1.0, 500)], ids=["never", "always"]
)
def test_a_probability_decides_whether_a_rule_fires(
    emulator: RunningEmulator, probability: float, status: int
) -> None:
    emulator.control.add_fault(path="/openai/v1/files", status=500, probability=probability)
    http = emulator.http_client(headers=emulator.auth_headers)
    assert {http.get("/openai/v1/files").status_code for _ in range(5)} == {status}


def test_latency_delays_the_real_reply(emulator: RunningEmulator) -> None:
    emulator.control.add_fault(path="/openai/v1/files", latency_ms=300)
    http = emulator.http_client(headers=emulator.auth_headers)
    started = time.monotonic()
    response = http.get("/openai/v1/files")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_a_429_carries_retry_headers_and_the_sdk_retries_it(emulator: RunningEmulator) -> None:
    emulator.control.add_fault(path="/openai/v1/containers", status=429, body="azure", count=1)
    raw = emulator.http_client(headers=emulator.auth_headers).get("/openai/v1/containers")
    assert raw.status_code == 429
    assert raw.headers["retry-after-ms"] == "100"
    assert raw.headers["retry-after"] == "1"
    assert raw.json()["error"]["code"] == "429"
    emulator.control.add_fault(path="/openai/v1/containers", status=429, count=1)
    assert list(emulator.openai(max_retries=1).containers.list()) == []


def test_a_rule_can_add_headers(emulator: RunningEmulator) -> None:
    emulator.control.add_fault(
        path="/openai/v1/files", status=429, headers={"Retry-After-Ms": "5", "x-extra": "1"}
    )
    response = emulator.http_client(headers=emulator.auth_headers).get("/openai/v1/files")
    assert response.headers["retry-after-ms"] == "5"
    assert response.headers["x-extra"] == "1"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({"Retry-After": "200"}, ("200000", "200"), id="seconds-only"),
        pytest.param({"retry-after-ms": "250000"}, ("250000", "250"), id="ms-only"),
        pytest.param({}, ("100", "1"), id="defaults"),
    ],
)
def test_a_429_rules_retry_headers_agree_and_a_long_delay_is_not_retried(
    emulator: RunningEmulator, given: dict[str, str], expected: tuple[str, str]
) -> None:
    # The SDK reads retry-after-ms before retry-after: a default 100 ms beside a rule's own
    # "retry-after: 200" would make it retry at once instead of giving up (delay > 120 s).
    emulator.control.add_fault(path="/openai/v1/containers", status=429, headers=given)
    raw = emulator.http_client(headers=emulator.auth_headers).get("/openai/v1/containers")
    assert (raw.headers["retry-after-ms"], raw.headers["retry-after"]) == expected
    if expected[1] != "1":
        with pytest.raises(openai.RateLimitError):
            emulator.openai(max_retries=2).containers.list()
        assert emulator.control.faults()[0]["fired"] == 2  # the raw GET, then one SDK attempt


def test_an_error_in_a_200_reaches_the_client_as_a_200(emulator: RunningEmulator) -> None:
    emulator.control.add_fault(path="/openai/v1/containers", error_in_200=True, message="hidden")
    response = emulator.http_client(headers=emulator.auth_headers).get("/openai/v1/containers")
    assert response.status_code == 200
    assert response.json()["error"]["message"] == "hidden"


def test_truncation_sends_the_full_length_then_cuts_the_connection(
    emulator: RunningEmulator,
) -> None:
    cid, fid = _container_with_file(emulator)
    emulator.control.add_fault(path=CONTENT, truncate_after_bytes=100)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(
            emulator.base_url + _content_path(cid, fid), headers=emulator.auth_headers, timeout=30
        )
    received = bytearray()
    with (
        httpx2.Client(base_url=emulator.base_url, trust_env=False) as real,
        real.stream("GET", _content_path(cid, fid), headers=emulator.auth_headers) as reply,
    ):
        assert reply.headers["content-length"] == "1000"
        with pytest.raises(httpx2.RemoteProtocolError):  # noqa: PT012 - the cut is mid-iteration
            for chunk in reply.iter_raw():
                received += chunk
    assert bytes(received) == (b"0123456789" * 100)[:100]


def test_a_drop_mid_body_cuts_a_chunked_reply(emulator: RunningEmulator) -> None:
    cid, fid = _container_with_file(emulator)
    emulator.control.add_fault(path=CONTENT, drop_mid_body=True)
    with (
        httpx2.Client(base_url=emulator.base_url, trust_env=False) as real,
        pytest.raises(httpx2.RemoteProtocolError),
    ):
        real.get(_content_path(cid, fid), headers=emulator.auth_headers)


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param({"truncate_after_bytes": 10}, id="truncate"),
        pytest.param({"drop_mid_body": True}, id="drop"),
    ],
)
def test_damaged_bodies_reach_every_client_as_a_transport_error(
    emulator: RunningEmulator, rule: dict[str, object]
) -> None:
    cid, fid = _container_with_file(emulator)
    emulator.control.add_fault(path=CONTENT, **rule)
    with pytest.raises(httpx2.RemoteProtocolError):
        emulator.http_client(headers=emulator.auth_headers).get(_content_path(cid, fid))
    emulator.control.add_fault(path=CONTENT, **rule)
    with pytest.raises(openai.APIConnectionError):
        emulator.openai(max_retries=0).containers.files.content.retrieve(fid, container_id=cid)


def _timed_get(base_url: str, path: str, headers: dict[str, str]) -> tuple[float, bytes]:
    """Seconds from request to last byte over a fresh real connection, and the body."""
    with httpx2.Client(base_url=base_url, trust_env=False, timeout=30) as real:
        started = time.monotonic()
        response = real.get(path, headers=headers)
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    return elapsed, response.content


def test_a_rate_paces_the_body_and_delivers_it_intact(emulator: RunningEmulator) -> None:
    data = random.Random(7).randbytes(2 * 2**20)
    cid, fid = _container_with_file(emulator, data)
    rule = emulator.control.add_fault(path=CONTENT, rate_bytes_per_s=8 * 2**20)
    elapsed, body = _timed_get(emulator.base_url, _content_path(cid, fid), emulator.auth_headers)
    assert body == data
    assert elapsed >= 0.24  # 2 MiB at 8 MiB/s: 0.25 s, less one timer tick
    assert [r["rate_bytes_per_s"] for r in emulator.control.faults() if r["id"] == rule] == [
        8 * 2**20
    ]


def test_each_connection_is_paced_on_its_own(emulator: RunningEmulator) -> None:
    """Two downloads at once each get the full rate: a shared budget would take twice as long."""
    data = random.Random(8).randbytes(2 * 2**20)
    cid, fid = _container_with_file(emulator, data)
    emulator.control.add_fault(path=CONTENT, rate_bytes_per_s=2 * 2**20)  # 1 s per body
    path, headers = _content_path(cid, fid), emulator.auth_headers
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        results = list(pool.map(lambda _: _timed_get(emulator.base_url, path, headers), range(2)))
        together = time.monotonic() - started
    assert all(body == data for _, body in results)
    assert min(elapsed for elapsed, _ in results) >= 0.99
    # A shared budget needs 2 s for both; 1.6 leaves room for a loaded machine.
    assert together < 1.6, f"two paced connections took {together:.2f} s: the rate is shared"


def test_rules_are_listed_removed_one_by_one_and_cleared(emulator: RunningEmulator) -> None:
    first = emulator.control.add_fault(path="/openai/v1/files", status=500)
    second = emulator.control.add_fault(path="/openai/v1/containers", status=500)
    assert [r["id"] for r in emulator.control.faults()] == [first, second]
    emulator.control.remove_fault(first)
    assert [r["id"] for r in emulator.control.faults()] == [second]
    emulator.control.clear_faults()
    assert emulator.control.faults() == []


def test_removing_an_unknown_rule_is_a_404(emulator: RunningEmulator) -> None:
    response = emulator.http_client().delete("/_emulator/faults/fault_nope")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        pytest.param({"status": 500}, "'path'", id="no-path"),
        pytest.param({"path": "/x", "colour": "red"}, "colour", id="unknown-field"),
        pytest.param({"path": "/x", "body": "xml"}, "'body'", id="unknown-body-kind"),
        pytest.param({"path": "/x", "status": 99}, "'status'", id="status-out-of-range"),
        pytest.param({"path": "/x", "probability": 2}, "'probability'", id="probability-above-1"),
        pytest.param({"path": "/x", "rate_bytes_per_s": 0}, "'rate_bytes_per_s'", id="rate-zero"),
        pytest.param(
            {"path": "/x", "rate_bytes_per_s": "fast"}, "'rate_bytes_per_s'", id="rate-not-int"
        ),
    ],
)
def test_a_malformed_rule_is_a_400(
    emulator: RunningEmulator, rule: dict[str, object], fragment: str
) -> None:
    response = emulator.http_client().post("/_emulator/faults", json=rule)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_the_control_plane_is_never_faulted(emulator: RunningEmulator) -> None:
    emulator.control.add_fault(path="**", status=500)
    assert emulator.http_client().get("/_emulator/clock").status_code == 200
    emulator.control.clear_faults()


# -- the Azure download-failure switches ---------------------------------------------------


def test_download_404_empty_answers_content_and_retrieve_with_an_empty_404(
    emulator: RunningEmulator,
) -> None:
    cid, fid = _container_with_file(emulator)
    emulator.control.switch("download-404-empty")
    http = emulator.http_client(headers=emulator.auth_headers)
    for path in (_content_path(cid, fid), f"/openai/v1/containers/{cid}/files/{fid}"):
        response = http.get(path + "?api-version=preview")
        assert (response.status_code, response.content) == (404, b"")
    assert http.get(f"/openai/v1/containers/{cid}/files").status_code == 200
    with pytest.raises(openai.NotFoundError) as info:
        emulator.openai(max_retries=0).containers.files.content.retrieve(fid, container_id=cid)
    assert info.value.body == ""
    assert info.value.message == "Error code: 404"


def test_download_500_persists_through_the_sdks_retries(emulator: RunningEmulator) -> None:
    cid, fid = _container_with_file(emulator)
    emulator.control.switch("download-500")
    client = emulator.openai(max_retries=2)
    with pytest.raises(openai.InternalServerError) as info:
        client.containers.files.content.retrieve(fid, container_id=cid)
    assert info.value.code == "server_error"
    assert [rule["fired"] for rule in emulator.control.faults()] == [3]


def test_checkaccess_answers_the_plain_text_error_with_403(emulator: RunningEmulator) -> None:
    cid, fid = _container_with_file(emulator)
    emulator.control.switch("checkaccess")
    http = emulator.http_client(headers=emulator.auth_headers)
    for path in (f"/openai/v1/containers/{cid}", _content_path(cid, fid)):
        response = http.get(path)
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == CHECKACCESS_MESSAGE
    with pytest.raises(openai.PermissionDeniedError):
        emulator.openai(max_retries=0).containers.retrieve(cid)


def test_list_timeout_answers_azures_timeout_error_with_408(emulator: RunningEmulator) -> None:
    emulator.control.switch("list-timeout")
    response = emulator.http_client(headers=emulator.auth_headers).get("/openai/v1/containers")
    assert response.status_code == 408
    assert response.json() == {
        "error": {"code": "Timeout", "message": "The operation was timeout."}
    }
    with pytest.raises(openai.APIStatusError) as info:
        emulator.openai(max_retries=0).containers.list()
    assert info.value.status_code == 408


def test_a_switch_can_be_turned_off(emulator: RunningEmulator) -> None:
    emulator.control.switch("list-timeout")
    emulator.control.switch_off("list-timeout")
    assert list(emulator.openai(max_retries=0).containers.list()) == []


def test_an_unknown_switch_is_a_404(emulator: RunningEmulator) -> None:
    response = emulator.http_client().post("/_emulator/switches/no-such-switch")
    assert response.status_code == 404
    assert "download-404-empty" in response.json()["error"]["message"]


def test_a_single_500_on_a_download_is_absorbed_by_the_sdks_retry(
    emulator: RunningEmulator,
) -> None:
    cid, fid = _container_with_file(emulator, b"x,y\n")
    emulator.control.add_fault(path=CONTENT, status=500, count=1)
    data = emulator.openai().containers.files.content.retrieve(fid, container_id=cid).read()
    assert data == b"x,y\n"
