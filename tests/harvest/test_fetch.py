"""The harvest core's download chain against a scripted upstream: what reaches a sink, and when.

A sink here keeps bytes only when its ``async for`` over the body ends, as the client's disk
sink and the gateway's blob sink do; every test checks what it kept, not only the error.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
import pytest

from cigate.exceptions import (
    AccessDeniedError,
    ApiVersionError,
    BadInputError,
    CigateError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    IntegrityError,
    RateLimitedError,
    StorageError,
    UpstreamUnavailableError,
)
from cigate.harvest import classify
from cigate.harvest.fetch import MAX_LIST_PAGES, Body, Fetcher, quoted_url
from cigate.harvest.refs import FileRef
from cigate.harvest.retry import RetryPolicy

FAST = RetryPolicy(attempts=3, backoff=0.0, backoff_max=0.0)
ERROR_JSON = json.dumps(
    {"error": {"message": "Internal error", "type": "server_error", "param": None, "code": None}}
).encode()


class Upstream:
    """The core's UpstreamAPI over a handler (httpx2's MockTransport)."""

    def __init__(self, handler: Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.requests: list[httpx2.Request] = []

        def recording(request: httpx2.Request) -> httpx2.Response:
            self.requests.append(request)
            return handler(request)

        self.client = httpx2.AsyncClient(transport=httpx2.MockTransport(recording))
        self.default_query: Mapping[str, str] = {}
        self.uses_entra = False

    def v1_url(self, *segments: str) -> str:
        return quoted_url("http://upstream/openai/v1/", *segments)

    async def auth_headers(self) -> Mapping[str, str]:
        return {"api-key": "k"}

    def paths(self, suffix: str = "") -> list[str]:
        return [r.url.path for r in self.requests if r.url.path.endswith(suffix)]


class KeepingSink:
    """Keeps a body only if it was read to its end; counts what it was shown."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []
        self.discarded = 0

    async def __call__(self, body: Body) -> bytes:
        parts = []
        try:
            async for batch in body:
                parts.append(batch)
        except BaseException:
            self.discarded += 1
            raise
        data = b"".join(parts)
        self.kept.append(data)
        return data


def _record(file_id: str, data: bytes, path: str = "/mnt/data/f.bin") -> dict[str, Any]:
    return {"id": file_id, "object": "container.file", "bytes": len(data), "path": path}


async def test_an_error_document_delivered_with_200_never_reaches_the_end_of_a_sink() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/content"):
            return httpx2.Response(200, content=ERROR_JSON)
        return httpx2.Response(404)  # no record: the size check cannot help

    sink = KeepingSink()
    fetched = await Fetcher(Upstream(handler), FAST).fetch(
        FileRef("cfile_1", "f.bin", "cntr_1"), sink
    )
    assert isinstance(fetched.error, UpstreamUnavailableError)
    assert "HTTP 200 carrying an error: Internal error" in fetched.error.message
    assert fetched.attempts == 3
    assert sink.kept == []


async def test_a_body_shorter_or_longer_than_the_record_is_an_integrity_error() -> None:
    data = b"x" * 5000

    for sent in (data[:-1], data + b"y"):

        def handler(request: httpx2.Request, sent: bytes = sent) -> httpx2.Response:
            if request.url.path.endswith("/content"):
                return httpx2.Response(200, content=sent)
            return httpx2.Response(200, json=_record("cfile_1", data))

        sink = KeepingSink()
        ref = FileRef("cfile_1", "f.bin", "cntr_1")
        fetched = await Fetcher(Upstream(handler), FAST).fetch(ref, sink)
        assert isinstance(fetched.error, IntegrityError), fetched.error
        assert f"received {len(sent)} bytes, the container's record says 5000" in str(fetched.error)
        assert sink.kept == []


async def test_the_listing_fallback_finds_a_file_by_path_under_another_id() -> None:
    data = b"a,b\n1,2\n"

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path.endswith("/cfile_real/content"):
            return httpx2.Response(200, content=data)
        if path.endswith("/content"):
            return httpx2.Response(404, content=b"")
        if path.endswith("/files"):
            listing = [_record("cfile_real", data, "/mnt/data/report.csv")]
            return httpx2.Response(200, json={"data": listing, "has_more": False})
        return httpx2.Response(404, content=b"")

    sink = KeepingSink()
    ref = FileRef("cfile_cited", "report.csv", "cntr_1")
    fetched = await Fetcher(Upstream(handler), FAST).fetch(ref, sink)
    assert fetched.ok, fetched.error
    assert (fetched.strategy, fetched.stored, sink.kept) == ("container-listing", data, [data])


async def test_a_file_the_listing_names_under_the_same_id_is_not_downloaded_again() -> None:
    upstream = Upstream(
        lambda r: (
            httpx2.Response(200, json={"data": [_record("cfile_1", b"abc")], "has_more": False})
            if r.url.path.endswith("/files")
            else httpx2.Response(500, json={"error": {"message": "boom"}})
        )
    )
    fetched = await Fetcher(upstream, FAST).fetch(
        FileRef("cfile_1", "f.bin", "cntr_1"), KeepingSink()
    )
    assert isinstance(fetched.error, UpstreamUnavailableError)
    assert len(upstream.paths("/content")) == 3  # the policy's attempts, not twice as many


