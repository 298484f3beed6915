"""Which event loop and HTTP parser each server runs on: the gateway on uvloop, the emulator on
asyncio's own, both with h11 (:data:`cigate.web.http_protocol.HTTP_PROTOCOL`).

``cigate.gateway.app.SERVER_LOOP`` and ``cigate.emulator.app.SERVER_LOOP`` say it; these tests
check that ``cigate gateway serve``, ``cigate emulator serve`` and the test servers
(``run_in_thread``) do what they say. uvloop is in the gateway's extra and httptools in the
dev extra (uvicorn's ``auto`` would take it), so the imports below fail (never skip) where the
lock lost them.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path
from typing import Any

import httptools  # noqa: F401  (installed, so uvicorn's "auto" would pick it)
import pytest
import uvloop
from click.testing import CliRunner
from starlette.applications import Starlette

from cigate.cli import main
from cigate.emulator.server import run_in_thread
from cigate.gateway.app import SERVER_LOOP
from cigate.testing.rawhttp import RawClient
from cigate.testing.services import free_port
from tests.gateway.conftest import DEAD_UPSTREAM, on_local_disk
from tests.gateway.live import serve_process


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """uvicorn's serving replaced by a recorder of its config (the socket is bound for real)."""
    seen: list[Any] = []

    def fake_run(server: Any, sockets: list[socket.socket]) -> None:
        seen.append(server.config)
        for sock in sockets:
            sock.close()

    monkeypatch.setattr("uvicorn.Server.run", fake_run)
    return seen


def _loop_of(config: Any) -> asyncio.AbstractEventLoop:
    new_loop = config.get_loop_factory()
    assert new_loop is not None
    return new_loop()


def test_cigate_gateway_serve_builds_a_uvloop_loop(tmp_path: Path, configs: list[Any]) -> None:
    args = ["gateway", "serve", "--upstream", DEAD_UPSTREAM, "--upstream-key", "k"]
    args += ["--database", f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"]
    result = CliRunner().invoke(main, [*args, "--blobs", str(tmp_path / "b"), "--port", "0"])
    assert result.exit_code == 0, result.output
    (config,) = configs
    # Never uvicorn's "auto": what is installed would decide.
    assert (config.http, config.ws) == ("h11", "none")
    loop = _loop_of(config)
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_cigate_emulator_serve_stays_on_asyncios_loop(configs: list[Any]) -> None:
    result = CliRunner().invoke(main, ["emulator", "serve", "--port", "0", "--pool-size", "1"])
    assert result.exit_code == 0, result.output
    (config,) = configs
    assert (config.http, config.ws) == ("h11", "none")
    loop = _loop_of(config)
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()


def test_the_served_gateway_process_has_uvloop_loaded(tmp_path: Path, processes: list) -> None:
    """The real process, as deployed: uvloop's extension is mapped into it once it answers."""
    settings = on_local_disk(
        tmp_path,
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
    )
    proc: subprocess.Popen[bytes] = serve_process(
        settings, free_port(), tmp_path / "home", upstream_auth="none"
    )
    processes.append(proc)
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "/uvloop/loop." in maps
    assert "/httptools/" not in maps  # installed, never loaded: the parser is h11


def test_test_servers_parse_with_h11() -> None:
    with run_in_thread(Starlette()) as server:
        assert (server.server.config.http, server.server.config.ws) == ("h11", "none")


@pytest.mark.parametrize(
    "target",
    [b"http://127.0.0.1/openai/v1/containers", b"/openai/v1/containers#/../x"],
    ids=["absolute-form", "fragment"],
)
def test_the_served_gateway_refuses_targets_a_url_parser_would_shorten(
    tmp_path: Path, processes: list, target: bytes
) -> None:
    """As deployed, with httptools installed: uvicorn's ``auto`` took it, and its protocol
    handed these to the app as ``/openai/v1/containers``, past the canonical-path check."""
    settings = on_local_disk(
        tmp_path,
        upstream=DEAD_UPSTREAM,
        upstream_auth="none",
    )
    port = free_port()
    processes.append(serve_process(settings, port, tmp_path / "home", upstream_auth="none"))
    with RawClient("127.0.0.1", port) as raw:
        plain = raw.request("GET", b"/openai/v1/containers")
        shortened = raw.request("GET", target)
    assert plain.status == 401  # routed: no tenant key
    assert (shortened.status, shortened.json()["error"]["code"]) == (404, "invalid_path")


def test_test_servers_run_on_the_loop_they_are_given() -> None:
    """Tests serve a gateway on its SERVER_LOOP (tests/gateway/live.py), anything else on
    asyncio's loop, as the two commands do."""
    with run_in_thread(Starlette(), loop=SERVER_LOOP) as gateway_like:
        assert isinstance(gateway_like.loop, uvloop.Loop)
    with run_in_thread(Starlette()) as plain:
        assert not isinstance(plain.loop, uvloop.Loop)
