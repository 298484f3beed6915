"""The shared resources of one gateway process, created by the app's lifespan.

Handlers reach them through :func:`services` (``request.app.state.services``) instead of module
globals, so two apps (two "gateway processes" in one test) never share a store or a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from cigate.gateway.harvester import Harvester
from cigate.gateway.recorder import Recorder
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.tasks import TaskRegistry
from cigate.gateway.tenants import TenantResolver
from cigate.gateway.upstream import Upstream
from cigate.gateway.upstreams import Pool
from cigate.storage.blobs import BlobStore
from cigate.storage.metadata import MetadataStore

if TYPE_CHECKING:
    from cigate.gateway.interpreter.service import Interpreter

__all__ = ["Services", "services"]


@dataclass
class Services:
    settings: GatewaySettings
    meta: MetadataStore
    blobs: BlobStore
    #: The default (first) upstream: the one for calls that name no upstream-bound object
    #: and go nowhere else (the self-hosted interpreter's model, Files-API adoption).
    upstream: Upstream
    harvester: Harvester
    recorder: Recorder
    tasks: TaskRegistry
    tenants: TenantResolver
    link_secret: bytes
    #: Every configured upstream and their health (:mod:`cigate.gateway.upstreams`).
    pool: Pool
    #: The self-hosted code interpreter (``--code-interpreter self``), else ``None``.
    interpreter: Interpreter | None = None

    def public_base(self, request: Request) -> str:
        """Base URL for links the gateway hands out (configured, else the request's own)."""
        return (self.settings.public_url or str(request.base_url)).rstrip("/")


def services(request: Request) -> Services:
    svc = request.app.state.services
    assert isinstance(svc, Services)
    return svc
