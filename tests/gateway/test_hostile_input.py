"""Hostile input never becomes a 5xx on the gateway, and a bad body never reaches the upstream.

The gateway runs in-process (Starlette's ``TestClient``) on each storage backend, with the
session's emulator as its upstream over the in-process transport. Every known-bad JSON body of
``tests/hostile.py`` on every route that reads or forwards JSON gets the gateway's own refusal
(status, ``code``) and the upstream sees no request; ``Range`` and conditional headers on every
download endpoint, ``Content-Length`` lies, query parameters, credentials and other headers get
a 4xx in the OpenAI envelope or the right download status, never a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.gateway.settings import GatewaySettings
from cigate.testing.plugin import RunningEmulator, current_mode
from cigate.web.bodies import INVALID_JSON_MESSAGE
from tests.fuzzing import (
    FUZZ,
    JSON_OPERATIONS,
    Tally,
    hostile_bodies,
    hostile_header_values,
    hostile_queries,
    schema_cases,
)
from tests.gateway.conftest import make_backend
from tests.gateway.harness import GatewayHarness, Tenant, use_upstream_client
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

pytestmark = [pytest.mark.storage, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CONTENT = b"abcdefghijklmnopqrstuvwxyz"


@dataclass
class World:
    gw: GatewayHarness
    emulator: RunningEmulator
    tenant: Tenant
    ids: dict[str, str]
    upstream_calls: list[str] = field(default_factory=list)

    def fill(self, template: str) -> str:
        return template.format(**self.ids)

    def request(self, method: str, path: str, **kw: Any) -> httpx2.Response:
        headers = httpx2.Headers(kw.pop("headers", None) or {})
        headers.setdefault("authorization", self.tenant.headers["authorization"])
        headers.setdefault("openai-beta", "assistants=v2")
        return self.gw.client.request(method, self.fill(path), headers=headers, **kw)


@contextmanager
def gateway_over_emulator(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[tuple[GatewayHarness, RunningEmulator, list[str]]]:
    """A gateway on ``request.param``'s backend whose upstream is the emulator, in-process;
    the list collects the method and path of every request the emulator answered."""
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    backend = make_backend(request.param, request, tmp_path_factory.mktemp("hostile"))
    settings = GatewaySettings(
        upstream=emulator.base_url,
        upstream_key=emulator.api_key,
        database=backend.database,
        blobs=backend.blobs,
        link_secret="s" * 32,
        resume_interval=0.5,
    )
    calls: list[str] = []

    async def count(answer: httpx2.Response) -> None:
        calls.append(f"{answer.request.method} {answer.request.url.path}")

    with GatewayHarness(settings) as gw:
        client = emulator.async_http_client(base_url="")
        client.event_hooks["response"].append(count)
        use_upstream_client(gw.services.upstream, client)
        try:
            yield gw, emulator, calls
        finally:
            emulator.close()


@pytest.fixture(scope="module", params=["sqlite-disk", "postgres-azurite"])
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[World]:
    """One tenant and one object of every kind the routes name, made through the gateway."""
    with gateway_over_emulator(request, tmp_path_factory, emulator_server, emulator_settings) as (
        gw,
        emulator,
        calls,
    ):
        tenant = gw.add_tenant("hostile")
        world = World(gw, emulator, tenant, {}, calls)

        def made(method: str, path: str, **kw: Any) -> dict[str, Any]:
            answer = world.request(method, path, **kw)
            assert answer.status_code in (200, 201), answer.text
            body: dict[str, Any] = answer.json()
            return body

        ids = world.ids
        ids["c"] = made("POST", "/openai/v1/containers", json={"name": "hostile"})["id"]
        ids["cf"] = made(
            "POST", "/openai/v1/containers/{c}/files", files={"file": ("abc.txt", CONTENT)}
        )["id"]
        ids["f"] = made(
            "POST",
            "/openai/v1/files",
            files={"file": ("abc.txt", CONTENT)},
            data={"purpose": "assistants"},
        )["id"]
        ids["a"] = made("POST", "/openai/v1/assistants", json={"model": "gpt-4o-mini"})["id"]
        ids["t"] = made("POST", "/openai/v1/threads", json={})["id"]
        ids["m"] = made(
            "POST", "/openai/v1/threads/{t}/messages", json={"role": "user", "content": "hi"}
        )["id"]
        ids["r"] = made("POST", "/openai/v1/threads/{t}/runs", json={"assistant_id": ids["a"]})[
            "id"
        ]
        ids["resp"] = made("POST", "/openai/v1/responses", json={"model": "m", "input": "hi"})["id"]
        stored = gw.put_file(
            tenant, CONTENT, "stored.txt", response_id=ids["resp"], path="/mnt/data/stored.txt"
        )
        ids["gf"] = stored.id
        link = made("POST", "/files/{gf}/links", json={"expires_in": 600})
        ids["link"] = link["id"]
        ids["link_query"] = link["url"].split("?", 1)[1]
        yield world
        assert not emulator.recorder.failures, emulator.recorder.failures[:5]


#: Routes that read or forward a JSON body: (path, the gateway parses any content type as
#: JSON there). Elsewhere only a body *sent as JSON* is the gateway's to check.
JSON_ROUTES: list[tuple[str, bool]] = [
    ("/openai/v1/responses", True),
    ("/openai/responses?api-version=2025-04-01-preview", True),
    ("/v1/responses", True),
    ("/openai/v1/containers", True),
    ("/openai/v1/containers/{c}/files", True),
    ("/openai/v1/assistants", True),
    ("/openai/v1/assistants/{a}", True),
    ("/openai/v1/threads", True),
    ("/openai/v1/threads/{t}", True),
    ("/openai/v1/threads/runs", True),
    ("/openai/v1/threads/{t}/messages", True),
    ("/openai/v1/threads/{t}/runs", True),
    ("/openai/v1/threads/{t}/messages/{m}", False),
    ("/openai/v1/threads/{t}/runs/{r}", False),
    ("/openai/v1/chat/completions", False),
    ("/files/{gf}/links", True),
]


#: ``POST /files/{id}/links`` reads at most this much (its body is ``{"expires_in": N}``).
LINK_BODY_CAP = 64 * 1024


@pytest.mark.parametrize("bad", BODIES, ids=[b.id for b in BODIES])
@pytest.mark.parametrize(("route", "reads_json"), JSON_ROUTES, ids=[r[0] for r in JSON_ROUTES])
def test_a_hostile_json_body_is_refused_by_the_gateway_and_never_forwarded(
    world: World, route: str, reads_json: bool, bad: BadBody
) -> None:
    before = len(world.upstream_calls)
    response = world.request(
        "POST", route, content=bad.raw, headers={"content-type": bad.content_type}
    )
    error = assert_error_shape(response)
    if not reads_json and bad.content_type != "application/json":
        return  # not JSON to the gateway: forwarded as it came, the upstream's answer relayed
    if route == "/files/{gf}/links" and len(bad.raw) > LINK_BODY_CAP:
        assert (response.status_code, error["code"]) == (413, "request_too_large")
        return
    assert (response.status_code, error["code"]) == (bad.status, bad.kind), error
    if bad.kind == "invalid_json":
        assert error["message"] == INVALID_JSON_MESSAGE
    assert world.upstream_calls[before:] == []


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/openai/v1/responses", {"model": "m", "input": "hi", "previous_response_id": "r\x00"}),
        (
            "/openai/v1/responses",
            {
                "model": "m",
                "input": "hi",
                "tools": [{"type": "code_interpreter", "container": "\x00"}],
            },
        ),
        ("/openai/v1/containers", {"name": "x", "file_ids": ["file-\x00", "\x07"]}),
        ("/openai/v1/containers/{c}/files", {"file_id": "file-\x00"}),
        ("/openai/v1/threads/{t}/runs", {"assistant_id": "asst_\x00"}),
        (
            "/openai/v1/threads",
            {"messages": [{"role": "user", "content": "x", "attachments": [{"file_id": "\x00"}]}]},
        ),
    ],
    ids=[
        "previous-response",
        "container",
        "container-file-ids",
        "container-file",
        "assistant",
        "attachment",
    ],
)
def test_an_id_no_service_issues_is_an_unknown_id_on_every_backend(
    world: World, route: str, body: dict[str, Any]
) -> None:
    """NUL and other control characters in ids: PostgreSQL cannot even compare them."""
    before = len(world.upstream_calls)
    response = world.request("POST", route, json=body)
    assert response.status_code in (400, 404), response.text[:300]
    assert_error_shape(response)
    assert world.upstream_calls[before:] == []


_LENGTHS = [
    ("declared-over-cap", "99999999999999999999999", "request_too_large", 413),
    ("non-numeric", "abc", "invalid_content_length", 400),
    ("negative", "-1", "invalid_content_length", 400),
    ("two-values", "1, 2", "invalid_content_length", 400),
    ("shorter-than-the-body", "2", "invalid_content_length", 400),
    ("longer-than-the-body", "900", "invalid_content_length", 400),
]
_FRAMED_ROUTES = [
    ("/openai/v1/responses", "application/json"),
    ("/openai/v1/chat/completions", "application/json"),
    ("/openai/v1/files", "multipart/form-data; boundary=b"),
    ("/openai/v1/threads/{t}/runs/{r}", "text/plain"),
]
#: Uploads are not capped by the gateway (they stream to the upstream's cap): no 413 case.
LENGTH_CASES = [
    pytest.param(route, ctype, length, kind, status, id=f"{route}-{name}")
    for route, ctype in _FRAMED_ROUTES
    for name, length, kind, status in _LENGTHS
    if not (ctype.startswith("multipart/") and status == 413)
]


@pytest.mark.parametrize(("route", "ctype", "length", "kind", "status"), LENGTH_CASES)
def test_a_lying_content_length_is_refused_and_never_forwarded(  # noqa: PLR0917
    world: World, route: str, ctype: str, length: str, kind: str, status: int
) -> None:
    before = len(world.upstream_calls)
    response = world.request(
        "POST",
        route,
        content=b'{"model": "m", "input": "hi"}',
        headers={"content-length": length, "content-type": ctype},
    )
    error = assert_error_shape(response)
    assert (response.status_code, error["code"]) == (status, kind)
    assert world.upstream_calls[before:] == []  # a streamed body's request never completed


DOWNLOADS = [
    "/files/{gf}/content",
    "/openai/v1/files/{gf}/content",
    "/responses/{resp}/files/by-path/stored.txt",
    "/links/{link}?{link_query}",
    "/openai/v1/containers/{c}/files/{cf}/content",  # not harvested: relayed from the emulator
]


@pytest.mark.parametrize(("name", "header"), RANGES, ids=[r[0] for r in RANGES])
@pytest.mark.parametrize("route", DOWNLOADS)
def test_any_range_header_is_200_206_or_416_on_every_download(
    world: World, route: str, name: str, header: str
) -> None:
    response = world.request("GET", route, headers={"range": header.encode()})
    assert response.status_code in (200, 206, 416), (response.status_code, response.text[:200])
    if response.status_code == 200:
        assert response.content == CONTENT
    elif response.status_code == 206:
        first, last = response.headers["content-range"].split(" ")[1].split("/")[0].split("-")
        assert response.content == CONTENT[int(first) : int(last) + 1]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"if-none-match": 'W/"' + '"' * 2000}, id="if-none-match-quotes"),
        pytest.param({"if-none-match": "*, " * 3000}, id="if-none-match-many"),
        pytest.param({"if-range": "\xff" * 300, "range": "bytes=0-1"}, id="if-range-garbage"),
        pytest.param({"if-range": "9" * 5000, "range": "bytes=-1"}, id="if-range-digits"),
    ],
)
@pytest.mark.parametrize("route", DOWNLOADS)
def test_conditional_header_garbage_is_a_normal_download(
    world: World, route: str, headers: dict[str, str]
) -> None:
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    response = world.request("GET", route, headers=encoded)
    assert response.status_code in (200, 206, 304), (response.status_code, response.text[:200])


LISTS = [
    "/openai/v1/containers",
    "/openai/v1/containers/{c}/files",
    "/openai/v1/files",
    "/openai/v1/responses/{resp}/input_items",
    "/openai/v1/assistants",
    "/openai/v1/threads/{t}/messages",
    "/responses/{resp}/files",
    "/files",  # the tenant's stored files (the web page's listing)
]


@pytest.mark.parametrize(("name", "query"), QUERIES, ids=[q[0] for q in QUERIES])
@pytest.mark.parametrize("route", LISTS)
def test_hostile_query_parameters_get_a_page_or_a_400(
    world: World, route: str, name: str, query: str
) -> None:
    response = world.request("GET", f"{route}?{query}")
    if response.status_code == 200:
        assert isinstance(response.json()["data"], list)
    else:
        assert response.status_code == 400, (response.status_code, response.text[:300])
        assert_error_shape(response)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("expires=" + "9" * 5000 + "&signature=x", id="expires-5000-digits"),
        pytest.param("expires=1e9&signature=x", id="expires-float"),
        pytest.param("expires=-1&signature=x", id="expires-negative"),
        pytest.param("expires=1&signature=%FF" * 50, id="repeated-invalid-utf8"),
        pytest.param("", id="nothing"),
    ],
)
def test_a_tampered_link_query_is_a_403(world: World, query: str) -> None:
    response = world.gw.client.get(world.fill("/links/{link}") + "?" + query)
    assert response.status_code == 403, response.text[:300]
    assert_error_shape(response)


@pytest.mark.parametrize(("name", "headers"), HEADERS, ids=[h[0] for h in HEADERS])
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", "/files/{gf}/content"),
        ("GET", "/openai/v1/containers/{c}/files/{cf}/content"),
        ("GET", "/openai/v1/threads/{t}/messages"),
        ("POST", "/openai/v1/containers"),
        ("POST", "/openai/v1/chat/completions"),
    ],
)
def test_hostile_header_values_never_fail_the_gateway(
    world: World, method: str, route: str, name: str, headers: list[tuple[bytes, bytes]]
) -> None:
    raw = [
        (b"authorization", world.tenant.headers["authorization"].encode()),
        (b"openai-beta", b"assistants=v2"),
        *headers,
    ]
    response = world.gw.client.request(
        method,
        world.fill(route),
        content=b'{"name": "x", "model": "m"}' if method == "POST" else None,
        headers=httpx2.Headers(raw),
    )
    assert_no_5xx(response)
    if response.status_code >= 400:
        assert_error_shape(response)


@pytest.mark.parametrize(("name", "headers"), BAD_CREDENTIALS, ids=[h[0] for h in BAD_CREDENTIALS])
def test_hostile_credentials_are_a_401(
    world: World, name: str, headers: list[tuple[bytes, bytes]]
) -> None:
    response = world.gw.client.get("/openai/v1/containers", headers=httpx2.Headers(headers))
    assert response.status_code == 401, response.text[:300]
    assert_error_shape(response)


# -- fuzzing through the gateway: generated requests, bounded in count, the same every run -----

BASES: dict[str, dict[str, Any]] = {
    "/responses": {"model": "gpt-4o-mini", "input": "hi"},
    "/containers": {"name": "fuzz"},
    "/containers/{container_id}/files": {"file_id": "{f}"},
    "/assistants": {"model": "gpt-4o-mini"},
    "/threads/{thread_id}/messages": {"role": "user", "content": "hi"},
    "/threads/{thread_id}/runs": {"assistant_id": "{a}"},
    "/threads/runs": {"assistant_id": "{a}"},
    "/chat/completions": {"model": "gpt-4o-mini", "messages": []},
}
OPERATIONS = {**JSON_OPERATIONS, "/chat/completions": "/chat/completions"}
TALLIES: dict[str, Tally] = {}


def _tally(world: World) -> Tally:
    return TALLIES.setdefault(world.gw.settings.database.split(":", 1)[0], Tally())


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("template", list(JSON_OPERATIONS))
def test_schema_generated_requests_never_get_a_5xx_from_the_gateway(
    world: World, template: str, mode: str
) -> None:
    path = "/openai/v1" + JSON_OPERATIONS[template]
    tally = _tally(world)

    @FUZZ(6)
    @given(case=schema_cases(template, mode))
    def run(case: Any) -> None:
        body = case.body if isinstance(case.body, dict | list) else {}
        query = case.query if isinstance(case.query, dict) else None
        response = world.request(
            "POST",
            path,
            content=json.dumps(body).encode(),
            params=query,
            headers={"content-type": "application/json"},
        )
        tally.check(response)

    run()


@pytest.mark.parametrize("template", list(OPERATIONS))
def test_hostile_bodies_never_get_a_5xx_from_the_gateway(world: World, template: str) -> None:
    path = "/openai/v1" + OPERATIONS[template]
    base = {
        k: world.fill(v) if isinstance(v, str) else v for k, v in BASES.get(template, {}).items()
    }
    tally = _tally(world)

    @FUZZ(25)
    @given(body=hostile_bodies(template, base), json_type=st.booleans())
    def run(body: bytes, json_type: bool) -> None:
        ctype = "application/json" if json_type else "text/plain"
        response = world.request("POST", path, content=body, headers={"content-type": ctype})
        tally.check(response)

    run()


@pytest.mark.parametrize("route", [*LISTS, "/openai/v1/responses/{resp}"])
def test_hostile_query_strings_never_get_a_5xx_from_the_gateway(world: World, route: str) -> None:
    tally = _tally(world)

    @FUZZ(10)
    @given(query=hostile_queries())
    def run(query: list[tuple[str, str]]) -> None:
        tally.check(world.request("GET", route, params=query))

    run()


@pytest.mark.parametrize("route", DOWNLOADS)
def test_hostile_download_headers_never_get_a_5xx_from_the_gateway(
    world: World, route: str
) -> None:
    tally = _tally(world)

    @FUZZ(20)
    @given(headers=hostile_header_values())
    def run(headers: list[tuple[bytes, bytes]]) -> None:
        raw = [(b"authorization", world.tenant.headers["authorization"].encode()), *headers]
        response = world.gw.client.get(world.fill(route), headers=httpx2.Headers(raw))
        tally.check(response, download=True)

    run()


def test_the_gateway_fuzz_run_sent_what_it_should_and_got_no_5xx(world: World) -> None:
    """Runs last in this module, once per backend: the figures of that backend's fuzz run."""
    tally = _tally(world)
    print(f"\ngateway fuzz ({world.gw.settings.database.split(':', 1)[0]}): {tally.summary()}")
    assert tally.sent >= 600
    assert all(status < 500 for status in tally.statuses)
