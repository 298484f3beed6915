"""``cigate run`` and the seeds' flows (000, 001) unchanged against a gateway in ``self`` mode.

The upstream is the emulator acting only as a function-calling model: each test checks that it
made no container. Streamed and not; every file is still served after its container expired.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from click.testing import CliRunner

from cigate.cli import main
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import live_settings, local_backend
from tests.gateway.live import LiveGateway, code_input, serving
from tests.gateway.selfhosted import (
    AUTO,
    emulator_ran_no_code,
    interpreter,
    on_gateway,
    self_settings,
)

CHART = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9])
plt.savefig("/mnt/data/contoso_operating_profit.png")
"""
HELLO = "open('/mnt/data/test.txt', 'w').write('hello world')"
STREAMING = pytest.mark.parametrize("stream", [False, True], ids=["not-streamed", "streamed"])


@pytest.fixture
def self_gateway(emulator: RunningEmulator, tmp_path: Path) -> Iterator[LiveGateway]:
    backend = local_backend(tmp_path)
    settings = self_settings(live_settings(emulator, backend), tmp_path)
    with serving(settings) as gateway:
        yield gateway


def _expire_all(gateway: LiveGateway) -> list[str]:
    interp = interpreter(gateway)
    interp.clock.advance(21 * 60)
    return on_gateway(gateway, interp.containers.reap_expired())


def _final(client: Any, stream: bool, **kw: Any) -> Any:
    if not stream:
        return client.responses.create(**kw)
    events = list(client.responses.create(stream=True, **kw))
    assert events[-1].type == "response.completed"
    return events[-1].response


def _annotations(response: Any) -> list[Any]:
    return [
        a
        for item in response.output
        if item.type == "message"
        for part in item.content
        for a in part.annotations
        if a.type == "container_file_citation"
    ]


@STREAMING
def test_seed_000_azure_client_and_rest_download_work_after_expiry(
    self_gateway: LiveGateway, emulator: RunningEmulator, stream: bool
) -> None:
    key = self_gateway.tenant.key
    client = openai.AzureOpenAI(
        azure_endpoint=self_gateway.url,
        api_key=key,
        api_version="2025-04-01-preview",
        http_client=self_gateway.raw_http(),
        max_retries=0,
    )
    response = _final(
        client,
        stream,
        model="gpt-4.1",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        instructions="You are a helpful data analyst. You should use Python tool to perform "
        "required calculations.",
        input=code_input(CHART),
    )
    [ann] = _annotations(response)
    assert ann.filename == "contoso_operating_profit.png"
    assert ann.container_id in _expire_all(self_gateway)
    url = f"{self_gateway.url}/openai/v1/containers/{ann.container_id}/files/{ann.file_id}/content"
    with httpx2.Client(trust_env=False) as http:
        got = http.get(url, headers={"api-key": key})
    assert got.status_code == 200
    assert got.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert emulator_ran_no_code(emulator)


@STREAMING
def test_seed_001_openai_client_downloads_test_txt_after_expiry(
    self_gateway: LiveGateway, emulator: RunningEmulator, stream: bool, tmp_path: Path
) -> None:
    client = self_gateway.openai()
    response = _final(client, stream, model="gpt-4o", tools=AUTO, input=code_input(HELLO))
    [ann] = _annotations(response)
    assert (ann.filename, ann.container_id in _expire_all(self_gateway)) == ("test.txt", True)
    content = client.containers.files.content.retrieve(ann.file_id, container_id=ann.container_id)
    target = tmp_path / "downloads" / ann.filename
    target.parent.mkdir()
    target.write_bytes(content.read())
    assert target.read_text() == "hello world"
    assert emulator_ran_no_code(emulator)


@STREAMING
def test_cigate_run_downloads_every_file_with_an_input_file(
    self_gateway: LiveGateway, emulator: RunningEmulator, stream: bool, tmp_path: Path
) -> None:
    data = tmp_path / "sales.csv"
    data.write_text("q,v\n1,10\n2,20\n")
    prompt = code_input(
        "import glob, shutil\n"
        "src = [p for p in glob.glob('/mnt/data/*sales.csv')][0]\n"
        "open('/mnt/data/total.txt', 'w').write(str(sum(int(l.split(',')[1]) "
        "for l in open(src).read().splitlines()[1:])))",
        CHART,
    )
    out = tmp_path / "out"
    args = ["run", prompt, "--model", "gpt-4.1", "--out", str(out), "--file", str(data)]
    if not stream:
        args.append("--no-stream")
    env = {
        "CIGATE_ENDPOINT": self_gateway.url,
        "CIGATE_API_KEY": self_gateway.tenant.key,
        "CIGATE_BACKOFF": "0.01",
        "CIGATE_BACKOFF_MAX": "0.05",
    }
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert (out / "total.txt").read_text() == "30"
    assert (out / "contoso_operating_profit.png").read_bytes().startswith(b"\x89PNG")
    assert emulator_ran_no_code(emulator)
