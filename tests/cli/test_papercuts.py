"""What a newcomer met following the README literally (issue 10's papercuts), one test each."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

import cigate
from cigate.cli import main
from cigate.exceptions import (
    AccessDeniedError,
    BadInputError,
    ConfigurationError,
    UpstreamUnavailableError,
)
from cigate.testing.emulator import RunningEmulator
from tests.client.conftest import upload

MODEL = "gpt-4.1"
WRITE = "```python\nopen('/mnt/data/{name}', 'w').write({text!r})\n```\n"


@pytest.fixture
def env(emulator: RunningEmulator) -> dict[str, str]:
    return {
        "CIGATE_ENDPOINT": emulator.base_url,
        "CIGATE_API_KEY": emulator.api_key,
        "CIGATE_MODEL": MODEL,
        "CIGATE_BACKOFF": "0.01",
        "CIGATE_BACKOFF_MAX": "0.05",
    }


@pytest.mark.parametrize(
    "args", [["-h"], ["run", "-h"], ["gateway", "serve", "-h"]], ids=["root", "run", "nested"]
)
def test_dash_h_is_help_everywhere(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


def test_python_dash_m_cigate_is_the_cigate_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cigate", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cigate, version {metadata.version('cigate-toolkit')}"


def test_the_package_has_a_version() -> None:
    assert cigate.__version__ == metadata.version("cigate-toolkit")


@pytest.mark.parametrize("how", ["stdin", "prompt-file"])
def test_the_prompt_can_come_from_stdin_or_a_file(
    env: dict[str, str], tmp_path: Path, how: str
) -> None:
    prompt = "Write it.\n" + WRITE.format(name="from_prompt.txt", text="not a dash")
    out = tmp_path / "out"
    if how == "stdin":
        args, given = ["run", "-", "--out", str(out), "--json"], prompt
    else:
        (tmp_path / "prompt.md").write_text(prompt)
        args, given = ["run", "--prompt-file", str(tmp_path / "prompt.md"), "--out", str(out)], None
        args.append("--json")
    result = CliRunner().invoke(main, args, env=env, input=given)
    assert result.exit_code == 0, result.output
    assert (out / "from_prompt.txt").read_text() == "not a dash"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["run", "hi", "--file", "no-such.csv"], id="missing-input-file"),
        pytest.param(["run"], id="no-prompt"),
        pytest.param(["run", "-"], id="empty-stdin"),
        pytest.param(["ls", "abc"], id="ls-not-a-container-id"),
        pytest.param(["run", "hi", "--container", "abc"], id="run-not-a-container-id"),
    ],
)
def test_bad_input_exits_3_with_one_line_and_a_hint(env: dict[str, str], args: list[str]) -> None:
    result = CliRunner().invoke(main, args, env=env, input="")
    assert result.exit_code == BadInputError.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert lines[-1].startswith("hint: ")
    assert "Traceback" not in result.output


def test_a_refused_key_is_not_preceded_by_a_download_step(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["run", "hi"], env={**env, "CIGATE_API_KEY": "wrong"})
    assert result.exit_code == AccessDeniedError.exit_code, result.output
    assert "[3/5]" in result.stderr
    assert "[4/5]" not in result.stderr


def test_an_unreachable_endpoint_gets_a_connection_hint_not_azures_500s(
    env: dict[str, str],
) -> None:
    env = {**env, "CIGATE_ENDPOINT": "http://127.0.0.1:9", "CIGATE_RETRIES": "1"}
    result = CliRunner().invoke(main, ["ls", "cntr_abc"], env=env)
    assert result.exit_code == UpstreamUnavailableError.exit_code, result.output
    assert "No connection could be made" in result.stderr
    assert "500" not in result.stderr


def test_a_rerun_with_identical_bytes_reuses_the_file_and_different_bytes_get_a_new_name(
    env: dict[str, str], tmp_path: Path
) -> None:
    def run(text: str) -> list[Path]:
        prompt = WRITE.format(name="chart.txt", text=text)
        args = ["run", prompt, "--out", str(tmp_path), "--json"]
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 0, result.output
        return [Path(f["path"]) for f in json.loads(result.stdout)["files"]]

    assert run("same") == [tmp_path / "chart.txt"]
    assert run("same") == [tmp_path / "chart.txt"]
    assert run("other") == [tmp_path / "chart (1).txt"]
    assert run("same") == [tmp_path / "chart.txt"]
    assert run("other") == [tmp_path / "chart (1).txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart (1).txt", "chart.txt"]


def test_piped_output_keeps_every_local_path_whole(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / ("a-rather-long-output-directory-name-" * 3)
    name = "operating_profit_by_sector_and_quarter_for_every_region.csv"
    result = CliRunner().invoke(
        main, ["run", WRITE.format(name=name, text="x,y\n"), "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith(name))
    assert line.split("\t") == [
        name,
        "4",
        hashlib.sha256(b"x,y\n").hexdigest(),
        str(out / name),
    ]


def test_ls_prints_dates_not_epochs(emulator: RunningEmulator, env: dict[str, str]) -> None:
    ref = upload(emulator, "a.txt", b"hello")
    result = CliRunner().invoke(main, ["ls", str(ref.container_id)], env=env)
    assert result.exit_code == 0, result.output
    record = emulator.openai().containers.files.retrieve(ref.file_id, container_id=ref.container_id)
    assert str(record.created_at) not in result.stdout
    assert cigate_date(record.created_at) in result.stdout


def cigate_date(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d")


def test_a_run_continues_a_conversation_and_passes_request_options(
    env: dict[str, str], emulator: RunningEmulator, tmp_path: Path
) -> None:
    first = cigate.run("Hello", config=_config(env), out=tmp_path)
    second = cigate.run(
        "Again",
        config=_config(env),
        out=tmp_path,
        previous_response_id=first.response_id,
        options={"reasoning": {"effort": "low"}, "metadata": {"team": "finance"}},
    )
    stored = emulator.openai().responses.retrieve(str(second.response_id))
    assert stored.previous_response_id == first.response_id
    assert stored.reasoning is not None
    assert stored.reasoning.effort == "low"
    assert stored.metadata == {"team": "finance"}


def test_the_cli_continues_a_conversation(
    env: dict[str, str], emulator: RunningEmulator, tmp_path: Path
) -> None:
    first = cigate.run("Hello", config=_config(env), out=tmp_path)
    args = ["run", "Again", "--previous-response", str(first.response_id), "--json"]
    args += ["--reasoning-effort", "high", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    stored = emulator.openai().responses.retrieve(json.loads(result.stdout)["response_id"])
    assert stored.previous_response_id == first.response_id
    assert stored.reasoning is not None
    assert stored.reasoning.effort == "high"


def _config(env: dict[str, str]) -> cigate.ClientConfig:
    return cigate.resolve_config(env=env)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_zero_timeout_is_a_configuration_error_on_the_command_line(
    env: dict[str, str], value: str
) -> None:
    result = CliRunner().invoke(main, ["ls", "cntr_abc"], env={**env, "CIGATE_TIMEOUT": value})
    assert result.exit_code == ConfigurationError.exit_code, result.output
    assert "positive number of seconds" in result.stderr
