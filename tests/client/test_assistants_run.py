"""``cigate run --api assistants`` and ``cigate.run_assistants``: seed 004 end to end, offline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import cigate
from cigate.cli import main
from cigate.client._assistants import _retrieve
from cigate.client._config import ClientConfig
from cigate.emulator.assistants import POLL_AFTER_MS
from cigate.exceptions import UpstreamUnavailableError
from cigate.testing.plugin import RunningEmulator

CSV = b"sector,operating_profit\nTRANSPORTATION,12\nTRANSPORTATION,30\nBANKING,7\n"
PROMPT = """Create a bar chart for TRANSPORTATION and a summary file.
```python
import glob
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
df = pd.read_csv(glob.glob("/mnt/data/*nifty.csv")[0])
df.groupby("sector").sum().to_csv("/mnt/data/summary.csv")
fig, ax = plt.subplots()
ax.bar(df.sector, df.operating_profit)
fig.savefig("/mnt/data/chart.png")
print(int(df.operating_profit.sum()))
```
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "nifty.csv"
    path.write_bytes(CSV)
    return path


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "polling"])
def test_the_library_runs_seed_004_and_downloads_every_file(
    config: ClientConfig, data: Path, tmp_path: Path, stream: bool
) -> None:
    out = tmp_path / "out"
    result = cigate.run_assistants(
        PROMPT, files=[data], model="gpt-4o-mini", out=out, stream=stream, config=config
    )
    assert result.status == "completed"
    assert result.ok, result.errors
    assert result.response_id is not None
    assert result.response_id.startswith("run_")
    by_name = {r.ref.filename: r for r in result.results}
    assert set(by_name) == {"chart.png", "summary.csv"}
    assert all(r.ref.file_id.startswith("assistant-") for r in result.results)
    assert all(r.strategy == "files" for r in result.results)
    assert by_name["chart.png"].path is not None
    assert by_name["chart.png"].path.read_bytes().startswith(b"\x89PNG")
    summary = by_name["summary.csv"]
    assert summary.path is not None
    assert summary.path.read_text().startswith("sector,operating_profit")
    assert summary.sha256 is not None
    assert "49" in result.text
    assert str(summary.path) in result.local_text
    assert "sandbox:/mnt/data/summary.csv" not in result.local_text
    assert result.code == [PROMPT.split("```python\n")[1].split("```", maxsplit=1)[0]]


def test_the_cli_runs_with_api_assistants_and_prints_the_files_as_json(
    emulator: RunningEmulator, data: Path, tmp_path: Path
) -> None:
    env = {
        "CIGATE_ENDPOINT": emulator.base_url,
        "CIGATE_API_KEY": emulator.api_key,
        "CIGATE_MODEL": "gpt-4o-mini",
    }
    args = ["run", "--api", "assistants", PROMPT, "--file", str(data)]
    args += ["--out", str(tmp_path / "out"), "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "completed"
    names = sorted(row["filename"] for row in report["files"])
    assert names == ["chart.png", "summary.csv"]
    assert all(Path(row["path"]).is_file() for row in report["files"])


def test_the_temporary_assistant_is_deleted_afterwards(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    cigate.run_assistants("no code here", model="gpt-4o-mini", out=tmp_path, config=config)
    client = emulator.openai()
    with pytest.warns(DeprecationWarning, match="deprecated"):
        assistants = client.beta.assistants.list()
    assert assistants.data == []


def test_a_container_is_refused_with_api_assistants(emulator: RunningEmulator) -> None:
    env = {"CIGATE_ENDPOINT": emulator.base_url, "CIGATE_API_KEY": emulator.api_key}
    args = ["run", "--api", "assistants", "hi", "--container", "cntr_x", "--model", "m"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 3  # bad input, as docs/troubleshooting.md says
    assert "--container applies to the Responses API" in result.output


SLOW = "Take your time.\n```python\nimport time\ntime.sleep(60)\n```\n"


def test_a_polled_run_past_run_timeout_is_cancelled_with_a_hint(
    emulator: RunningEmulator, config: ClientConfig, tmp_path: Path
) -> None:
    with pytest.raises(UpstreamUnavailableError) as caught:
        cigate.run_assistants(
            SLOW,
            model="gpt-4o-mini",
            out=tmp_path,
            stream=False,
            config=config.with_options(run_timeout=1.0),
        )
    error = caught.value
    assert "did not end within 1 s; it was cancelled" in error.message
    assert "CIGATE_RUN_TIMEOUT" in error.hint
    run_id, thread_id = error.message.split()[2], error.message.split()[5]
    client = emulator.openai()
    with pytest.warns(DeprecationWarning, match="deprecated"):
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
    assert run.status in ("cancelling", "cancelled")  # not left running for the full minute


async def test_polling_reads_the_wait_the_service_asks_for(
    emulator: RunningEmulator, config: ClientConfig
) -> None:
    client = emulator.async_openai()
    with warnings.catch_warnings():  # setup through the deprecated Assistants SDK
        warnings.simplefilter("ignore", DeprecationWarning)
        assistant = await client.beta.assistants.create(
            model="gpt-4o-mini", tools=[{"type": "code_interpreter"}]
        )
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        run = await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    polled, asked = await _retrieve(client, run.id, thread.id)
    assert polled.id == run.id
    assert asked == POLL_AFTER_MS / 1000
