"""Tenant isolation of a gateway in ``self`` mode, generated from its route table.

The same attack as ``test_isolation.py`` (every route x every binding of tenant A's ids x every
verb, every canonical spelling and a sixth of the others, over a raw socket, judged by
:func:`tests.gateway.isolation.leak`), on a gateway whose containers are its own: A's explicit
container, its upload, A's auto container and the file its code wrote are the self-hosted
interpreter's. Nothing of A's may leak or change, nothing naming A's objects may reach the
upstream, and A keeps every canonical read. SQLite + disk only (the storage backends are covered
by the upstream-mode test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.testing.plugin import RunningEmulator, current_mode
from cigate.testing.rawhttp import RawClient
from tests.gateway.conftest import live_settings, local_backend
from tests.gateway.isolation import MODEL, VERBS, Case, World, cases, leak
from tests.gateway.live import LiveGateway, add_tenant, code_input, start_gateway
from tests.gateway.selfhosted import interpreter, self_settings
from tests.gateway.test_isolation import _count_upstream, _make_world

pytestmark = [
    pytest.mark.storage,
    pytest.mark.sandbox,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # the Assistants API of A's world
]


def _snapshot(gw: LiveGateway, w: World) -> dict[str, Any]:
    """Everything of A's, as A sees it through the gateway (its containers are the gateway's)."""
    http, anonymous = gw.http(), gw.raw_http()

    def read(client: Any, url: str) -> tuple[int, Any]:
        r = client.get(url)
        json_body = r.headers.get("content-type", "").startswith("application/json")
        return r.status_code, r.json() if json_body else r.content

    a = w.a
    v1 = "/openai/v1"
    out: dict[str, Any] = {}
    for key in ("container", "auto_container"):
        out[key] = read(http, f"{v1}/containers/{a[key]}")
        status, body = read(http, f"{v1}/containers/{a[key]}/files")
        out[f"{key}.files"] = (status, sorted(str((f["id"], f["path"])) for f in body["data"]))
    out["upload"] = read(
        http, f"{v1}/containers/{a['container']}/files/{a['container_file']}/content"
    )
    out["generated"] = read(
        http, f"{v1}/containers/{a['auto_container']}/files/{a['generated_file']}/content"
    )
    out["response"] = read(http, f"{v1}/responses/{a['response']}")
    out["gateway.rows"] = read(http, f"/responses/{a['response']}/files")
    out["gateway.content"] = read(http, f"/files/{a['gateway_file']}/content")
    link = f"/links/{a['link']}?expires={w.link_expires}&signature={w.link_signature}"
    out["link"] = read(anonymous, gw.url + link)
    return out


def _last_active(gw: LiveGateway, w: World) -> dict[str, float]:
    backend = interpreter(gw).containers
    return {
        key: backend.get(w.a[key], allow_expired=True).last_active_at
        for key in ("container", "auto_container")
    }


@pytest.fixture(scope="module")
def attacked(
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[tuple[LiveGateway, RunningEmulator, World]]:
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    emulator.control.reset()
    tmp = tmp_path_factory.mktemp("self-isolation")
    backend = local_backend(tmp)
    settings = self_settings(live_settings(emulator, backend), Path(tmp))
    gw = start_gateway(settings, add_tenant(settings.database_url, "a"))
    try:
        world = _make_world(gw, emulator, project_upstream=False)
        assert interpreter(gw).knows(world.a["container"])
        assert interpreter(gw).knows(world.a["auto_container"])
        yield gw, emulator, world
    finally:
        emulator.control.clear_faults()
        gw.close()
        emulator.close()


def test_tenant_b_gets_nothing_of_tenant_as_self_hosted_objects(
    attacked: tuple[LiveGateway, RunningEmulator, World],
    capsys: pytest.CaptureFixture[str],
    record_property: Any,
) -> None:
    gw, emulator, w = attacked
    routes = list(gw.handle.app.routes)  # type: ignore[attr-defined]
    # Every canonical case, a sixth of the other spellings: the spellings are refused by the
    # edge before any route, which test_isolation.py attacks in full.
    attack = sorted(cases(routes, w, every=6), key=lambda c: VERBS.index(c.method))
    before = _snapshot(gw, w)
    active = _last_active(gw, w)
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
    after_active = _last_active(gw, w)
    after = _snapshot(gw, w)
    changed = sorted(k for k in before if before[k] != after[k])
    control = [c for c in attack if c.owner_reads]
    denied: list[tuple[Case, int]] = []
    with RawClient(gw.handle.host, gw.handle.port) as raw:
        for case in control:
            answer = raw.request(
                case.method, case.target, headers={"authorization": f"Bearer {gw.tenant.key}"}
            )
            if not 200 <= answer.status < 300:
                denied.append((case, answer.status))
    with capsys.disabled():
        print(
            f"\nself-hosted isolation: tenant B sent {len(attack)} requests in {seconds:.1f}s "
            f"({len({c.route for c in attack})} routes): {len(leaks)} leaks, {len(errors)} 5xx, "
            f"{sum(reached.values())} reached the upstream naming A's objects, "
            f"{len(changed)} of A's objects changed; tenant A's {len(control)} canonical "
            f"reads: {len(control) - len(denied)} succeeded"
        )
        for c, status in denied[:20]:
            print(f"  A was refused: {c.method} {c.target!r} -> {status}")
    record_property("requests_tried", len(attack))
    assert leaks == [], (len(leaks), [(c.method, c.target, s, why) for c, s, why in leaks[:15]])
    assert errors == [], (len(errors), [(c.method, c.target, s, b) for c, s, b in errors[:10]])
    assert reached == {}, reached
    assert changed == [], {k: (before[k], after[k]) for k in changed}
    assert after_active == active
    assert denied == [], [(c.method, c.target, s) for c, s in denied[:40]]
    assert len(control) > 50
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
