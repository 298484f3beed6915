"""Tenant isolation, attacked the way an attacker would: generated from the route table.

Tenant A makes one of everything through the gateway (a container with an upload, a response
whose code wrote a file into an auto container, a Files-API file, an assistant, a thread with a
completed run, a signed link), every file holding one secret. Tenant B then sends every route
x every binding of A's ids x every verb x every spelling (:mod:`tests.gateway.isolation`) over
a raw socket, to the real gateway in front of the emulator, and:

* no answer to B carries A's secret, an id of A's that B did not send, or a success for a
  request naming A's objects, and none is a 5xx;
* nothing of A's changed (containers, their files and last activity, the Files-API file, the
  response, the assistant, the thread and its messages and runs, the gateway's records and the
  signed link) and no request naming A's objects reached the upstream (pass-through fault
  rules on the emulator count them; POSTs that create or run anything are counted too; ids
  of objects inside a parent, such as A's file under B's own container, go up and are refused
  by the upstream's pairing check, see ``_PARENTS``);
* A itself gets a 2xx for every canonical read the same generation produces, and can still
  run code in and delete its container, so the test cannot pass by refusing everything.

The full matrix runs on SQLite + disk; PostgreSQL + Azurite gets every canonical case and a
sixth of the other spellings. A third world puts the gateway in front of a Foundry project
endpoint of the emulator (``/api/projects/proj``), so A's canonical reads through the project
routes must succeed and B's fail (every canonical case, a sixth of the other spellings); in
the first two, every project path is refused outright. A fourth gives the gateway two
configured upstreams (both the emulator, so the checks above still see every object): A's
objects are spread over them and every call is routed through the affinity lookup (every
canonical case, a sixth of the other spellings). The numbers are printed (requests tried,
leaks, 5xx).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai
import pytest

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.storage.metadata import MetadataStore
from cigate.testing.plugin import RunningEmulator, current_mode
from cigate.testing.rawhttp import RawClient
from tests.gateway.conftest import live_settings, make_backend
from tests.gateway.isolation import MODEL, PROJECT, VERBS, Case, World, cases, leak
from tests.gateway.live import LiveGateway, add_tenant, code_input, start_gateway

pytestmark = [
    pytest.mark.storage,
    pytest.mark.sandbox,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

#: Sample of non-canonical cases per world (1: all of them); ``+project``: the upstream is
#: the emulator's Foundry project endpoint; ``+two``: two configured upstreams.
EVERY = {"sqlite-disk": 1, "postgres-azurite": 6, "sqlite-disk+project": 6, "sqlite-disk+two": 6}


def _make_world(gw: LiveGateway, emulator: RunningEmulator, project_upstream: bool) -> World:
    """A's objects, made through the gateway with the official SDK, and B's own few."""
    secret = f"SECRET-A-{uuid.uuid4().hex}".encode()
    a = gw.openai()
    b_tenant = gw.add_tenant("b")
    b = gw.openai(b_tenant)
    uploaded = a.files.create(file=("a-secret.txt", secret), purpose="assistants")
    container = a.containers.create(name="a-c1")
    upload = a.containers.files.create(container.id, file=("a-up.txt", secret))
    cell = f"open('/mnt/data/a-gen.txt', 'wb').write({secret!r})"
    response = a.responses.create(
        model=MODEL,
        input=code_input(cell),
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    )
    harvested = gw.harvested(response.id, at_least=1)
    generated = next(f for f in harvested if f["filename"].endswith("a-gen.txt"))
    item = a.responses.input_items.list(response.id).data[0]
    assistant = a.beta.assistants.create(
        model=MODEL,
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
    )
    thread = a.beta.threads.create(messages=[{"role": "user", "content": code_input("1+1")}])
    run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    message = a.beta.threads.messages.list(thread_id=thread.id).data[0]
    step = a.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
    conversation = a.conversations.create(
        items=[{"type": "message", "role": "user", "content": secret.decode()}]
    )
    conversation_item = a.conversations.items.list(conversation.id).data[0]
    agent = "agent-a"
    if project_upstream:  # agents v2 live on a project only
        tool = {
            "type": "code_interpreter",
            "container": {"type": "auto", "file_ids": [uploaded.id]},
        }
        made = gw.http().post(
            f"{PROJECT}/agents/{agent}/versions?api-version=v1",
            json={"definition": {"kind": "prompt", "model": MODEL, "tools": [tool]}},
        )
        assert made.status_code == 200, made.text
    link = gw.http().post(f"/files/{generated['id']}/links", json={"expires_in": 3600}).json()
    query = dict(p.split("=", 1) for p in link["url"].split("?", 1)[1].split("&"))
    ids = {
        "files_api_file": uploaded.id,
        "container": container.id,
        "container_file": upload.id,
        "response": response.id,
        "auto_container": generated["container_id"],
        "generated_file": generated["upstream_file_id"],
        "gateway_file": generated["id"],
        "input_item": item.id,
        "assistant": assistant.id,
        "thread": thread.id,
        "run": run.id,
        "message": message.id,
        "step": step.id,
        "link": link["id"],
        "conversation": conversation.id,
        "conversation_item": conversation_item.id,
        "agent": agent,
    }
    mine = {
        "container": b.containers.create(name="b-own").id,
        "thread": b.beta.threads.create().id,
        "assistant": b.beta.assistants.create(model=MODEL).id,
        "conversation": b.conversations.create().id,
        "key": b_tenant.key,
    }
    _settle(gw, response.id, run.id)
    return World(ids, secret, mine, int(query["expires"]), query["signature"], project_upstream)


def _settle(gw: LiveGateway, *response_ids: str) -> None:
    """Wait until no harvest of A's is pending, so nothing of A's is fetched during the attack."""
    for response_id in response_ids:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = gw.http().get(f"/responses/{response_id}/files").json().get("data", [])
            if all(r["state"] != "pending" for r in rows):
                break
            time.sleep(0.1)


async def _placed(database: str, w: World) -> dict[Any, str | None]:
    keys = ("container", "auto_container", "response", "files_api_file", "assistant", "thread")
    kinds = ("container", "container", "response", "file", "assistant", "thread")
    async with await MetadataStore.open(database) as meta:
        return await meta.placements([(k, w.a[key]) for k, key in zip(kinds, keys, strict=True)])


def _snapshot(emulator: RunningEmulator, gw: LiveGateway, w: World) -> dict[str, Any]:
    """Everything of A's, as the upstream (the emulator's own key) and the gateway see it."""
    up = emulator.http_client(headers={**emulator.auth_headers, "OpenAI-Beta": "assistants=v2"})
    http, anonymous = gw.http(), gw.raw_http()

    def read(client: Any, url: str) -> tuple[int, Any]:
        r = client.get(url)
        json_body = r.headers.get("content-type", "").startswith("application/json")
        return r.status_code, r.json() if json_body else r.content

    def ids(client: Any, url: str) -> Any:
        status, body = read(client, url)
        rows = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(rows, list):
            return status, body
        keep = ("id", "path", "status", "metadata", "state", "sha256")
        return sorted(str({k: r.get(k) for k in keep}) for r in rows)

    a = w.a
    v1 = "/openai/v1"
    out: dict[str, Any] = {}
    for key in ("container", "auto_container"):
        out[key] = read(up, f"{v1}/containers/{a[key]}")
        out[f"{key}.files"] = ids(up, f"{v1}/containers/{a[key]}/files")
    out["container_file"] = read(
        up, f"{v1}/containers/{a['container']}/files/{a['container_file']}/content"
    )
    out["files_api_file"] = read(up, f"{v1}/files/{a['files_api_file']}")
    out["files_api_file.content"] = read(up, f"{v1}/files/{a['files_api_file']}/content")
    out["response"] = read(up, f"{v1}/responses/{a['response']}")
    out["assistant"] = read(up, f"{v1}/assistants/{a['assistant']}")
    out["thread"] = read(up, f"{v1}/threads/{a['thread']}")
    out["thread.messages"] = ids(up, f"{v1}/threads/{a['thread']}/messages")
    out["thread.runs"] = ids(up, f"{v1}/threads/{a['thread']}/runs")
    out["conversation"] = read(up, f"{v1}/conversations/{a['conversation']}")
    out["conversation.items"] = ids(up, f"{v1}/conversations/{a['conversation']}/items")
    out["agent"] = read(up, f"{PROJECT}/agents/{a['agent']}?api-version=v1")
    out["agent.versions"] = ids(up, f"{PROJECT}/agents/{a['agent']}/versions?api-version=v1")
    out["gateway.rows"] = ids(http, f"/responses/{a['response']}/files")
    out["gateway.content"] = read(http, f"/files/{a['gateway_file']}/content")
    link = f"/links/{a['link']}?expires={w.link_expires}&signature={w.link_signature}"
    out["link"] = read(anonymous, gw.url + link)
    return out


def _last_active(emulator: RunningEmulator, w: World) -> dict[str, float | None]:
    """Containers' last activity, read from the backend without touching it."""
    backend = emulator.backends.containers
    out: dict[str, float | None] = {}
    for key in ("container", "auto_container"):
        try:
            out[key] = backend.get(w.a[key], allow_expired=True).last_active_at
        except Exception:  # deleted: the comparison below reports it
            out[key] = None
    return out


