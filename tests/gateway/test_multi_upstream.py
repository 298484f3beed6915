"""Two regions behind one gateway: new work spread, every later call where its object lives.

Two emulators ("east", "west", :mod:`tests.gateway.regions`) are the gateway's upstreams. The
official SDK (streaming and not) makes containers, responses, uploads and follow-ups across
both; each region's own log then shows that not one call naming an object went to the region
that did not make it (:func:`tests.gateway.regions.misroutes`). A region taken down: new work
fails over, calls about its objects get a clear 502 naming it, nothing lands elsewhere, and
once it is back its objects work again. A new gateway on the same store, and two replicas on
one PostgreSQL store, route exactly the same way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from cigate.gateway.settings import GatewaySettings
from cigate.storage.metadata import MetadataStore
from cigate.testing.control import EmulatorControl
from cigate.testing.emulator import TEST_API_KEY
from cigate.testing.services import free_port
from tests.gateway.conftest import Backend, local_backend, make_backend
from tests.gateway.live import (
    CODE_TOOL,
    LiveGateway,
    add_tenant,
    code_input,
    serve_process,
    start_gateway,
)
from tests.gateway.regions import Region, calls_about, misroutes, start_regions, upstreams_toml

pytestmark = [pytest.mark.storage, pytest.mark.sandbox, pytest.mark.slow]

MODEL = "gpt-4.1"


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Region]]:
    started = start_regions(tmp_path_factory.mktemp("regions"), ["east", "west"])
    try:
        yield started
    finally:
        for region in started:
            region.close()


def _settings(regions: list[Region], backend: Backend, tmp: Path) -> GatewaySettings:
    path = tmp / "upstreams.toml"
    path.write_text(upstreams_toml(regions))
    return GatewaySettings(
        upstreams_file=str(path),
        database=backend.database,
        blobs=backend.blobs,
        resume_interval=0.5,
        lease_seconds=3,
        harvest_attempts=3,
        harvest_backoff=0.05,
        upstream_down_seconds=30.0,
        connect_timeout=2.0,
    )


def _sqlite(tmp: Path) -> Backend:
    return local_backend(tmp)


def _region_of(regions: list[Region], object_id: str) -> str:
    """The region whose successful answers carry the id (exactly one)."""
    found = {r.name for r in regions if object_id.encode() in r.issued()}
    assert len(found) == 1, (object_id, found)
    return found.pop()


def _write(name: str, data: bytes) -> str:
    return code_input(f"open('/mnt/data/{name}', 'wb').write({data!r})")


def _respond(client: openai.OpenAI, *, stream: bool, **kw: Any) -> Any:
    if not stream:
        return client.responses.create(model=MODEL, **kw)
    events = list(client.responses.create(model=MODEL, stream=True, **kw))
    assert events[-1].type == "response.completed", events[-1]
    return events[-1].response


def _container_of(response: Any) -> str:
    return next(i.container_id for i in response.output if i.type == "code_interpreter_call")


def _assert_no_misroutes(regions: list[Region], at_least: int) -> int:
    wrong, naming = misroutes(regions)
    assert wrong == [], wrong[:20]
    assert naming >= at_least, naming  # the check looked at real traffic
    return naming


def test_every_call_about_an_object_goes_to_the_region_that_made_it(
    regions: list[Region],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cigate.access")
    settings = _settings(regions, _sqlite(tmp_path), tmp_path)
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    try:
        sdk = gw.openai()
        # New work: responses whose code writes a file, streaming and not; containers; uploads.
        made: dict[str, tuple[Any, bytes]] = {}
        for n in range(4):
            data = f"region-file-{n}-".encode() * (n + 1)
            response = _respond(
                sdk, stream=n % 2 == 0, input=_write(f"f{n}.txt", data), tools=CODE_TOOL
            )
            made[response.id] = (response, data)
        containers = [sdk.containers.create(name=f"c{n}") for n in range(4)]
        uploads = [
            sdk.files.create(file=(f"u{n}.txt", b"upload %d" % n), purpose="assistants")
            for n in range(2)
        ]
        placed = {
            o: _region_of(regions, o)
            for o in [*made, *(c.id for c in containers), *(u.id for u in uploads)]
        }
        # New work is spread: both regions made responses and containers.
        assert {placed[r] for r in made} == {"east", "west"}, placed
        assert {placed[c.id] for c in containers} == {"east", "west"}, placed

        # Every route that names a container, in both regions.
        for container in containers:
            uploaded = sdk.containers.files.create(
                container.id, file=("in.txt", b"in " + container.id.encode())
            )
            assert sdk.containers.retrieve(container.id).id == container.id
            assert [f.id for f in sdk.containers.files.list(container.id)] == [uploaded.id]
            assert (
                sdk.containers.files.retrieve(uploaded.id, container_id=container.id).id
                == uploaded.id
            )
            got = sdk.containers.files.content.retrieve(
                uploaded.id, container_id=container.id
            ).read()
            assert got == b"in " + container.id.encode()
            # A response that runs in this container goes to its region (streaming too).
            follow = _respond(
                sdk,
                stream=True,
                input=_write("more.txt", b"more"),
                tools=[{"type": "code_interpreter", "container": container.id}],
            )
            assert (
                placed.setdefault(follow.id, _region_of(regions, follow.id)) == placed[container.id]
            )
            sdk.containers.files.delete(uploaded.id, container_id=container.id)
        # Every route that names a response; previous_response_id continues in its region.
        for response_id in made:
            assert sdk.responses.retrieve(response_id).id == response_id
            assert sdk.responses.input_items.list(response_id).data
            for stream in (False, True):
                nxt = _respond(
                    sdk, stream=stream, input="and then?", previous_response_id=response_id
                )
                assert _region_of(regions, nxt.id) == placed[response_id]
        # A container made with an uploaded file goes where the file is.
        for upload in uploads:
            container = sdk.containers.create(name="with-file", file_ids=[upload.id])
            assert _region_of(regions, container.id) == placed[upload.id]
            assert sdk.files.retrieve(upload.id).id == upload.id
            # Its bytes through the gateway's Files-API facade: copied from its own region.
            n = uploads.index(upload)
            assert sdk.files.content(upload.id).read() == b"upload %d" % n

        # Objects of two regions in one request: a clear 400, sent nowhere.
        east = next(r for r in made if placed[r] == "east")
        west_container = next(c.id for c in containers if placed[c.id] == "west")
        before = [len(r.tap.calls) for r in regions]
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.responses.create(
                model=MODEL,
                input="mix",
                previous_response_id=east,
                tools=[{"type": "code_interpreter", "container": west_container}],
            )
        message = refused.value.body["message"]  # type: ignore[index]
        assert "different upstreams" in message
        assert "'east'" in message
        assert "'west'" in message
        assert [len(r.tap.calls) for r in regions] == before

        # The listing of containers covers both regions (pages of 2 cross from one to the other).
        mine = {c.id for c in containers} | {_container_of(r) for r, _ in made.values()}
        listed = {c.id for c in sdk.containers.list(limit=2)}
        assert mine <= listed, mine - listed

        # Harvest: every file of every container, in both regions, stored byte for byte.
        for response_id, (_, data) in made.items():
            files = gw.harvested(response_id, at_least=1)
            by_name = {f["filename"].rsplit("/", 1)[-1]: f for f in files}
            row = next(
                f for name, f in by_name.items() if name.endswith(".txt") and name.startswith("f")
            )
            assert row["state"] == "stored", row
            assert gw.http().get(f"/files/{row['id']}/content").content == data
        naming = _assert_no_misroutes(regions, at_least=60)
        # The access line names the upstream that answered each forwarded call.
        access = [r for r in caplog.records if r.name == "cigate.access"]
        assert {getattr(r, "upstream", None) for r in access} >= {"east", "west"}
        with capsys.disabled():
            print(
                f"\nmulti-upstream: {sum(len(r.tap.calls) for r in regions)} upstream calls "
                f"({', '.join(f'{r.name} {len(r.tap.calls)}' for r in regions)}), {naming} "
                "naming an object, 0 in the wrong region"
            )
    finally:
        gw.close()


def test_a_region_down_fails_new_work_over_and_refuses_calls_about_its_objects_clearly(
    regions: list[Region], tmp_path: Path
) -> None:
    settings = _settings(regions, _sqlite(tmp_path), tmp_path)
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    east, west = regions
    try:
        sdk = gw.openai()
        responses = [
            _respond(sdk, stream=False, input=_write(f"d{n}.txt", b"down %d" % n), tools=CODE_TOOL)
            for n in range(2)
        ]
        by_region = {_region_of(regions, r.id): r for r in responses}
        assert set(by_region) == {"east", "west"}
        lost = by_region["west"]
        lost_container = _container_of(lost)
        stored = gw.harvested(lost.id, at_least=1)
        west.door.shut()
        try:
            west_calls = len(west.tap.calls)
            # New work goes to east: uploads (when the tenant's home is west, the streamed
            # upload, refused at connect and none of it read, goes to east), then responses
            # streaming and not, and a container.
            uploads = [
                sdk.files.create(file=(f"w{n}.txt", b"w"), purpose="assistants") for n in range(2)
            ]
            fresh = [
                _respond(sdk, stream=n % 2 == 1, input=_write("x.txt", b"x"), tools=CODE_TOOL)
                for n in range(3)
            ]
            fresh_container = sdk.containers.create(name="while-west-is-down")
            for made in [*(r.id for r in fresh), fresh_container.id, *(u.id for u in uploads)]:
                assert _region_of(regions, made) == "east"
            # Calls about west's objects: a clear 502 naming west, never sent to east.
            attempts = [
                lambda: sdk.responses.retrieve(lost.id),
                lambda: sdk.responses.input_items.list(lost.id),
                lambda: sdk.responses.create(
                    model=MODEL, input="go on", previous_response_id=lost.id
                ),
                lambda: sdk.containers.retrieve(lost_container),
                lambda: sdk.containers.files.create(lost_container, file=("late.txt", b"late")),
                lambda: sdk.responses.create(
                    model=MODEL,
                    input="in it",
                    tools=[{"type": "code_interpreter", "container": lost_container}],
                    stream=True,
                ),
            ]
            for attempt in attempts:
                with pytest.raises(openai.APIStatusError) as failed:
                    attempt()
                assert failed.value.status_code == 502, failed.value
                error = failed.value.body
                assert isinstance(error, dict), error
                assert error["type"] == "server_error", error
                assert error["code"] == "upstream_unavailable", error
                assert "'west'" in error["message"], error
                assert "never sent to another upstream" in error["message"], error
            assert not list(calls_about([east], lost.id))  # not one of them went to east
            assert not list(calls_about([east], lost_container))
            assert len(west.tap.calls) == west_calls  # (the door was shut)
            # What was harvested from west is still served from the store.
            for row in stored:
                assert gw.http().get(f"/files/{row['id']}/content").status_code == 200
        finally:
            west.door.open()
        # West is back: its objects work again, through the same gateway.
        assert sdk.containers.retrieve(lost_container).id == lost_container
        again = _respond(sdk, stream=True, input="and now?", previous_response_id=lost.id)
        assert _region_of(regions, again.id) == "west"
        _assert_no_misroutes(regions, at_least=10)
    finally:
        gw.close()


def _make(gw: LiveGateway) -> list[str]:
    """Two containers and two responses (round robin: one of each per region)."""
    sdk = gw.openai()
    made: list[str] = []
    for n in range(2):
        made.append(sdk.containers.create(name=f"r{n}").id)
        made.append(_respond(sdk, stream=n == 0, input="hello", tools=CODE_TOOL).id)
    return made


def _use(gw: LiveGateway, made: list[str]) -> None:
    _use_with(gw.openai(), made)


def _use_with(sdk: openai.OpenAI, made: list[str]) -> None:
    for object_id in made:
        if object_id.startswith("cntr_"):
            assert sdk.containers.retrieve(object_id).id == object_id
            sdk.containers.files.create(object_id, file=("x.txt", b"x"))
        else:
            assert sdk.responses.retrieve(object_id).id == object_id
            _respond(sdk, stream=True, input="again", previous_response_id=object_id)


def test_a_restarted_gateway_and_two_replicas_on_one_postgresql_store_keep_affinity(
    regions: list[Region],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    backend = make_backend("postgres-azurite", request, tmp_path)
    settings = _settings(regions, backend, tmp_path)
    tenant = add_tenant(settings.database_url, "acme")
    first = start_gateway(settings, tenant)
    second = start_gateway(replace(settings, worker_id="replica-2"), tenant)
    try:
        made = _make(first)
        assert {_region_of(regions, m) for m in made} == {"east", "west"}
        # The other replica (its round robin elsewhere) sends each call where the object is.
        _make(second)
        _use(second, made)
    finally:
        first.close()
        second.close()
    # A new gateway process (`cigate gateway serve`) on the same store: the same answer.
    port = free_port()
    processes.append(
        serve_process(settings, port, tmp_path / "home", upstreams_file=settings.upstreams_file)
    )
    sdk = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/openai/v1/",
        api_key=tenant.key,
        max_retries=0,
        http_client=httpx2.Client(trust_env=False, timeout=60),
    )
    try:
        _use_with(sdk, made)
    finally:
        sdk.close()
    for object_id in made:
        assert {name for name, _ in calls_about(regions, object_id)} == {
            _region_of(regions, object_id)
        }
    _assert_no_misroutes(regions, at_least=20)


def test_a_5xx_or_429_moves_new_work_on_but_is_relayed_for_calls_about_an_object(
    regions: list[Region], tmp_path: Path
) -> None:
    settings = _settings(regions, _sqlite(tmp_path), tmp_path)
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    east, west = regions
    http = httpx2.Client(base_url=east.url, trust_env=False, timeout=30)
    control = EmulatorControl(http)
    try:
        sdk = gw.openai()
        on_east = next(
            r
            for r in (_respond(sdk, stream=False, input="hi", tools=CODE_TOOL) for _ in range(2))
            if _region_of(regions, r.id) == "east"
        )
        control.add_fault(method="POST", path="**/responses", status=503)
        control.add_fault(method="GET", path="**/responses/*", status=429)
        west_before = len(west.tap.calls)
        # New work: east answers 503 before any byte was relayed, so west gets it.
        moved = [_respond(sdk, stream=n == 1, input="new", tools=CODE_TOOL) for n in range(2)]
        assert {_region_of(regions, r.id) for r in moved} == {"west"}
        # A call about east's response: east's own 429, relayed, never asked of west.
        asked_west = len(west.tap.calls)
        with pytest.raises(openai.RateLimitError):
            sdk.responses.retrieve(on_east.id)
        assert len(west.tap.calls) == asked_west
        assert asked_west > west_before
        assert not [c for _, c in calls_about([west], on_east.id)]
    finally:
        control.clear_faults()
        http.close()
        gw.close()
    _assert_no_misroutes(regions, at_least=5)


async def _record_direct(database: str, tenant_id: str, container_id: str, upstream: str) -> str:
    """A response row as a gateway that died before concluding it would have left it."""
    response_id = "resp_" + secrets.token_hex(24)
    async with await MetadataStore.open(database) as meta:
        await meta.record_response(
            tenant_id, response_id, upstream=upstream, model=None, container_ids=[container_id]
        )
    return response_id


def test_the_resume_sweep_lists_and_copies_from_the_region_that_holds_the_container(
    regions: list[Region], tmp_path: Path
) -> None:
    west = regions[1]
    data = b"left behind in the west " * 100
    with httpx2.Client(base_url=west.url, headers={"api-key": TEST_API_KEY}, trust_env=False) as up:
        container = up.post("/openai/v1/containers", json={"name": "orphan"}).json()["id"]
        made = up.post(
            f"/openai/v1/containers/{container}/files", files={"file": ("orphan.bin", data)}
        )
        assert made.status_code == 200, made.text
    settings = replace(_settings(regions, _sqlite(tmp_path), tmp_path), harvest_relist_after=0.0)
    tenant = add_tenant(settings.database_url, "acme")
    response_id = asyncio.run(_record_direct(settings.database_url, tenant.id, container, "west"))
    gw = start_gateway(settings, tenant)  # its sweep concludes what the dead one left
    try:
        (row,) = gw.harvested(response_id, at_least=1)
        assert row["state"] == "stored", row
        assert gw.http().get(f"/files/{row['id']}/content").content == data
    finally:
        gw.close()
    asked = {name for name, _ in calls_about(regions, container)}
    assert asked == {"west"}, asked
    assert {name for name, _ in calls_about(regions, response_id)} == {"west"}
    _assert_no_misroutes(regions, at_least=3)


def test_readiness_stays_ready_while_one_region_answers_and_metrics_name_the_regions(
    regions: list[Region], tmp_path: Path
) -> None:
    east, west = regions
    settings = replace(
        _settings(regions, _sqlite(tmp_path), tmp_path), ready_check_upstream=True, metrics=True
    )
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    try:
        http = gw.http()
        assert http.get("/readyz").json()["checks"]["upstream"] == "ok"
        west.door.shut()
        try:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text  # east still answers
            assert gw.handle.app.state.services.pool.is_down("west")  # type: ignore[attr-defined]
            # New work skips west at once (marked down by the check, not by a failed call).
            made = [
                _respond(gw.openai(), stream=False, input="hi", tools=CODE_TOOL) for _ in range(2)
            ]
            assert {_region_of(regions, r.id) for r in made} == {"east"}
            east.door.shut()
            try:
                assert http.get("/readyz").status_code == 503
            finally:
                east.door.open()
        finally:
            west.door.open()
        scraped = http.get("/metrics").text
        requests = r'cigate_upstream_requests_total\{status="200",upstream="east"\} [1-9]'
        assert re.search(requests, scraped), scraped[-2000:]
        assert 'cigate_upstream_up{upstream="west"}' in scraped
        failures = r'cigate_upstream_failures_total\{reason="readiness",upstream="west"\} [1-9]'
        assert re.search(failures, scraped), scraped[-2000:]
    finally:
        gw.close()


async def _record_before_migration(database: str, tenant_id: str, container_id: str) -> str:
    """A container and a response as a gateway before migration 8 left them: no upstream name
    on the container, the upstream's URL on the response."""
    response_id = "resp_" + secrets.token_hex(24)
    async with await MetadataStore.open(database) as meta:
        await meta.claim(tenant_id, "container", container_id)
        await meta.record_response(
            tenant_id, response_id, upstream="https://old.example", model=None, container_ids=[]
        )
    return response_id


