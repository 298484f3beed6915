"""The client verbs through click's CliRunner: output, JSON, one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cigate.cli import docgen, main
from cigate.exceptions import AccessDeniedError, BadInputError, ConfigurationError
from cigate.testing.plugin import RunningEmulator
from tests.client.conftest import upload


@pytest.fixture
def env(emulator: RunningEmulator) -> dict[str, str]:
    return {
        "CIGATE_ENDPOINT": emulator.base_url,
        "CIGATE_API_KEY": emulator.api_key,
        "CIGATE_BACKOFF": "0.01",
        "CIGATE_BACKOFF_MAX": "0.05",
    }


def test_ls_prints_the_containers_files_as_json(
    emulator: RunningEmulator, env: dict[str, str]
) -> None:
    ref = upload(emulator, "a.txt", b"hello")
    result = CliRunner().invoke(main, ["ls", str(ref.container_id), "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["id"] for r in data["data"]] == [ref.file_id]


def test_ls_prints_a_table(emulator: RunningEmulator, env: dict[str, str]) -> None:
    ref = upload(emulator, "a.txt", b"hello")
    result = CliRunner().invoke(main, ["ls", str(ref.container_id)], env=env)
    assert result.exit_code == 0, result.output
    assert ref.file_id[:12] in result.stdout


def test_fetch_by_id_saves_the_file_under_its_container_path_name(
    emulator: RunningEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    ref = upload(emulator, "report.csv", b"a,b\n1,2\n")
    args = ["fetch", str(ref.container_id), ref.file_id, "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["files"]
    assert row["bytes"] == 8
    assert Path(row["path"]).read_bytes() == b"a,b\n1,2\n"
    assert Path(row["path"]).parent == tmp_path
    assert Path(row["path"]).name.endswith("report.csv")


def test_fetch_all_gets_every_file(
    emulator: RunningEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    first = upload(emulator, "a.txt", b"a")
    upload(emulator, "b.txt", b"b", container=first.container_id)
    args = ["fetch", str(first.container_id), "--all", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(["fetch"], BadInputError, id="fetch-without-ids"),
        pytest.param(["fetch", "cntr_x"], BadInputError, id="fetch-without-file-ids-or-all"),
        pytest.param(["fetch", "not-a-container", "cfile_1"], BadInputError, id="bad-container-id"),
        pytest.param(["fetch", "--response", "resp_nope"], BadInputError, id="unknown-response"),
    ],
)
def test_bad_input_prints_one_line_and_a_hint_with_its_exit_status(
    env: dict[str, str], args: list[str], error: type[BadInputError]
) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == error.exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert lines[-1].startswith("hint: ")
    assert "Traceback" not in result.output


def test_no_endpoint_is_a_configuration_error() -> None:
    result = CliRunner().invoke(main, ["ls", "cntr_x"], env={})
    assert result.exit_code == ConfigurationError.exit_code
    assert "AZURE_OPENAI_ENDPOINT" in result.stderr


def test_a_checkaccess_refusal_exits_with_the_access_denied_status(
    emulator: RunningEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    ref = upload(emulator, "a.txt", b"x")
    emulator.control.switch("checkaccess")
    args = ["fetch", str(ref.container_id), ref.file_id, "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == AccessDeniedError.exit_code, result.output
    assert "CheckAccess" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_dated_api_version_prints_a_warning_and_still_works(
    emulator: RunningEmulator, env: dict[str, str]
) -> None:
    ref = upload(emulator, "a.txt", b"x")
    env = {**env, "AOAI_API_VERSION": "2025-04-01-preview"}
    result = CliRunner().invoke(main, ["ls", str(ref.container_id), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert "ignoring api-version 2025-04-01-preview" in result.stderr


def test_the_committed_cli_reference_matches_the_help_of_every_command() -> None:
    assert docgen.DOC_PATH.read_text(encoding="utf-8") == docgen.generate(), (
        "docs/cli.md is out of date: run `make docs`"
    )
