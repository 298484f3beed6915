"""A gateway on a real uvicorn server in front of the test emulator, and helpers to drive it.

The gateway's upstream is the emulator's real URL: the two meet only here, in tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from openai import OpenAI

from cigate.emulator.server import ServerHandle, run_in_thread
from cigate.gateway.app import SERVER_LOOP, create_app
from cigate.gateway.settings import GatewaySettings
from cigate.storage.metadata import MetadataStore
from tests.gateway.harness import Tenant

CODE_TOOL = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def add_tenant(database: str, name: str) -> Tenant:
    """Create a tenant and a key in the gateway's database, from outside the gateway."""

    async def make() -> Tenant:
        async with await MetadataStore.open(database) as meta:
            tenant = await meta.create_tenant(name)
            return Tenant(tenant.id, await meta.add_key(tenant.id))

    return asyncio.run(make())


def code_input(*cells: str) -> str:
    """A user message whose fenced python blocks the emulator's scripted model runs."""
    blocks = "\n".join(f"```python\n{cell.strip()}\n```" for cell in cells)
    return f"Please run this.\n{blocks}\n"


@dataclass
class LiveGateway:
    settings: GatewaySettings
    handle: ServerHandle
    tenant: Tenant
    _clients: list[httpx2.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.handle.url

    def http(self, tenant: Tenant | None = None) -> httpx2.Client:
        client = httpx2.Client(
            base_url=self.url,
            headers=(tenant or self.tenant).headers,
            timeout=60,
            trust_env=False,
        )
        self._clients.append(client)
        return client

    def raw_http(self) -> httpx2.Client:
        """A bare client (no base URL, no key) closed with the gateway: for SDK clients."""
        http = httpx2.Client(timeout=60, trust_env=False)
        self._clients.append(http)
        return http

    def openai(self, tenant: Tenant | None = None, **kw: Any) -> OpenAI:
        http = self.raw_http()
        return OpenAI(
            base_url=f"{self.url}/openai/v1/",
            api_key=(tenant or self.tenant).key,
            http_client=http,
            max_retries=0,
            **kw,
        )

    def add_tenant(self, name: str) -> Tenant:
        return add_tenant(self.settings.database_url, name)

    def harvested(
        self,
        response_id: str,
        *,
        at_least: int = 1,
        timeout: float = 60,
        tenant: Tenant | None = None,
        listed: bool = True,
    ) -> list[dict[str, Any]]:
        """``/responses/{id}/files`` once the response is listed (unless ``listed=False``), at
        least N files exist and none is pending."""
        client = self.http(tenant)
        deadline = time.monotonic() + timeout
        files: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            r = client.get(f"/responses/{response_id}/files")
            if r.status_code == 200:
                files = r.json()["data"]
                over = r.json()["listed"] or not listed
                done = over and all(f["state"] != "pending" for f in files)
                if len(files) >= at_least and done:
                    return files
            time.sleep(0.1)
        raise AssertionError(f"harvest of {response_id} did not finish: {files}")

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.handle.stop()


def start_gateway(settings: GatewaySettings, tenant: Tenant) -> LiveGateway:
    return LiveGateway(
        settings, run_in_thread(create_app(settings), "127.0.0.1", 0, loop=SERVER_LOOP), tenant
    )


@contextmanager
def serving(settings: GatewaySettings, tenant: str = "acme") -> Iterator[LiveGateway]:
    """:func:`start_gateway` with a new tenant of that name, closed when the block ends."""
    gateway = start_gateway(settings, add_tenant(settings.database_url, tenant))
    try:
        yield gateway
    finally:
        gateway.close()


def serve_process(
    settings: GatewaySettings, port: int, home: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """``cigate gateway serve`` as a real process (to be SIGKILLed), once it answers.

    Short leases and sweeps; ``extra`` sets more ``CIGATE_GATEWAY_*`` variables. Its log goes
    to ``home/gateway-PORT.log`` (a pipe nobody reads would fill up and stall it).
    """
    env = {
        **os.environ,
        "CIGATE_HOME": str(home),
        "CIGATE_GATEWAY_UPSTREAM": settings.upstream,
        "CIGATE_GATEWAY_UPSTREAM_KEY": settings.upstream_key,
        "CIGATE_GATEWAY_DATABASE": settings.database_url,
        "CIGATE_GATEWAY_BLOBS": settings.blobs_url,
        "CIGATE_GATEWAY_PORT": str(port),
        "CIGATE_GATEWAY_LEASE_SECONDS": "2",
        "CIGATE_GATEWAY_RESUME_INTERVAL": "0.5",
        **{f"CIGATE_GATEWAY_{k.upper()}": v for k, v in extra.items()},
    }
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"gateway-{port}.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from cigate.cli import main; main()", "gateway", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx2.TransportError:
            time.sleep(0.1)
        assert proc.poll() is None, log.read_text(errors="replace")
    proc.kill()
    raise AssertionError("the gateway subprocess did not start")
