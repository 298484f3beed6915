"""``run``/``arun`` end to end against the emulator: the scripted model runs the prompt's code."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cigate
from cigate.cli import main
from cigate.client._config import ClientConfig, resolve_config
from cigate.client._responses import arun, download, run
from cigate.client._results import DownloadResult
from cigate.exceptions import UpstreamUnavailableError
from cigate.harvest.refs import FileRef
from cigate.testing.plugin import RunningEmulator

from .conftest import leftovers

MODEL = "gpt-4.1"
PROMPT = """Make a chart and a table.

```python
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9])
plt.savefig("/mnt/data/chart.png")
open("/mnt/data/table.csv", "w").write("x,y\\n1,1\\n2,4\\n3,9\\n")
```
"""


class Recorder:
    """A RunObserver that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def step(self, number: int, total: int, text: str) -> None:
        self.events.append(("step", number))

    def code_delta(self, item_id: str, delta: str) -> None:
        self.events.append(("code_delta", delta))

    def code_done(self, item_id: str, code: str) -> None:
        self.events.append(("code_done", code))

    def warning(self, text: str) -> None:
        self.events.append(("warning", text))

    def started(self, ref: FileRef, total: int | None) -> None:
        self.events.append(("started", ref.filename))

    def advanced(self, ref: FileRef, nbytes: int) -> None:
        self.events.append(("advanced", nbytes))

    def finished(self, result: DownloadResult) -> None:
        self.events.append(("finished", result.ref.filename))

    def kinds(self, kind: str) -> list[Any]:
        return [value for k, value in self.events if k == kind]


def _check_saved(results: list[DownloadResult], out: Path) -> None:
    for r in results:
        assert r.ok, r.error
        assert r.path is not None
        assert r.path.parent == out
        assert hashlib.sha256(r.path.read_bytes()).hexdigest() == r.sha256
    assert leftovers(out) == []


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "not-streaming"])
def test_a_run_downloads_every_cited_file_and_rewrites_the_links(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path, stream: bool
) -> None:
    recorder = Recorder()
    result = run(PROMPT, model=MODEL, config=config, out=tmp_path, stream=stream, observer=recorder)
    assert result.status == "completed"
    assert result.response_id is not None
    assert result.response_id.startswith("resp_")
    assert sorted(r.ref.filename for r in result.results) == ["chart.png", "table.csv"]
    assert {r.ref.source for r in result.results} == {"citation"}
    _check_saved(result.results, tmp_path)
    assert (tmp_path / "table.csv").read_text() == "x,y\n1,1\n2,4\n3,9\n"
    assert next(r for r in result.results if r.ref.filename == "chart.png").content_type == (
        "image/png"
    )
    assert "sandbox:" not in result.local_text
    assert str(tmp_path / "chart.png") in result.local_text
    assert recorder.kinds("step") == [1, 2, 3, 4, 5]
    assert "plt.savefig" in recorder.kinds("code_done")[0]
    if stream:
        assert recorder.kinds("code_delta"), "the code streams live"
    assert "<img src='data:image/png;base64," in result._repr_html_()


async def test_the_async_twin_runs_with_an_entra_id_token(
    emulator: RunningEmulator, entra_config: ClientConfig, tmp_path: Path
) -> None:
    result = await arun(PROMPT, model=MODEL, config=entra_config, out=tmp_path)
    assert sorted(p.name for p in result.paths) == ["chart.png", "table.csv"]


