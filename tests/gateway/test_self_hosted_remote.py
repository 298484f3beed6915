"""The self-hosted gateway with remote kernels: a real Kernel Gateway process runs the cells.

The same openai SDK flow as with the local sandbox pool, streamed and not: the code runs in a
Kernel Gateway kernel, its files come back through the kernel protocol, are cited, stored and
served after the container expired; the emulator is only the function-calling model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import live_settings, local_backend
from tests.gateway.live import LiveGateway, add_tenant, code_input, serving, start_gateway
from tests.gateway.selfhosted import (
    AUTO,
    emulator_ran_no_code,
    interpreter,
    on_gateway,
    self_settings,
)
from tests.sandbox.kernel_gateway import KernelGatewayProcess, kernel_gateway

__all__ = ["kernel_gateway"]

CELL = "import os\nopen('/mnt/data/remote.csv', 'w').write(f'pid,{os.getpid()}\\n')\nprint('ok')"


@pytest.fixture
def remote_gateway(
    emulator: RunningEmulator, kernel_gateway: KernelGatewayProcess, tmp_path: Path
) -> Iterator[LiveGateway]:
    backend = local_backend(tmp_path)
    settings = self_settings(
        live_settings(emulator, backend),
        tmp_path,
        interpreter_kernels="remote",
        kernel_gateway_url=kernel_gateway.url,
        kernel_gateway_token=kernel_gateway.token,
    )
    with serving(settings) as gateway:
        yield gateway


@pytest.mark.parametrize("stream", [False, True], ids=["not-streamed", "streamed"])
def test_a_response_runs_in_a_remote_kernel_and_its_file_outlives_the_container(
    remote_gateway: LiveGateway, emulator: RunningEmulator, stream: bool
) -> None:
    client = remote_gateway.openai()
    kw: dict[str, Any] = {"model": "gpt-4.1", "input": code_input(CELL), "tools": AUTO}
    if stream:
        events = list(client.responses.create(stream=True, **kw))
        response = events[-1].response  # type: ignore[union-attr]
    else:
        response = client.responses.create(**kw)
    assert response.status == "completed"
    call, message = response.output
    [citation] = message.content[0].annotations  # type: ignore[union-attr]
    assert citation.filename == "remote.csv"
    interp = interpreter(remote_gateway)
    interp.clock.advance(21 * 60)
    assert call.container_id in on_gateway(remote_gateway, interp.containers.reap_expired())  # type: ignore[union-attr]
    content = client.containers.files.content.retrieve(
        citation.file_id, container_id=citation.container_id
    ).read()
    assert content.startswith(b"pid,")
    assert int(content.split(b",")[1]) != __import__("os").getpid()
    assert emulator_ran_no_code(emulator)


def test_a_kernel_that_cannot_start_fails_the_response_without_the_gateways_words(
    emulator: RunningEmulator, kernel_gateway: KernelGatewayProcess, tmp_path: Path
) -> None:
    backend = local_backend(tmp_path)
    settings = self_settings(
        live_settings(emulator, backend),
        tmp_path,
        interpreter_kernels="remote",
        kernel_gateway_url=kernel_gateway.url,
        kernel_gateway_token=kernel_gateway.token,
        kernel_gateway_kernel="no-such-kernelspec",  # KG answers 500 with a traceback
    )
    gateway = start_gateway(settings, add_tenant(settings.database_url, "acme"))
    try:
        http = gateway.http()
        body = {"model": "gpt-4.1", "input": code_input(CELL), "tools": AUTO}
        answer = http.post("/openai/v1/responses", json=body)
        assert answer.status_code == 500
        error = answer.json()["error"]
        assert error["message"] == "The code interpreter could not run the code."
        assert "Traceback" not in answer.text
        assert str(kernel_gateway.root) not in answer.text
        streamed = http.post("/openai/v1/responses", json={**body, "stream": True}).text
        assert "response.failed" in streamed
        assert "Traceback" not in streamed
        assert "no-such-kernelspec" not in streamed
    finally:
        gateway.close()