async def test_a_body_cut_short_is_retried_and_the_sink_keeps_only_the_whole_one() -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: two batches
    calls = itertools.count()

    class Cut(httpx2.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield data[: 1024 * 1024 + 7]
            raise httpx2.ReadError("connection reset")

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/content"):
            if next(calls) == 0:
                return httpx2.Response(200, stream=Cut())
            return httpx2.Response(200, content=data)
        return httpx2.Response(200, json=_record("cfile_1", data))

    sink = KeepingSink()
    fetched = await Fetcher(Upstream(handler), FAST).fetch(
        FileRef("cfile_1", "f.bin", "cntr_1"), sink
    )
    assert fetched.ok, fetched.error
    assert (fetched.attempts, sink.discarded, sink.kept) == (2, 1, [data])


@pytest.mark.parametrize(
    ("pages", "expected_requests"),
    [
        pytest.param([["a", "b"], ["c"], []], 3, id="has-more-missing-asks-until-an-empty-page"),
        pytest.param([["a", "b"], ["a", "b"]], 2, id="server-ignoring-after-stops"),
    ],
)
async def test_the_paginator_follows_after_and_stops_on_every_stop_rule(
    pages: list[list[str]], expected_requests: int
) -> None:
    served = iter(pages)

    def handler(request: httpx2.Request) -> httpx2.Response:
        ids = next(served)
        return httpx2.Response(200, json={"data": [{"id": i} for i in ids]})

    upstream = Upstream(handler)
    records = await Fetcher(upstream, FAST).list_files("cntr_1")
    assert len(upstream.requests) == expected_requests
    assert [r["id"] for r in records] == sorted({i for page in pages for i in page})
    assert [r.url.params.get("after") for r in upstream.requests][1:] == [
        page[-1] for page in pages[: expected_requests - 1]
    ]


async def test_the_paginator_stops_after_its_page_cap_even_if_the_server_never_does() -> None:
    counter = itertools.count()

    def handler(request: httpx2.Request) -> httpx2.Response:
        n = next(counter)
        return httpx2.Response(200, json={"data": [{"id": f"f{n}"}], "has_more": True})

    upstream = Upstream(handler)
    records = await Fetcher(upstream, FAST).list_files("cntr_1")
    assert len(records) == len(upstream.requests) == MAX_LIST_PAGES


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(UpstreamUnavailableError("x", status=500), True, id="5xx"),
        pytest.param(RateLimitedError("x", status=429), True, id="429"),
        pytest.param(IntegrityError("x"), True, id="cut-short"),
        pytest.param(classify.from_http(404, b"", what="d"), True, id="404-empty-body"),
        pytest.param(
            classify.from_http(404, b'{"error":{"message":"File not found."}}', what="d"),
            False,
            id="404-naming-the-file",
        ),
        pytest.param(BadInputError("x", status=409), True, id="409"),
        pytest.param(BadInputError("x", status=400), False, id="400"),
        pytest.param(ContainerExpiredError("x", status=400), False, id="expired"),
        pytest.param(AccessDeniedError("x", status=500), False, id="checkaccess-as-500"),
        pytest.param(ApiVersionError("x", status=404), False, id="api-version"),
        pytest.param(StorageError("disk full"), False, id="local-storage"),
        pytest.param(FileNotFoundInContainerError("x"), False, id="not-in-listing"),
    ],
)
def test_one_answer_says_which_failures_another_attempt_may_heal(
    error: CigateError, expected: bool
) -> None:
    assert classify.retryable(error) is expected


def _case(rng: random.Random) -> dict[str, Any]:
    data = rng.randbytes(rng.choice([0, 1, 300, 5000, 1024 * 1024 + 1]))
    return {
        "data": data,
        "name": rng.choice(["f.bin", "chart.png", "notes.txt", "data.json", "noext"]),
        "status": rng.choice([200, 200, 200, 404, 500, 429, 401]),
        "served": rng.choice(["whole", "error-json", "short", "long"]),
        "record": rng.choice([True, False]),
    }


@pytest.mark.parametrize("seed", range(40), ids=lambda s: f"seed-{s}")
async def test_generated_upstream_answers_reach_a_sink_only_when_every_check_passes(
    seed: int,
) -> None:
    """Whatever the upstream answers, a sink keeps bytes only if they are the file's."""
    case = _case(random.Random(seed))
    data: bytes = case["data"]
    served = {
        "whole": data,
        "error-json": ERROR_JSON,
        "short": data[: len(data) // 2],
        "long": data + b"!",
    }[case["served"]]

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/content"):
            if case["status"] != 200:
                return httpx2.Response(case["status"], json={"error": {"message": "no"}})
            return httpx2.Response(200, content=served)
        if request.url.path.endswith("/files"):
            return httpx2.Response(200, json={"data": [], "has_more": False})
        if case["record"]:
            return httpx2.Response(200, json=_record("cfile_1", data))
        return httpx2.Response(404, content=b"")

    sink = KeepingSink()
    fetched = await Fetcher(Upstream(handler), FAST).fetch(
        FileRef("cfile_1", case["name"], "cntr_1"), sink
    )
    for kept in sink.kept:
        assert kept == served
    if sink.kept:
        assert fetched.ok
        assert fetched.stored == served
        assert case["status"] == 200
        # Without a record the size cannot be checked; an error document is still refused,
        # except for a file whose name allows such content (only its size could tell).
        assert served == data or not case["record"]
        if case["served"] == "error-json" and data != served:
            assert case["name"] in ("data.json", "noext")
    else:
        assert fetched.error is not None