#: Pass-through rules: a POST that creates or runs something, whatever it names.
_RUNS = [
    "**/responses",
    "**/containers",
    "**/threads",
    "**/threads/runs",
    "**/assistants",
    "**/conversations",
]
#: A's objects that own others (the gateway checks these; everything under them is theirs).
#: Container files, messages, runs and steps are only reachable through their parent: under
#: B's own container or thread they do go up, and the upstream's own pairing check refuses
#: them (the leak and snapshot checks prove nothing came back and nothing changed).
_PARENTS = (
    "container",
    "auto_container",
    "files_api_file",
    "response",
    "assistant",
    "thread",
    "conversation",
    "agent",
)


def _count_upstream(emulator: RunningEmulator, w: World) -> None:
    for key in (*_PARENTS, "gateway_file", "link"):
        emulator.control.add_fault(path=f"**{w.a[key]}**")
    for path in _RUNS:
        emulator.control.add_fault(path=path, method="POST")


@pytest.fixture(scope="module", params=list(EVERY))
def attacked(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[tuple[str, LiveGateway, RunningEmulator, World]]:
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    kind, _, upstream = request.param.partition("+")
    backend = make_backend(kind, request, tmp_path_factory.mktemp("isolation"))
    settings = live_settings(emulator, backend)
    if upstream == "project":
        settings = replace(settings, upstream=f"{emulator.base_url}{PROJECT}")
    if upstream == "two":
        listed = tmp_path_factory.mktemp("upstreams") / "upstreams.toml"
        listed.write_text(
            "".join(
                f'[[upstreams]]\nname = "{name}"\nurl = "{emulator.base_url}"\n'
                f'key = "{emulator.api_key}"\n'
                for name in ("one", "two")
            )
        )
        settings = replace(settings, upstream="", upstream_key="", upstreams_file=str(listed))
    gw = start_gateway(settings, add_tenant(settings.database_url, "a"))
    try:
        world = _make_world(gw, emulator, upstream == "project")
        if upstream == "two":  # A's objects are on both upstreams
            assert set(asyncio.run(_placed(settings.database_url, world)).values()) == {
                "one",
                "two",
            }
        yield request.param, gw, emulator, world
    finally:
        emulator.control.clear_faults()
        gw.close()
        emulator.close()


def test_tenant_b_gets_nothing_of_tenant_a_by_any_route_verb_or_spelling(
    attacked: tuple[str, LiveGateway, RunningEmulator, World],
    capsys: pytest.CaptureFixture[str],
    record_property: Any,
) -> None:
    backend, gw, emulator, w = attacked
    routes = list(gw.handle.app.routes)  # type: ignore[attr-defined]
    # Reads first, then writes, deletes last: every kind of harm gets its chance on live objects.
    attack = sorted(cases(routes, w, every=EVERY[backend]), key=lambda c: VERBS.index(c.method))
    before = _snapshot(emulator, gw, w)
    active = _last_active(emulator, w)
    _count_upstream(emulator, w)

    leaks: list[tuple[Case, int, str]] = []
    errors: list[tuple[Case, int, bytes]] = []
    b_headers = {"authorization": f"Bearer {w.b['key']}"}
    started = time.monotonic()
    with RawClient(gw.handle.host, gw.handle.port) as raw:
        for case in attack:
            answer = raw.request(
                case.method, case.target, headers={**b_headers, **case.headers}, body=case.body
            )
            if answer.status >= 500:
                errors.append((case, answer.status, answer.body[:300]))
            elif why := leak(case, answer, w):
                leaks.append((case, answer.status, why))
    seconds = time.monotonic() - started

    reached = {f["path"]: f["fired"] for f in emulator.control.faults() if f["fired"]}
    emulator.control.clear_faults()
    after_active = _last_active(emulator, w)
    after = _snapshot(emulator, gw, w)
    changed = sorted(k for k in before if before[k] != after[k])

    control = [c for c in attack if c.owner_reads]
    denied: list[tuple[Case, int]] = []
    a_headers = {"authorization": f"Bearer {gw.tenant.key}"}
    with RawClient(gw.handle.host, gw.handle.port) as raw:
        for case in control:
            answer = raw.request(case.method, case.target, headers=a_headers)
            if not 200 <= answer.status < 300:
                denied.append((case, answer.status))
    with capsys.disabled():
        print(
            f"\nisolation [{backend}]: tenant B sent {len(attack)} requests in {seconds:.1f}s "
            f"({len({c.route for c in attack})} routes): {len(leaks)} leaks, {len(errors)} 5xx, "
            f"{sum(reached.values())} reached the upstream naming A's objects, "
            f"{len(changed)} of A's objects changed; tenant A's {len(control)} canonical "
            f"reads: {len(control) - len(denied)} succeeded"
        )
        if leaks:
            kinds = Counter(why.split(" [")[0].split(" on ")[-1] for _, _, why in leaks)
            spelt = Counter(c.spelling for c, _, _ in leaks)
            print(f"  leaks by kind: {dict(kinds)}")
            print(f"  leaks by spelling: {dict(spelt.most_common())}")
            print(f"  leaks by verb: {dict(Counter(c.method for c, _, _ in leaks))}")
            for c, status, why in leaks[:: max(1, len(leaks) // 12)]:
                print(f"  e.g. {c.method} {c.target!r} -> {status}: {why}")
        for c, status, body in errors[:: max(1, len(errors) // 6)]:
            print(f"  5xx e.g. {c.method} {c.target!r} -> {status}: {body[:120]!r}")
        if changed or reached:
            print(f"  changed: {changed}; reached the upstream: {reached}")
        for c, status in denied:
            print(f"  A was refused: {c.method} {c.target!r} -> {status}")
    record_property("requests_tried", len(attack))
    record_property("leaks", len(leaks))
    record_property("server_errors", len(errors))
    shown = [(c.method, c.target, c.spelling, s, why) for c, s, why in leaks[:15]]
    assert leaks == [], (len(leaks), shown)
    assert errors == [], (len(errors), [(c.method, c.target, s, b) for c, s, b in errors[:10]])
    assert reached == {}, reached
    assert changed == [], {k: (before[k], after[k]) for k in changed}
    assert after_active == active
    assert denied == [], [(c.method, c.target, s) for c, s in denied[:40]]
    assert len(control) > 50
    # With a project upstream, A's reads through the project routes are part of the control.
    through_projects = sum(c.target.startswith(b"/api/projects/") for c in control)
    assert (through_projects > 50) == w.project_upstream, through_projects
    # Every route of the app was attacked (the health checks hold nothing of anyone's).
    assert {c.route for c in attack} == {r.path for r in routes} - {
        "/healthz",
        "/readyz",
        "/metrics",
    }
    # And A can still use its objects in ways B was refused: run code, delete.
    a = gw.openai()
    ran = a.responses.create(
        model=MODEL,
        input=code_input("print('mine')"),
        tools=[{"type": "code_interpreter", "container": w.a["container"]}],
    )
    assert ran.status == "completed"
    a.containers.delete(w.a["container"])
    with pytest.raises(openai.NotFoundError):
        a.containers.retrieve(w.a["container"])