def test_objects_recorded_before_several_upstreams_belong_to_the_first_one(
    regions: list[Region], tmp_path: Path
) -> None:
    east = regions[0]
    with httpx2.Client(base_url=east.url, headers={"api-key": TEST_API_KEY}, trust_env=False) as up:
        container = up.post("/openai/v1/containers", json={"name": "old"}).json()["id"]
    settings = _settings(regions, _sqlite(tmp_path), tmp_path)
    tenant = add_tenant(settings.database_url, "acme")
    old_response = asyncio.run(
        _record_before_migration(settings.database_url, tenant.id, container)
    )
    gw = start_gateway(settings, tenant)
    try:
        sdk = gw.openai()
        for _ in range(2):  # whatever the round robin would say
            assert sdk.containers.retrieve(container).id == container
        with pytest.raises(openai.NotFoundError):  # east's own answer: it never made it
            sdk.responses.retrieve(old_response)
    finally:
        gw.close()
    assert {name for name, _ in calls_about(regions, container)} == {"east"}
    assert {name for name, _ in calls_about(regions, old_response)} == {"east"}


def test_new_work_goes_only_to_the_region_serving_its_model_or_deployment(
    regions: list[Region], tmp_path: Path
) -> None:
    east, west = regions
    listed = tmp_path / "models.toml"
    listed.write_text(
        f'[[upstreams]]\nname = "east"\nurl = "{east.url}"\nkey = "{TEST_API_KEY}"\n'
        'models = ["gpt-4.1"]\n'
        f'[[upstreams]]\nname = "west"\nurl = "{west.url}"\nkey = "{TEST_API_KEY}"\n'
        'models = ["o4-mini"]\n'
    )
    settings = replace(_settings(regions, _sqlite(tmp_path), tmp_path), upstreams_file=str(listed))
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    try:
        sdk = gw.openai()
        for model, region in (("gpt-4.1", "east"), ("o4-mini", "west")):
            made = [sdk.responses.create(model=model, input="hi") for _ in range(2)]
            assert {_region_of(regions, r.id) for r in made} == {region}
        west_before = len(west.tap.calls)
        chat = gw.http().post(
            "/openai/deployments/o4-mini/chat/completions?api-version=2025-04-01-preview",
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200, chat.text
        assert len(west.tap.calls) == west_before + 1
        with pytest.raises(openai.NotFoundError, match="not served by any upstream"):
            sdk.responses.create(model="gpt-5", input="hi")
        # Work that names no model goes to either region.
        made = [sdk.containers.create(name=f"m{n}").id for n in range(2)]
        assert {_region_of(regions, c) for c in made} == {"east", "west"}
    finally:
        gw.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Assistants API
def test_assistants_threads_and_runs_of_a_tenant_meet_on_one_region(
    regions: list[Region], tmp_path: Path
) -> None:
    settings = _settings(regions, _sqlite(tmp_path), tmp_path)
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    try:
        for name in ("t1", "t2", "t3", "t4"):
            sdk = gw.openai(gw.add_tenant(name))
            assistant = sdk.beta.assistants.create(model=MODEL)
            thread = sdk.beta.threads.create()
            sdk.beta.threads.messages.create(thread.id, role="user", content="hi")
            run = sdk.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=assistant.id
            )
            assert run.status == "completed", run
            other = sdk.beta.threads.create_and_run_poll(assistant_id=assistant.id)
            assert other.status == "completed", other
            placed = {
                _region_of(regions, i) for i in (assistant.id, thread.id, run.id, other.thread_id)
            }
            assert len(placed) == 1, placed
        _assert_no_misroutes(regions, at_least=10)
    finally:
        gw.close()


def test_with_tenant_balancing_a_tenants_new_objects_share_its_home_region(
    regions: list[Region], tmp_path: Path
) -> None:
    settings = replace(_settings(regions, _sqlite(tmp_path), tmp_path), upstream_balance="tenant")
    gw = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    try:
        sdk = gw.openai()
        made = [sdk.containers.create(name=f"h{n}").id for n in range(3)]
        made += [sdk.files.create(file=("h.txt", b"h"), purpose="assistants").id for _ in range(2)]
        made += [sdk.responses.create(model=MODEL, input="hi").id for _ in range(2)]
        assert len({_region_of(regions, m) for m in made}) == 1
        # So a response can use a file and a container made separately.
        file_id, container = made[3], made[0]
        response = sdk.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [{"type": "input_file", "file_id": file_id}]}],
            tools=[{"type": "code_interpreter", "container": container}],
        )
        assert _region_of(regions, response.id) == _region_of(regions, container)
    finally:
        gw.close()
