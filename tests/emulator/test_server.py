"""``run_in_thread`` and the app's lifespan: real sockets, clean start and stop, no kernel left."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cigate.emulator.app import create_app
from cigate.emulator.server import run_in_thread
from cigate.emulator.settings import EmulatorSettings


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_a_server_on_port_zero_gets_a_free_port_and_stops_cleanly() -> None:
    handle = run_in_thread(Starlette(routes=[Route("/", _hello)]), "127.0.0.1", 0)
    try:
        assert handle.port > 0
        assert httpx2.get(handle.url + "/", trust_env=False).text == "hello"
    finally:
        handle.stop()
    assert not handle.thread.is_alive()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", handle.port)) != 0


def test_a_failing_startup_is_reported_to_the_caller() -> None:
    @contextlib.asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        if id(app):  # always: the yield below only makes this a generator
            raise RuntimeError("no start for you")
        yield

    with pytest.raises(RuntimeError, match="did not start"):
        run_in_thread(Starlette(lifespan=broken), "127.0.0.1", 0, startup_timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.sandbox
def test_stopping_the_emulator_leaves_no_kernel_running(tmp_path: Path) -> None:
    from cigate.sandbox import reaper

    before = reaper.tracked()
    settings = EmulatorSettings(api_keys=("k",), data_dir=tmp_path, pool_size=1)
    with run_in_thread(create_app(settings), "127.0.0.1", 0) as handle:
        client = openai.OpenAI(base_url=handle.url + "/openai/v1/", api_key="k", max_retries=0)
        response = client.responses.create(
            model="gpt-4.1",
            input="```python\nprint(6 * 7)\n```",
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        )
        assert response.status == "completed"
        started = reaper.tracked() - before
        assert started, "the code ran in a kernel we can see"
        client.close()
    # Kernels another emulator in this process (the session's) started meanwhile stay tracked;
    # every kernel this app owned was untracked by its shutdown and is gone.
    ours = started - reaper.tracked()
    assert ours
    assert not any(_alive(pid) for pid in ours)
