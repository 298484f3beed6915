"""``RunningEmulator``: one test's view of the emulator (URLs, key, control plane, clients).

The ``emulator`` fixture of :mod:`cigate.testing.plugin` yields one; other suites (the gateway's,
a user's own) build them around a running emulator too. This module needs the ``emulator``
extra; the plugin imports it only when a fixture asks for it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx2
from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI
from starlette.applications import Starlette

from cigate.emulator.server import ServerHandle
from cigate.emulator.settings import EmulatorSettings
from cigate.emulator.state import Backends, emulator_state
from cigate.testing.control import EmulatorControl
from cigate.testing.transport import AsyncInProcessTransport, InProcessTransport
from cigate.testing.validation import ValidationRecorder
from cigate.web.tls import LocalTLS

__all__ = [
    "DEFAULT_AZURE_API_VERSION",
    "SERVER_ENV",
    "TEST_API_KEY",
    "Mode",
    "RunningEmulator",
    "current_mode",
]

SERVER_ENV = "CIGATE_TEST_SERVER"
TEST_API_KEY = "cigate-test-key"
DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"
_CLIENT_TIMEOUT = 60.0

Mode = Literal["inprocess", "server"]
T = TypeVar("T")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One context for every client: building one loads the CA bundle (~50 ms) each time."""
    return ssl.create_default_context()


def current_mode() -> Mode:
    """``"server"`` when ``CIGATE_TEST_SERVER`` is set to a true value."""
    value = os.environ.get(SERVER_ENV, "").strip().lower()
    return "server" if value not in ("", "0", "false", "no") else "inprocess"


@dataclass
class RunningEmulator:
    """One test's view of the emulator: URLs, key, control plane and client factories."""

    handle: ServerHandle
    api_key: str
    mode: Mode
    recorder: ValidationRecorder = field(default_factory=ValidationRecorder)
    #: The certificate of the server's HTTPS listener (``emulator_tls``), if it has one.
    tls_files: LocalTLS | None = None
    _sync_clients: list[httpx2.Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.control = EmulatorControl(self.http_client())

    @property
    def app(self) -> Starlette:
        app = self.handle.app
        assert isinstance(app, Starlette)
        return app

    @property
    def backends(self) -> Backends:
        """The running app's backends (containers, files, responses, pool, ...), typed."""
        return emulator_state(self.app).backends()

    @property
    def settings(self) -> EmulatorSettings:
        return emulator_state(self.app).settings

    @property
    def base_url(self) -> str:
        """The Azure-resource-style root, e.g. ``http://127.0.0.1:PORT``."""
        return self.handle.url

    @property
    def https_url(self) -> str:
        """The same emulator over TLS, ``https://127.0.0.1:PORT`` (trust ``tls.ca``)."""
        return self.handle.https_url

    @property
    def tls(self) -> LocalTLS:
        """The HTTPS listener's CA, certificate and bundle (``tls.env()`` to trust it)."""
        if self.tls_files is None or self.handle.tls_port is None:
            raise RuntimeError("this emulator was started without TLS (run_in_thread(ssl_...))")
        return self.tls_files

    def project_url(self, project: str = "proj", *, tls: bool = True) -> str:
        """A Foundry project endpoint, ``https://127.0.0.1:PORT/api/projects/PROJECT``."""
        return f"{self.https_url if tls else self.base_url}/api/projects/{project}"

    @property
    def v1_url(self) -> str:
        return self.base_url + "/openai/v1/"

    @property
    def openai_url(self) -> str:
        return self.base_url + "/v1/"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.api_key}

    def run_on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the server's loop (the one that owns the kernel pool), e.g.
        ``emulator.run_on_loop(emulator.backends.containers.run_code(c, code, timeout=10))``."""
        return asyncio.run_coroutine_threadsafe(coro, self.handle.loop).result(timeout)

    # -- raw HTTP -------------------------------------------------------------------------

    def http_client(self, **kw: Any) -> httpx2.Client:
        """An ``httpx2.Client`` on ``base_url`` (no credentials; add ``auth_headers``)."""
        kw.setdefault("base_url", self.base_url)
        kw.setdefault("timeout", _CLIENT_TIMEOUT)
        kw.setdefault("event_hooks", self.recorder.sync_hooks())
        kw.setdefault("trust_env", False)
        kw.setdefault("verify", _ssl_context())
        if self.mode == "inprocess":
            kw.setdefault("transport", InProcessTransport(self.app, self.handle.loop))
        client = httpx2.Client(**kw)
        self._sync_clients.append(client)
        return client

    def async_http_client(self, **kw: Any) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` on ``base_url``; usable from any event loop.

        Over a real server it keeps no idle connections, so nothing leaks past the test's loop.
        """
        kw.setdefault("base_url", self.base_url)
        kw.setdefault("timeout", _CLIENT_TIMEOUT)
        kw.setdefault("event_hooks", self.recorder.async_hooks())
        kw.setdefault("trust_env", False)
        kw.setdefault("verify", _ssl_context())
        if self.mode == "inprocess":
            kw.setdefault("transport", AsyncInProcessTransport(self.app, self.handle.loop))
        else:
            kw.setdefault("limits", httpx2.Limits(max_keepalive_connections=0))
        return httpx2.AsyncClient(**kw)

    # -- SDK clients ----------------------------------------------------------------------

    def openai(self, **kw: Any) -> OpenAI:
        """``OpenAI(base_url=v1_url)`` with the key: Azure v1 as the Azure docs show it."""
        kw.setdefault("base_url", self.v1_url)
        kw.setdefault("api_key", self.api_key)
        kw.setdefault("http_client", self.http_client(base_url=""))
        return OpenAI(**kw)

    def async_openai(self, **kw: Any) -> AsyncOpenAI:
        kw.setdefault("base_url", self.v1_url)
        kw.setdefault("api_key", self.api_key)
        kw.setdefault("http_client", self.async_http_client(base_url=""))
        return AsyncOpenAI(**kw)

    def _azure_kwargs(self, api_version: str, kw: dict[str, Any]) -> dict[str, Any]:
        kw.setdefault("api_version", api_version)
        if "base_url" not in kw:
            kw.setdefault("azure_endpoint", self.base_url)
        if not {"api_key", "azure_ad_token", "azure_ad_token_provider"} & set(kw):
            kw["api_key"] = self.api_key
        return kw

    def azure_openai(self, api_version: str = DEFAULT_AZURE_API_VERSION, **kw: Any) -> AzureOpenAI:
        """``AzureOpenAI(azure_endpoint=base_url, api_version=...)`` with the key (or pass
        ``azure_ad_token_provider``, or ``base_url=emulator.v1_url, api_version="preview"``)."""
        kw = self._azure_kwargs(api_version, kw)
        kw.setdefault("http_client", self.http_client(base_url=""))
        return AzureOpenAI(**kw)

    def async_azure_openai(
        self, api_version: str = DEFAULT_AZURE_API_VERSION, **kw: Any
    ) -> AsyncAzureOpenAI:
        kw = self._azure_kwargs(api_version, kw)
        kw.setdefault("http_client", self.async_http_client(base_url=""))
        return AsyncAzureOpenAI(**kw)

    def close(self) -> None:
        for client in self._sync_clients:
            client.close()
        self._sync_clients.clear()
