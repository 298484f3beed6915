"""Downloads against the emulator over real HTTP: success, every fault, and no partial files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from cigate.client._config import ClientConfig
from cigate.client._responses import adownload, download, list_files
from cigate.exceptions import (
    AccessDeniedError,
    ApiVersionError,
    CigateError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    IntegrityError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from cigate.harvest.refs import FileRef
from cigate.testing.plugin import RunningEmulator

from .conftest import leftovers, upload

CONTENT = "**/containers/*/files/*/content"
PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)  # more than one 1 MiB chunk


def _only(harvest: Any) -> Any:
    assert len(harvest.results) == 1
    return harvest.results[0]


def test_a_cited_container_file_is_saved_whole_with_size_and_checksum(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "data.bin", PAYLOAD)
    result = _only(download([ref], out=tmp_path, config=config))
    assert result.ok, result.error
    assert result.path == tmp_path / "data.bin"
    assert result.path.read_bytes() == PAYLOAD
    assert result.bytes == len(PAYLOAD)
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert result.strategy == "container"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_a_saved_file_gets_the_permissions_of_a_normally_created_file(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "report.csv", b"a,b\n1,2\n")
    result = _only(download([ref], out=tmp_path, config=config))
    assert result.ok, result.error
    assert result.path is not None
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")  # what the user's umask gives any new file (not mkstemp's 0600)
    assert result.path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_entra_id_tokens_download_too(
    emulator: RunningEmulator, entra_config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "chart.png", b"\x89PNG\r\n\x1a\nfake")
    result = _only(download([ref], out=tmp_path, config=entra_config))
    assert result.ok, result.error
    assert result.content_type == "image/png"


def test_a_token_for_the_wrong_audience_is_access_denied_with_the_scope_hint(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    from cigate.client._config import resolve_config

    from .conftest import FakeCredential, fast

    cred = FakeCredential(aud="https://management.azure.com")
    cfg = fast(resolve_config(endpoint=emulator.base_url, credential=cred, env={}))  # type: ignore[arg-type]
    ref = upload(emulator, "a.txt", b"x")
    result = _only(download([ref], out=tmp_path, config=cfg))
    assert isinstance(result.error, AccessDeniedError)
    assert "cognitiveservices.azure.com/.default" in result.error.hint
    assert os.listdir(tmp_path) == []


def test_api_version_preview_is_accepted_on_v1(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "a.txt", b"hello")
    result = _only(download([ref], out=tmp_path, config=config.with_options(api_version="preview")))
    assert result.ok, result.error


def test_an_assistants_file_id_goes_to_the_files_content_endpoint(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    created = emulator.openai().files.create(
        file=("report.csv", b"a,b\n1,2\n"), purpose="assistants"
    )
    ref = FileRef(file_id=created.id, filename=created.id, source="assistants")
    assert not ref.is_container_file
    result = _only(download([ref], out=tmp_path, config=config))
    assert result.ok, result.error
    assert result.strategy == "files"
    assert result.path.name == "report.csv"


def test_two_files_with_one_name_do_not_overwrite_each_other(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    first = upload(emulator, "chart.png", b"\x89PNG\r\n\x1a\none")
    second = upload(emulator, "chart.png", b"\x89PNG\r\n\x1a\ntwo")
    harvest = download([first, second], out=tmp_path, config=config)
    assert harvest.ok
    assert sorted(os.listdir(tmp_path)) == ["chart (1).png", "chart.png"]
    assert {p.read_bytes() for p in harvest.paths} == {
        b"\x89PNG\r\n\x1a\none",
        b"\x89PNG\r\n\x1a\ntwo",
    }


async def test_the_async_twin_downloads_many_files_concurrently(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    refs = [upload(emulator, f"f{i}.txt", f"file {i}".encode()) for i in range(6)]
    harvest = await adownload(refs, out=tmp_path, config=config.with_options(concurrency=3))
    assert harvest.ok
    assert sorted(os.listdir(tmp_path)) == [f"f{i}.txt" for i in range(6)]


# -- every fault of the control plane, one test each ----------------------------------------

RECOVERED = [
    pytest.param({"status": 500, "count": 2}, id="500-twice"),
    pytest.param({"status": 503, "body": "azure", "count": 1}, id="503-azure-body"),
    pytest.param({"status": 502, "body": "text", "count": 1}, id="502-text-body"),
    pytest.param({"status": 408, "body": "azure", "code": "Timeout", "count": 1}, id="408-timeout"),
    pytest.param({"status": 429, "count": 2}, id="429-retry-after-ms"),
    pytest.param(
        {"status": 429, "count": 1, "headers": {"x-ms-retry-after-ms": "30"}},
        id="429-x-ms-retry-after-ms",
    ),
    pytest.param({"status": 404, "body": "empty", "count": 1}, id="404-empty-once"),
    pytest.param({"truncate_after_bytes": 1_000_000, "count": 2}, id="truncated-body"),
    pytest.param({"drop_mid_body": True, "count": 1}, id="dropped-mid-body"),
    pytest.param({"status": 500, "error_in_200": True, "count": 2}, id="error-json-in-200"),
    pytest.param({"latency_ms": 200, "count": 1}, id="latency"),
]


@pytest.mark.parametrize("fault", RECOVERED)
def test_transient_download_faults_are_retried_to_success(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path, fault: dict[str, Any]
) -> None:
    ref = upload(emulator, "data.bin", PAYLOAD)
    emulator.control.add_fault(method="GET", path=CONTENT, **fault)
    result = _only(download([ref], out=tmp_path, config=config))
    assert result.ok, result.error
    assert result.path.read_bytes() == PAYLOAD
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert os.listdir(tmp_path) == ["data.bin"]


FAILED = [
    pytest.param({"status": 500}, UpstreamUnavailableError, "500s", id="persistent-500"),
    pytest.param(
        {"truncate_after_bytes": 1000}, IntegrityError, "cut short", id="always-truncated"
    ),
    pytest.param({"drop_mid_body": True}, IntegrityError, "cut short", id="always-dropped"),
    pytest.param(
        {"status": 500, "error_in_200": True},
        UpstreamUnavailableError,
        "",
        id="always-error-in-200",
    ),
    pytest.param(
        {"status": 429, "headers": {"retry-after-ms": "86400000"}},
        RateLimitedError,
        "wait",
        id="429-too-long-to-wait",
    ),
    pytest.param({"status": 401, "body": "azure"}, AccessDeniedError, "key", id="401-azure"),
    pytest.param(
        {
            "status": 400,
            "body": "azure",
            "code": "BadRequest",
            "message": "API version not supported",
        },
        ApiVersionError,
        "v1",
        id="api-version-not-supported",
    ),
    pytest.param(
        {"status": 400, "message": "Container is expired."},
        ContainerExpiredError,
        "20 idle minutes",
        id="container-expired-400",
    ),
]


@pytest.mark.parametrize(("fault", "error", "hint"), FAILED)
def test_persistent_download_faults_end_in_the_right_error_and_leave_no_file(
    *,
    emulator: RunningEmulator,
    config: ClientConfig,
    tmp_path: Path,
    fault: dict[str, Any],
    error: type[CigateError],
    hint: str,
) -> None:
    ref = upload(emulator, "chart.png", PAYLOAD)
    emulator.control.add_fault(method="GET", path=CONTENT, **fault)
    result = _only(download([ref], out=tmp_path, config=config))
    assert type(result.error) is error, result.error
    assert hint in result.error.hint
    assert result.path is None
    assert list(tmp_path.iterdir()) == [] if tmp_path.exists() else True
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("switch", "error", "hint"),
    [
        pytest.param(
            "download-404-empty", FileNotFoundInContainerError, "empty body", id="404-empty"
        ),
        pytest.param("download-500", UpstreamUnavailableError, "500s", id="500"),
        pytest.param("checkaccess", AccessDeniedError, "CheckAccess", id="checkaccess"),
    ],
)
def test_azure_failure_switches_end_in_the_right_error_and_leave_no_file(
    *,
    emulator: RunningEmulator,
    config: ClientConfig,
    tmp_path: Path,
    switch: str,
    error: type[CigateError],
    hint: str,
) -> None:
    ref = upload(emulator, "chart.png", PAYLOAD)
    emulator.control.switch(switch)
    result = _only(download([ref], out=tmp_path, config=config))
    assert type(result.error) is error, result.error
    assert hint in result.error.hint
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "chart.png").exists()


def test_the_list_timeout_switch_does_not_stop_downloads(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "a.txt", b"hello")
    emulator.control.switch("list-timeout")
    assert _only(download([ref], out=tmp_path, config=config)).ok


def test_a_failing_content_endpoint_falls_back_to_the_listing_match_by_path(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    real = upload(emulator, "report.csv", b"a,b\n1,2\n")
    # An auto-named citation whose id the content endpoint does not know.
    cited = FileRef(
        file_id="cfile_00000000000000000000000000000000",
        filename="report.csv",
        container_id=real.container_id,
    )
    result = _only(download([cited], out=tmp_path, config=config))
    # Uploaded files carry a hash prefix in their path, so the basename does not match:
    assert isinstance(result.error, FileNotFoundInContainerError)
    assert "is not among the 1 files" in result.error.message


def test_an_error_json_in_200_is_caught_by_size_even_for_a_json_file(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "data.json", b'{"rows": [1, 2, 3], "note": "a real json file"}')
    emulator.control.add_fault(method="GET", path=CONTENT, status=500, error_in_200=True)
    result = _only(download([ref], out=tmp_path, config=config))
    assert isinstance(result.error, IntegrityError)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "data.json").exists()


def test_an_expired_container_is_container_expired(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "a.txt", b"hello")
    emulator.control.advance_clock(21 * 60)
    result = _only(download([ref], out=tmp_path, config=config))
    assert isinstance(result.error, ContainerExpiredError)
    assert "20 idle minutes" in result.error.hint


def test_a_deleted_file_is_file_not_found(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    ref = upload(emulator, "a.txt", b"hello")
    assert ref.container_id is not None
    emulator.openai().containers.files.delete(ref.file_id, container_id=ref.container_id)
    result = _only(download([ref], out=tmp_path, config=config))
    assert isinstance(result.error, FileNotFoundInContainerError)


def test_listing_a_container_returns_every_record(
    emulator: RunningEmulator, config: ClientConfig
) -> None:
    first = upload(emulator, "a.txt", b"a")
    for i in range(3):
        upload(emulator, f"b{i}.txt", b"b", container=first.container_id)
    assert first.container_id is not None
    records = list_files(first.container_id, config=config)
    assert len(records) == 4
    assert {r["source"] for r in records} == {"user"}
