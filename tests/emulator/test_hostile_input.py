"""Hostile input never becomes a 5xx on the emulator: the corpus of ``tests/hostile.py``.

Every known-bad JSON body on every JSON route (all three URL forms of ``/responses`` and the
control plane included) gets the service's refusal, in the OpenAI envelope, with the exact
status and code; ``Range``, conditional headers, ``Content-Length`` lies, query parameters,
credentials, other headers and multipart uploads get a 4xx in the error shape (or the right
download status), never a 5xx. One emulator and one set of objects serve the whole module.
The requests go in-process in both test modes: many of them cannot be sent by an HTTP client
library, or would be refused by the HTTP server before the app saw them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from cigate.emulator.app import create_app
from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.testing.plugin import RunningEmulator, current_mode
from cigate.testing.transport import InProcessTransport
from cigate.web.bodies import INVALID_JSON_MESSAGE
from tests.fuzzing import (
    FUZZ,
    JSON_OPERATIONS,
    Tally,
    dump,
    hostile_bodies,
    hostile_header_values,
    hostile_queries,
    json_values,
    schema_cases,
)
from tests.hostile import (
    BAD_CREDENTIALS,
    BODIES,
    HEADERS,
    QUERIES,
    RANGES,
    BadBody,
    assert_error_shape,
    assert_no_5xx,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Assistants

CONTENT = b"abcdefghijklmnopqrstuvwxyz"


@dataclass
class World:
    emulator: RunningEmulator
    http: httpx2.Client
    container: str
    container_file: str
    file: str
    assistant: str
    thread: str
    message: str
    run: str
    response: str
    fuzz: httpx2.Client

    def fill(self, template: str) -> str:
        return template.format(
            c=self.container,
            cf=self.container_file,
            f=self.file,
            a=self.assistant,
            t=self.thread,
            m=self.message,
            r=self.run,
            resp=self.response,
        )


@pytest.fixture(scope="module")
def world(emulator_server: ServerHandle, emulator_settings: EmulatorSettings) -> Iterator[World]:
    """One object of every kind the JSON routes name, made through the SDK."""
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    client = emulator.openai()
    container = client.containers.create(name="hostile")
    cfile = client.containers.files.create(container.id, file=("abc.txt", CONTENT))
    uploaded = client.files.create(file=("abc.txt", CONTENT), purpose="assistants")
    assistant = client.beta.assistants.create(model="gpt-4o-mini")
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(thread.id, role="user", content="hello")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    response = client.responses.create(model="gpt-4o-mini", input="hello")
    # In-process in both test modes: most of these inputs cannot be sent by an HTTP client
    # library, or are refused by the HTTP server (h11) before the app sees them.
    asgi = InProcessTransport(emulator.app, emulator.handle.loop)
    http = emulator.http_client(headers=emulator.auth_headers, transport=asgi)
    # Generated bodies are not validated against the description: the emulator echoes some
    # Responses parameters as sent (see docs/security.md, Hostile input: not done).
    fuzz = emulator.http_client(headers=emulator.auth_headers, event_hooks={}, transport=asgi)
    try:
        yield World(
            emulator,
            http,
            container.id,
            cfile.id,
            uploaded.id,
            assistant.id,
            thread.id,
            message.id,
            run.id,
            response.id,
            fuzz,
        )
    finally:
        emulator.close()
    assert not emulator.recorder.failures, emulator.recorder.failures[:5]


#: Every route of the emulator that reads a JSON body (``POST``), with the ids it needs.
JSON_ROUTES = [
    "/openai/v1/responses",
    "/openai/responses?api-version=2025-04-01-preview",
    "/v1/responses",
    "/openai/v1/containers",
    "/openai/v1/containers/{c}/files",
    "/openai/v1/assistants",
    "/openai/v1/assistants/{a}",
    "/openai/v1/threads",
    "/openai/v1/threads/{t}",
    "/openai/v1/threads/runs",
    "/openai/v1/threads/{t}/messages",
    "/openai/v1/threads/{t}/messages/{m}",
    "/openai/v1/threads/{t}/runs",
    "/openai/v1/threads/{t}/runs/{r}",
    "/openai/threads?api-version=2024-05-01-preview",
    "/_emulator/faults",
    "/_emulator/clock/advance",
]


def _post(world: World, route: str, body: bytes, content_type: str) -> httpx2.Response:
    headers = {"content-type": content_type, "openai-beta": "assistants=v2"}
    return world.http.post(world.fill(route), content=body, headers=headers)


@pytest.mark.parametrize("bad", BODIES, ids=[b.id for b in BODIES])
@pytest.mark.parametrize("route", JSON_ROUTES)
def test_a_hostile_json_body_gets_the_services_400_on_every_json_route(
    world: World, route: str, bad: BadBody
) -> None:
    response = _post(world, route, bad.raw, bad.content_type)
    error = assert_error_shape(response)
    assert response.status_code == bad.status, error
    if bad.kind == "invalid_json":
        assert error == {
            "message": INVALID_JSON_MESSAGE,
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    else:
        assert error["code"] == bad.kind, error


@pytest.mark.parametrize("route", ["/openai/v1/containers", "/openai/v1/responses"])
@pytest.mark.parametrize(
    ("length", "kind", "status"),
    [
        pytest.param(b"99999999999999999999999", "request_too_large", 413, id="declared-over-cap"),
        pytest.param(b"abc", "invalid_content_length", 400, id="non-numeric"),
        pytest.param(b"-1", "invalid_content_length", 400, id="negative"),
        pytest.param(b"1, 2", "invalid_content_length", 400, id="two-values"),
        pytest.param(b"+5", "invalid_content_length", 400, id="plus-sign"),
        pytest.param(b"0x10", "invalid_content_length", 400, id="hex"),
        pytest.param(b"2", "invalid_content_length", 400, id="shorter-than-the-body"),
        pytest.param(b"900", "invalid_content_length", 400, id="longer-than-the-body"),
    ],
)
def test_a_lying_content_length_is_refused_before_the_body_is_used(
    world: World, route: str, length: bytes, kind: str, status: int
) -> None:
    response = world.http.post(
        route, content=b'{"name": "x"}', headers={"content-length": length.decode()}
    )
    error = assert_error_shape(response)
    assert (response.status_code, error["code"]) == (status, kind)


DOWNLOADS = ["/openai/v1/containers/{c}/files/{cf}/content", "/openai/v1/files/{f}/content"]


@pytest.mark.parametrize(("name", "header"), RANGES, ids=[r[0] for r in RANGES])
@pytest.mark.parametrize("route", DOWNLOADS)
def test_any_range_header_is_200_206_or_416_on_every_download(
    world: World, route: str, name: str, header: str
) -> None:
    response = world.http.get(world.fill(route), headers={"range": header.encode()})
    assert response.status_code in (200, 206, 416), (response.status_code, response.text[:200])
    if response.status_code == 200:
        assert response.content == CONTENT
    elif response.status_code == 206:
        first, last = response.headers["content-range"].split(" ")[1].split("/")[0].split("-")
        assert response.content == CONTENT[int(first) : int(last) + 1]
    else:
        assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


LISTS = [
    "/openai/v1/containers",
    "/openai/v1/containers/{c}/files",
    "/openai/v1/files",
    "/openai/v1/responses/{resp}/input_items",
    "/openai/v1/assistants",
    "/openai/v1/threads/{t}/messages",
    "/openai/v1/threads/{t}/runs",
    "/openai/v1/threads/{t}/runs/{r}/steps",
]


@pytest.mark.parametrize(("name", "query"), QUERIES, ids=[q[0] for q in QUERIES])
@pytest.mark.parametrize("route", LISTS)
def test_hostile_query_parameters_get_a_page_or_the_services_400(
    world: World, route: str, name: str, query: str
) -> None:
    response = world.http.get(f"{world.fill(route)}?{query}")
    if response.status_code == 200:
        assert response.json()["object"] == "list"
    else:
        assert response.status_code == 400, (response.status_code, response.text[:300])
        assert assert_error_shape(response)["param"] in ("limit", "order", "include[0]")


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("stream=true&starting_after=" + "9" * 5000, id="starting-after-5000-digits"),
        pytest.param("stream=true&starting_after=-5", id="starting-after-negative"),
        pytest.param("stream=true&starting_after=x", id="starting-after-word"),
        pytest.param("include%5B%5D=%FF", id="include-invalid-utf8"),
        pytest.param("stream=%00", id="stream-nul"),
    ],
)
def test_hostile_retrieve_parameters_never_fail_the_server(world: World, query: str) -> None:
    response = world.http.get(f"/openai/v1/responses/{world.response}?{query}")
    assert_no_5xx(response)
    if response.status_code >= 400:
        assert_error_shape(response)


@pytest.mark.parametrize(("name", "headers"), HEADERS, ids=[h[0] for h in HEADERS])
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", "/openai/v1/containers/{c}/files/{cf}/content"),
        ("GET", "/v1/files/{f}"),
        ("GET", "/openai/v1/threads/{t}/messages"),
        ("POST", "/openai/v1/containers"),
    ],
)
def test_hostile_header_values_never_fail_the_server(
    world: World, method: str, route: str, name: str, headers: list[tuple[bytes, bytes]]
) -> None:
    raw = [(b"api-key", world.emulator.api_key.encode()), (b"openai-beta", b"assistants=v2")]
    response = world.http.request(
        method,
        world.fill(route),
        content=b'{"name": "x"}' if method == "POST" else None,
        headers=httpx2.Headers([*raw, *headers]),
    )
    assert_no_5xx(response)
    if response.status_code >= 400:
        assert_error_shape(response)


@pytest.mark.parametrize(("name", "headers"), BAD_CREDENTIALS, ids=[h[0] for h in BAD_CREDENTIALS])
@pytest.mark.parametrize("prefix", ["/openai/v1", "/v1"])
def test_hostile_credentials_are_a_401(
    world: World, prefix: str, name: str, headers: list[tuple[bytes, bytes]]
) -> None:
    bare = world.emulator.http_client(
        transport=InProcessTransport(world.emulator.app, world.emulator.handle.loop)
    )
    response = bare.get(f"{prefix}/containers", headers=httpx2.Headers(headers))
    assert response.status_code == 401, response.text[:300]
    assert_error_shape(response)


def _multipart(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    out = b""
    for head, data in parts:
        out += b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


_FILE = b'Content-Disposition: form-data; name="file"; filename="a.txt"'
_PURPOSE = (b'Content-Disposition: form-data; name="purpose"', b"assistants")
MULTIPARTS: list[tuple[str, bytes, bytes]] = [
    ("no-boundary", b"multipart/form-data", _multipart(b"b", [(_FILE, b"x"), _PURPOSE])),
    ("empty-boundary", b"multipart/form-data; boundary=", b"--\r\n\r\n"),
    (
        "no-filename",
        b"multipart/form-data; boundary=b",
        _multipart(b"b", [(b'Content-Disposition: form-data; name="file"', b"x"), _PURPOSE]),
    ),
    (
        "empty-filename",
        b"multipart/form-data; boundary=b",
        _multipart(
            b"b", [(b'Content-Disposition: form-data; name="file"; filename=""', b"x"), _PURPOSE]
        ),
    ),
    (
        "nul-in-filename",
        b"multipart/form-data; boundary=b",
        _multipart(
            b"b",
            [(b'Content-Disposition: form-data; name="file"; filename="a\x00b"', b"x"), _PURPOSE],
        ),
    ),
    (
        "invalid-utf8-filename",
        b"multipart/form-data; boundary=b",
        _multipart(
            b"b",
            [(b'Content-Disposition: form-data; name="file"; filename="\xff\xfe"', b"x"), _PURPOSE],
        ),
    ),
    (
        "no-content-disposition",
        b"multipart/form-data; boundary=b",
        _multipart(b"b", [(b"Content-Type: text/plain", b"x"), _PURPOSE]),
    ),
    (
        "thousand-fields",
        b"multipart/form-data; boundary=b",
        _multipart(
            b"b",
            [(f'Content-Disposition: form-data; name="f{i}"'.encode(), b"v") for i in range(1000)],
        ),
    ),
    (
        "thousand-files",
        b"multipart/form-data; boundary=b",
        _multipart(b"b", [(_FILE, b"x")] * 1000),
    ),
    ("garbage", b"multipart/form-data; boundary=b", b"\xff\x00--b\r\n\r\n\r\n--"),
    ("unterminated", b"multipart/form-data; boundary=b", b"--b\r\n" + _FILE + b"\r\n\r\nxx"),
    (
        "huge-field",
        b"multipart/form-data; boundary=b",
        _multipart(b"b", [(_FILE, b"x"), (_PURPOSE[0], b"a" * 200_000)]),
    ),
    (
        "boundary-with-high-bytes",
        b"multipart/form-data; boundary=\xff\xfe",
        _multipart(b"\xff\xfe", [(_FILE, b"x"), _PURPOSE]),
    ),
    ("json-sent-as-multipart", b"multipart/form-data; boundary=b", b'{"purpose": "assistants"}'),
]


@pytest.mark.parametrize(("name", "ctype", "body"), MULTIPARTS, ids=[m[0] for m in MULTIPARTS])
@pytest.mark.parametrize("route", ["/openai/v1/files", "/openai/v1/containers/{c}/files"])
def test_hostile_multipart_uploads_get_a_4xx_in_the_error_shape(
    world: World, route: str, name: str, ctype: bytes, body: bytes
) -> None:
    headers = httpx2.Headers(
        [(b"api-key", world.emulator.api_key.encode()), (b"content-type", ctype)]
    )
    response = world.http.post(world.fill(route), content=body, headers=headers)
    assert_no_5xx(response)
    if response.status_code != 200:  # a NUL or invalid name may be stored under a safe name
        assert_error_shape(response)


# -- the caps, on an emulator of its own with small ones --------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = EmulatorSettings(
        api_keys=("k",),
        data_dir=Path(tmp_path_factory.mktemp("small-caps")),
        pool_size=0,
        isolation="none",
        max_json_body=1024,
        max_upload_body=4096,
    )
    with TestClient(create_app(settings), headers={"api-key": "k"}) as client:
        yield client


def _chunks(data: bytes, size: int = 100) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_json_body_over_the_cap_is_a_413(small: TestClient, declared: bool) -> None:
    body = json.dumps({"name": "x" * 2000}).encode()
    content = body if declared else _chunks(body)
    response = small.post("/openai/v1/containers", content=content)
    error = assert_error_shape(response)
    assert (response.status_code, error["code"]) == (413, "request_too_large")
    assert small.get("/openai/v1/containers").json()["data"] == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_upload_over_the_cap_is_a_413_and_stores_nothing(
    small: TestClient, declared: bool
) -> None:
    body = _multipart(b"b", [(_FILE, b"x" * 8000), _PURPOSE])
    content = body if declared else _chunks(body, 1000)
    response = small.post(
        "/openai/v1/files",
        content=content,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    error = assert_error_shape(response)
    assert (response.status_code, error["code"]) == (413, "request_too_large")
    assert small.get("/openai/v1/files").json()["data"] == []


def test_an_upload_under_the_cap_still_works(small: TestClient) -> None:
    body = _multipart(b"b", [(_FILE, b"x" * 3000), _PURPOSE])
    response = small.post(
        "/openai/v1/files",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == 3000


# -- fuzzing: generated requests, bounded in count, the same every run ------------------------

#: A plausible body per operation, for the hostile values to be spliced into.
BASES: dict[str, dict[str, Any]] = {
    "/responses": {"model": "gpt-4o-mini", "input": "hi"},
    "/containers": {"name": "fuzz"},
    "/containers/{container_id}/files": {"file_id": "{f}"},
    "/assistants": {"model": "gpt-4o-mini"},
    "/threads/{thread_id}/messages": {"role": "user", "content": "hi"},
    "/threads/{thread_id}/runs": {"assistant_id": "{a}"},
    "/threads/runs": {"assistant_id": "{a}"},
}
TALLY = Tally()


def _fill_body(world: World, base: dict[str, Any]) -> dict[str, Any]:
    return {k: world.fill(v) if isinstance(v, str) else v for k, v in base.items()}


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("template", list(JSON_OPERATIONS))
def test_schema_generated_requests_never_get_a_5xx(world: World, template: str, mode: str) -> None:
    path = "/openai/v1" + world.fill(JSON_OPERATIONS[template])

    @FUZZ(10)
    @given(case=schema_cases(template, mode))
    def run(case: Any) -> None:
        body = case.body if isinstance(case.body, dict | list) else {}
        query = case.query if isinstance(case.query, dict) else None
        response = world.fuzz.post(
            path,
            content=json.dumps(body).encode(),
            params=query,
            headers={"content-type": "application/json", "openai-beta": "assistants=v2"},
        )
        TALLY.check(response)

    run()


@pytest.mark.parametrize("template", list(JSON_OPERATIONS))
def test_hostile_bodies_never_get_a_5xx(world: World, template: str) -> None:
    path = "/openai/v1" + world.fill(JSON_OPERATIONS[template])
    base = _fill_body(world, BASES.get(template, {}))

    @FUZZ(40)
    @given(body=hostile_bodies(template, base), json_type=st.booleans())
    def run(body: bytes, json_type: bool) -> None:
        ctype = "application/json" if json_type else "text/plain"
        response = world.fuzz.post(
            path, content=body, headers={"content-type": ctype, "openai-beta": "assistants=v2"}
        )
        TALLY.check(response)

    run()


@pytest.mark.parametrize("route", [*LISTS, "/openai/v1/responses/{resp}"])
def test_hostile_query_strings_never_get_a_5xx(world: World, route: str) -> None:
    @FUZZ(10)
    @given(query=hostile_queries())
    def run(query: list[tuple[str, str]]) -> None:
        response = world.fuzz.get(world.fill(route), params=query)
        TALLY.check(response)

    run()


@pytest.mark.parametrize("route", DOWNLOADS)
def test_hostile_download_headers_never_get_a_5xx(world: World, route: str) -> None:
    @FUZZ(25)
    @given(headers=hostile_header_values())
    def run(headers: list[tuple[bytes, bytes]]) -> None:
        raw = [(b"api-key", world.emulator.api_key.encode()), *headers]
        response = world.fuzz.get(world.fill(route), headers=httpx2.Headers(raw))
        TALLY.check(response, download=True)

    run()


CONTROL_BASES = {
    "/_emulator/faults": {"path": "/never/matches/**", "status": 503},
    "/_emulator/clock/advance": {"seconds": 1},
}


@pytest.mark.parametrize("route", list(CONTROL_BASES))
def test_hostile_control_plane_bodies_never_get_a_5xx(small: TestClient, route: str) -> None:
    base = CONTROL_BASES[route]
    names = st.sampled_from(
        [
            "method",
            "status",
            "body",
            "message",
            "code",
            "count",
            "probability",
            "latency_ms",
            "truncate_after_bytes",
            "drop_mid_body",
            "rate_bytes_per_s",
            "error_in_200",
            "headers",
            "seconds",
            "zzz",
        ]
    )

    @FUZZ(40)
    @given(overrides=st.dictionaries(names, json_values, max_size=3))
    def run(overrides: dict[str, Any]) -> None:
        response = small.post(route, content=dump({**base, **overrides}))
        TALLY.check(response)

    run()
    # every rule that was accepted still answers requests: none matches, and none breaks
    assert small.get("/openai/v1/containers").status_code == 200
    small.delete("/_emulator/faults")


def test_the_emulator_fuzz_run_sent_what_it_should_and_got_no_5xx() -> None:
    """Runs last in this module: the figures of the whole fuzz run, for the record."""
    print(f"\nemulator fuzz: {TALLY.summary()}")
    assert TALLY.sent >= 900
    assert all(status < 500 for status in TALLY.statuses)
