"""``cigate emulator serve``: options, printed URLs and key (uvicorn's serving loop is stubbed:
the socket is bound for real, then handed to a ``Server.run`` that records and returns)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from click.testing import CliRunner

from cigate.cli import main
from cigate.emulator.state import emulator_state


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_run(server: Any, sockets: list[socket.socket]) -> None:
        (sock,) = sockets
        host, port = sock.getsockname()[:2]
        calls.append({"app": server.config.app, "host": host, "port": port})
        sock.close()

    monkeypatch.setattr("uvicorn.Server.run", fake_run)
    return calls


def test_serve_prints_the_three_base_urls_and_the_key(served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(
        main, ["emulator", "serve", "--port", "0", "--api-key", "local-key"]
    )
    assert result.exit_code == 0, result.output
    port = served[0]["port"]
    assert port != 0  # --port 0 prints the port the system chose
    assert f"http://127.0.0.1:{port}   " in result.output
    assert f"http://127.0.0.1:{port}/openai/v1/" in result.output
    assert f"http://127.0.0.1:{port}/v1/" in result.output
    assert f"http://127.0.0.1:{port}/api/projects/PROJECT " in result.output
    assert "local-key" in result.output
    assert served[0]["host"] == "127.0.0.1"
    assert emulator_state(served[0]["app"]).settings.api_keys == ("local-key",)


def test_serve_generates_and_prints_a_key_when_none_is_set(served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(main, ["emulator", "serve", "--port", "0"])
    assert result.exit_code == 0, result.output
    key = emulator_state(served[0]["app"]).settings.api_key
    assert key.startswith("emu-")
    assert key in result.output


def test_serve_reads_the_key_and_settings_from_the_environment(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIGATE_EMULATOR_API_KEY", "from-env,second")
    args = ["emulator", "serve", "--port", "0", "--idle-minutes", "5", "--pool-size", "1"]
    result = CliRunner().invoke(main, [*args, "--isolation", "none"])
    assert result.exit_code == 0, result.output
    settings = emulator_state(served[0]["app"]).settings
    assert settings.api_keys == ("from-env", "second")
    assert (settings.idle_minutes, settings.pool_size, settings.isolation) == (5, 1, "none")


def test_serve_refuses_an_unknown_isolation_mode() -> None:
    result = CliRunner().invoke(main, ["emulator", "serve", "--isolation", "docker"])
    assert result.exit_code == 2
    assert "docker" in result.output


def test_serve_help_shows_an_example() -> None:
    result = CliRunner().invoke(main, ["emulator", "serve", "--help"])
    assert "cigate emulator serve --port 8089" in result.output
    assert "CIGATE_EMULATOR_API_KEY" not in result.output or "--api-key" in result.output


def test_a_port_in_use_is_one_line_and_a_hint(served: list[dict[str, Any]]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["emulator", "serve", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "hint: Choose another --port" in result.stderr
    assert "Traceback" not in result.output
    assert served == []


def test_serve_passes_the_sandbox_limits_from_options_and_the_environment(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIGATE_EMULATOR_TMP_SIZE", "64m")
    monkeypatch.setenv("CIGATE_EMULATOR_SANDBOX_UID", "4242")
    options = ["--memory-cap", "512m", "--pids-max", "64", "--cpu-limit", "0.5"]
    options += ["--disk-quota", "1.5GiB", "--max-containers", "9"]
    result = CliRunner().invoke(main, ["emulator", "serve", "--port", "0", *options])
    assert result.exit_code == 0, result.output
    settings = emulator_state(served[0]["app"]).settings
    assert settings.sandbox_overrides() == {
        "memory_cap": 512 << 20,
        "pids_max": 64,
        "cpu_limit": 0.5,
        "disk_quota": 3 << 29,
        "tmp_size": 64 << 20,
        "max_containers": 9,
        "sandbox_uid": 4242,
    }
    assert "/_emulator/status" in result.output


@pytest.mark.parametrize(
    "size", ["lots", "-1g", "1x", ""], ids=["word", "negative", "unit", "empty"]
)
def test_serve_refuses_a_size_that_is_not_one(size: str) -> None:
    result = CliRunner().invoke(main, ["emulator", "serve", "--disk-quota", size])
    assert result.exit_code == 2
    assert "not a size" in result.output