def test_input_files_are_uploaded_and_not_downloaded_back(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    data = tmp_path / "numbers.csv"
    data.write_text("n\n1\n2\n3\n")
    prompt = """Sum the numbers.

```python
import glob
src = glob.glob("/mnt/data/*numbers.csv")[0]
total = sum(int(x) for x in open(src).read().split()[1:])
open("/mnt/data/total.txt", "w").write(str(total))
```
"""
    out = tmp_path / "out"
    result = run(prompt, files=[data], model=MODEL, config=config, out=out)
    assert [r.ref.filename for r in result.results] == ["total.txt"]
    assert (out / "total.txt").read_text() == "6"
    assert result.container_ids


def test_files_the_answer_never_cited_are_found_by_listing_the_container(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    client = emulator.openai()
    cid = client.containers.create(name="reused").id
    earlier = "```python\nopen('/mnt/data/earlier.csv', 'w').write('a\\n1\\n')\n```"
    client.responses.create(
        model=MODEL, input=earlier, tools=[{"type": "code_interpreter", "container": cid}]
    )
    later = "```python\nopen('/mnt/data/later.txt', 'w').write('later')\n```"
    result = run(later, model=MODEL, container=cid, config=config, out=tmp_path)
    sources = {r.ref.filename: r.ref.source for r in result.results}
    assert sources == {"later.txt": "citation", "earlier.csv": "listing"}
    assert (tmp_path / "earlier.csv").read_text() == "a\n1\n"
    _check_saved(result.results, tmp_path)


HOSTILE = [
    "x\\\\..\\\\..\\\\evil.txt",  # a backslash is a plain character on Linux
    "bell\\x07and\\x1bescape.txt",
    "x" * 240 + ".txt",
    "CON.txt",
    "aux",
    " .hidden-ish. ",
]


def test_hostile_names_written_by_code_stay_inside_the_output_directory(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    lines = "\n".join(f"open('/mnt/data/' + '{n}', 'w').write('x')" for n in HOSTILE)
    prompt = f"```python\n{lines}\n```"
    out = tmp_path / "out"
    result = run(prompt, model=MODEL, config=config, out=out)
    assert len(result.results) == len(HOSTILE)
    _check_saved(result.results, out)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    names = sorted(os.listdir(out))
    assert all(len(n.encode()) <= 200 for n in names)
    assert all(not any(ord(c) < 32 for c in n) for n in names)
    assert "CON.txt" not in names
    assert "aux" not in names
    assert not any(n.startswith(".") for n in names)


def test_a_hostile_citation_filename_cannot_escape_the_output_directory(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    from .conftest import upload

    real = upload(emulator, "a.txt", b"payload")
    evil = FileRef(file_id=real.file_id, filename="../../evil.txt", container_id=real.container_id)
    out = tmp_path / "out"
    [result] = download([evil], out=out, config=config).results
    assert result.ok, result.error
    assert result.path == out / "evil.txt"
    assert result.original_name == "../../evil.txt"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_run_whose_downloads_fail_reports_them_and_keeps_no_partial_file(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    emulator.control.switch("download-500")
    result = run(PROMPT, model=MODEL, config=config, out=tmp_path)
    assert result.status == "completed"
    assert result.results
    assert all(isinstance(r.error, UpstreamUnavailableError) for r in result.results)
    assert leftovers(tmp_path) == []
    assert not tmp_path.exists() or os.listdir(tmp_path) == []
    with pytest.raises(UpstreamUnavailableError):
        result.raise_for_errors()


def test_cigate_run_prints_the_files_as_json(emulator: RunningEmulator, tmp_path: Path) -> None:
    env = {"CIGATE_ENDPOINT": emulator.base_url, "CIGATE_API_KEY": emulator.api_key}
    args = ["run", PROMPT, "--model", MODEL, "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(f["filename"] for f in data["files"]) == ["chart.png", "table.csv"]
    assert all(Path(f["path"]).exists() for f in data["files"])
    assert "[3/5]" in result.stderr


def test_cigate_run_keeps_every_file_of_a_foundry_project_endpoint(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """The documented project URL (no ``/openai/v1``): its OpenAI v1 surface, every file."""
    env = {
        "CIGATE_ENDPOINT": emulator.project_url("proj", tls=False),
        "CIGATE_API_KEY": emulator.api_key,
    }
    args = ["run", PROMPT, "--model", MODEL, "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(f["filename"] for f in data["files"]) == ["chart.png", "table.csv"]
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "table.csv").read_text() == "x,y\n1,1\n2,4\n3,9\n"
    assert "/api/projects/proj/openai/v1/" in result.stderr + result.stdout


def test_cigate_run_agent_runs_a_foundry_agent_and_keeps_every_file(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """``--agent NAME``: the agent's model and code interpreter, no model given; every file."""
    definition = {
        "kind": "prompt",
        "model": MODEL,
        "instructions": "Run the code.",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
    }
    with emulator.http_client(headers=emulator.auth_headers) as http:
        made = http.post(
            "/api/projects/proj/agents/Charts/versions?api-version=v1",
            json={"definition": definition},
        )
        assert made.status_code == 200, made.text
    env = {
        "CIGATE_ENDPOINT": emulator.project_url("proj", tls=False),
        "CIGATE_API_KEY": emulator.api_key,
    }
    args = ["run", PROMPT, "--agent", "Charts", "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(f["filename"] for f in data["files"]) == ["chart.png", "table.csv"]
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert "agent Charts" in result.stderr


@pytest.mark.parametrize(
    "extra",
    [["--model", MODEL], ["--instructions", "x"], ["--container", "cntr_1"]],
    ids=["model", "instructions", "container"],
)
def test_cigate_run_agent_refuses_what_the_agent_brings_itself(
    emulator: RunningEmulator, tmp_path: Path, extra: list[str]
) -> None:
    env = {"CIGATE_ENDPOINT": emulator.project_url("p", tls=False), "CIGATE_API_KEY": "k"}
    args = ["run", "hi", "--agent", "Charts", "--out", str(tmp_path), *extra]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code != 0
    assert "brings its own model" in result.output


def test_cigate_run_prints_the_answer_and_a_table(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    env = {"CIGATE_ENDPOINT": emulator.base_url, "CIGATE_API_KEY": emulator.api_key}
    args = ["run", PROMPT, "--model", MODEL, "--out", str(tmp_path), "--no-stream"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "chart.png" in result.stdout
    assert "sha256" in result.stdout


def test_cigate_demo_saves_the_chart_and_the_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    names = sorted(f["filename"] for f in json.loads(result.stdout)["files"])
    assert names == ["contoso_operating_profit.png", "operating_profit_by_sector.csv"]
    assert (tmp_path / "contoso_operating_profit.png").read_bytes().startswith(b"\x89PNG")
    summary = (tmp_path / "operating_profit_by_sector.csv").read_text().splitlines()
    assert summary[0] == "sector,operating_profit"
    assert summary[1].startswith("FINANCIALS,")


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "not-streaming"])
def test_an_incomplete_response_warns_and_still_saves_every_file(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path, stream: bool
) -> None:
    """The budget goes on the code, so the answer (and its citations) never comes; the
    listing still finds both files."""
    recorder = Recorder()
    result = run(
        PROMPT,
        model=MODEL,
        config=config,
        out=tmp_path,
        stream=stream,
        observer=recorder,
        max_output_tokens=16,
    )
    assert result.status == "incomplete"
    assert result.text == ""
    assert sorted(r.ref.filename for r in result.results) == ["chart.png", "table.csv"]
    assert {r.ref.source for r in result.results} == {"listing"}
    _check_saved(result.results, tmp_path)
    (warning,) = recorder.kinds("warning")
    assert warning.startswith("the response ended incomplete (max_output_tokens)")
    assert "raise --max-output-tokens" in warning


def test_cigate_run_passes_max_output_tokens_and_refuses_too_small_a_value(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    env = {"CIGATE_ENDPOINT": emulator.base_url, "CIGATE_API_KEY": emulator.api_key}
    args = ["run", PROMPT, "--model", MODEL, "--out", str(tmp_path), "--json"]
    ok = CliRunner().invoke(main, [*args, "--max-output-tokens", "16"], env=env)
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["status"] == "incomplete"
    assert sorted(f["filename"] for f in data["files"]) == ["chart.png", "table.csv"]
    assert "the response ended incomplete (max_output_tokens)" in ok.stderr
    small = CliRunner().invoke(main, [*args, "--max-output-tokens", "8"], env=env)
    assert small.exit_code == 2
    assert "8 is not in the range x>=16" in small.output


def test_a_cited_file_starts_downloading_before_the_stream_ends(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    """The stream is paced (3 kB/s), so the events after the citations (the done events and
    the ~2 kB response.completed) take about a second: each download must start meanwhile."""
    emulator.control.add_fault(path="**/responses", method="POST", rate_bytes_per_s=3000)
    try:
        recorder = Recorder()
        result = run(PROMPT, model=MODEL, config=config, out=tmp_path, observer=recorder)
    finally:
        emulator.control.clear_faults()
    assert result.ok
    order = [(kind, value) for kind, value in recorder.events if kind in ("started", "step")]
    stream_ended = order.index(("step", 4))  # step 4 is reported once the stream is over
    started = [i for i, (kind, _) in enumerate(order) if kind == "started"]
    assert len(started) == 2
    assert all(i < stream_ended for i in started), order


DISPLAY_ONLY = """Show it.

```python
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [3, 1, 2])
plt.show()
```
"""


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
def test_a_figure_the_code_only_displays_is_saved_too(
    emulator: RunningEmulator, tmp_path: Path, stream: bool
) -> None:
    config = resolve_config(endpoint=emulator.base_url, api_key=emulator.api_key, model=MODEL)
    result = cigate.run(DISPLAY_ONLY, config=config, out=tmp_path, stream=stream)
    images = [r for r in result if r.content_type == "image/png"]
    assert len(images) == 1, result.to_dict()
    [image] = images
    assert image.path is not None
    assert image.path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if image.ref.source == "displayed":  # no file carried it: taken from the call's outputs
        assert image.ref.filename == "figure-1.png"
        assert image.strategy == "displayed"


def test_every_hostile_name_is_saved_under_a_safe_local_name_and_reported_as_written(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    from tests.names import HOSTILE_PATHS, basename, content, write_cell

    out = tmp_path / "out"
    result = run(f"```python\n{write_cell()}```", model=MODEL, config=config, out=out)
    _check_saved(result.results, out)
    by_original = {r.original_name: r for r in result.results}
    assert set(by_original) == {basename(p) for p in HOSTILE_PATHS}
    for index, path in enumerate(HOSTILE_PATHS):
        saved = by_original[basename(path)]
        assert saved.path is not None
        assert saved.path.read_bytes() == content(index, path)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    names = os.listdir(out)
    assert len(names) == len(HOSTILE_PATHS)
    assert all(not any(ord(c) < 32 or c in '/\\:*?"<>|' for c in n) for n in names)
    assert all(not n.startswith(".") and len(n.encode()) <= 200 for n in names)


def test_cigate_run_reports_the_original_names_next_to_the_local_paths(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    from tests.names import HOSTILE_PATHS, basename, write_cell

    env = {"CIGATE_ENDPOINT": emulator.base_url, "CIGATE_API_KEY": emulator.api_key}
    prompt = f"```python\n{write_cell()}```"
    args = ["run", prompt, "--model", MODEL, "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert {f["filename"] for f in files} == {basename(p) for p in HOSTILE_PATHS}
    assert all(Path(f["path"]).parent == tmp_path for f in files)
