"""The emulator's downloads (container files and Files-API files) follow RFC 9110 and 6266.

Both endpoints stream from one open descriptor (``cigate.engine.serving``); these are the HTTP
rules that ride on it: HEAD, a strong ETag and 304, single ranges (206, 416), other ``Range``
forms ignored, ``If-Range``, 1 MiB chunks for files of any size, attachment names.
"""

from __future__ import annotations

import httpx2
import openai
import pytest

from cigate.testing.plugin import RunningEmulator
from tests.names import filename_from

DATA = bytes(range(256)) * 40  # 10240 bytes
BIG = bytes(range(251)) * 12_000  # ~2.9 MiB: several chunks, an odd tail


def _url(client: openai.OpenAI, where: str, name: str, data: bytes) -> str:
    if where == "files":
        uploaded = client.files.create(file=(name, data), purpose="assistants")
        return f"/openai/v1/files/{uploaded.id}/content"
    container = client.containers.create(name="serving")
    created = client.containers.files.create(container.id, file=(name, data))
    return f"/openai/v1/containers/{container.id}/files/{created.id}/content"


@pytest.fixture(params=["container-files", "files"])
def served(request: pytest.FixtureRequest, emulator: RunningEmulator) -> tuple[httpx2.Client, str]:
    client = emulator.openai(max_retries=0)
    http = emulator.http_client(headers=emulator.auth_headers)
    return http, _url(client, str(request.param), "report.csv", DATA)


def test_a_download_is_the_exact_bytes_as_an_attachment(served: tuple[httpx2.Client, str]) -> None:
    http, url = served
    r = http.get(url)
    assert (r.status_code, r.content) == (200, DATA)
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["content-type"].startswith("text/csv")
    disposition = r.headers["content-disposition"]
    name = filename_from(disposition)
    assert name is not None
    assert name.endswith("report.csv")  # container uploads carry a hash prefix
    assert disposition == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"].startswith('"')


def test_head_answers_the_headers_of_get_without_a_body(served: tuple[httpx2.Client, str]) -> None:
    http, url = served
    get, head = http.get(url), http.head(url)
    assert (head.status_code, head.content) == (200, b"")
    for name in ("content-length", "content-type", "etag", "content-disposition"):
        assert head.headers[name] == get.headers[name]


@pytest.mark.parametrize(
    ("range_header", "status", "body", "content_range"),
    [
        ("bytes=0-9", 206, DATA[0:10], "bytes 0-9/10240"),
        ("bytes=10-", 206, DATA[10:], "bytes 10-10239/10240"),
        ("bytes=-5", 206, DATA[-5:], "bytes 10235-10239/10240"),
        ("bytes=10000-99999", 206, DATA[10000:], "bytes 10000-10239/10240"),
        ("bytes=10240-", 416, b"", "bytes */10240"),
        ("bytes=" + "9" * 5000 + "-", 416, b"", "bytes */10240"),
        ("bytes=9-2", 200, DATA, None),
        ("bytes=0-1,5-6", 200, DATA, None),
        ("items=0-5", 200, DATA, None),
    ],
    ids=[
        "first-ten",
        "open-ended",
        "suffix",
        "end-clamped",
        "start-past-end",
        "5000-digit-start",
        "reversed-ignored",
        "multi-range-ignored",
        "other-unit-ignored",
    ],
)
def test_range_requests_follow_rfc_9110(
    served: tuple[httpx2.Client, str],
    range_header: str,
    status: int,
    body: bytes,
    content_range: str | None,
) -> None:
    http, url = served
    r = http.get(url, headers={"range": range_header})
    assert r.status_code == status
    assert r.content == body
    assert r.headers.get("content-range") == content_range


def test_if_none_match_and_if_range_use_the_etag(served: tuple[httpx2.Client, str]) -> None:
    http, url = served
    etag = http.head(url).headers["etag"]
    not_modified = http.get(url, headers={"if-none-match": etag})
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert http.get(url, headers={"if-none-match": '"other"'}).status_code == 200
    same = http.get(url, headers={"range": "bytes=0-3", "if-range": etag})
    assert (same.status_code, same.content) == (206, DATA[:4])
    changed = http.get(url, headers={"range": "bytes=0-3", "if-range": '"old"'})
    assert (changed.status_code, changed.content) == (200, DATA)


@pytest.mark.parametrize("where", ["container-files", "files"])
def test_files_larger_than_a_chunk_arrive_whole_and_ranged(
    emulator: RunningEmulator, where: str
) -> None:
    url = _url(emulator.openai(max_retries=0), where, "big.bin", BIG)
    http = emulator.http_client(headers=emulator.auth_headers)
    assert http.get(url).content == BIG
    tail = http.get(url, headers={"range": f"bytes={len(BIG) - 1_500_000}-"})
    assert (tail.status_code, tail.content) == (206, BIG[-1_500_000:])


@pytest.mark.parametrize("where", ["container-files", "files"])
def test_an_empty_file_downloads_as_zero_bytes(emulator: RunningEmulator, where: str) -> None:
    url = _url(emulator.openai(max_retries=0), where, "empty.txt", b"")
    r = emulator.http_client(headers=emulator.auth_headers).get(url)
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize("where", ["container-files", "files"])
def test_the_attachment_name_is_the_uploaded_name_exactly(
    emulator: RunningEmulator, where: str
) -> None:
    name = ".htaccess ; résumé 100%.txt"
    url = _url(emulator.openai(max_retries=0), where, name, b"x")
    r = emulator.http_client(headers=emulator.auth_headers).get(url)
    got = filename_from(r.headers["content-disposition"])
    assert got is not None
    assert got.endswith(name)  # container uploads carry their hash prefix
