"""A real Jupyter Kernel Gateway process for the remote-kernel provider's tests.

Started once per session on an OS-chosen loopback port (the launcher prints the port KG bound;
KG's own log says ``:0``), with a random token passed through the environment, private Jupyter
directories, and a canary variable in its environment that no kernel may see. Stopped with
SIGTERM (KG shuts its kernels down), then SIGKILL of its process group.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

#: Set in the gateway's environment only: a kernel that sees it inherited the gateway's.
CANARY = "CIGATE_KG_CANARY"

_LAUNCHER = """
import sys
from kernel_gateway.gatewayapp import KernelGatewayApp
app = KernelGatewayApp.instance()
app.initialize(["--KernelGatewayApp.ip=127.0.0.1", "--KernelGatewayApp.port=0",
                "--KernelGatewayApp.port_retries=0", *sys.argv[1:]])
port = next(iter(app.http_server._sockets.values())).getsockname()[1]
print(f"KG_PORT={port}", flush=True)
app.start()
"""


@dataclass(frozen=True)
class KernelGatewayProcess:
    url: str
    token: str
    root: Path


@pytest.fixture(scope="session")
def kernel_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelGatewayProcess]:
    root = tmp_path_factory.mktemp("kg")
    token = secrets.token_urlsafe(24)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "KG_AUTH_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_PLATFORM_DIRS": "1",
        CANARY: "the gateway's secret",
    }
    log = (root / "kg.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _LAUNCHER,
            "--KernelGatewayApp.default_kernel_name=python3",
            "--KernelGatewayApp.max_kernels=8",
            "--JupyterWebsocketPersonality.list_kernels=True",
            "--MappingKernelManager.cull_idle_timeout=1500",
            "--MappingKernelManager.cull_interval=60",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("KG_PORT="):
            raise RuntimeError("kernel gateway did not start:\n" + (root / "kg.log").read_text())
        url = f"http://127.0.0.1:{int(line.split('=', 1)[1])}"
        for _ in range(600):  # bounded by count
            try:
                answer = httpx2.get(f"{url}/api", headers={"Authorization": f"token {token}"})
                if answer.status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("kernel gateway exited:\n" + (root / "kg.log").read_text())
            time.sleep(0.05)
        else:
            raise RuntimeError("kernel gateway never answered /api")
        yield KernelGatewayProcess(url, token, root)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()
