"""Test helpers: a gateway app under Starlette's TestClient, with direct access to its stores.

``GatewayHarness`` enters the app (so the lifespan runs), and runs coroutines on the app's own
event loop through the client's portal, so tests can seed tenants and stored files exactly as
the harvester would, then exercise the HTTP surface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
from starlette.testclient import TestClient

from cigate import ids
from cigate.gateway.app import create_app
from cigate.gateway.context import Services
from cigate.gateway.settings import GatewaySettings
from cigate.gateway.upstream import Upstream
from cigate.storage.records import FileRow

T = TypeVar("T")


def use_upstream_client(upstream: Upstream, client: httpx2.AsyncClient) -> None:
    """Send every call of ``upstream`` through ``client``: the forwarded ones and the
    harvest's (its own pool), so that no call of a test leaves for the real network."""
    upstream.client = upstream.harvest.client = client


def mock_upstream(gw: GatewayHarness, handler: Callable[[httpx2.Request], Any]) -> None:
    """The gateway's upstream answers every call with ``handler`` (``httpx2.MockTransport``)."""
    use_upstream_client(
        gw.services.upstream, httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    )


@dataclass
class Tenant:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


class GatewayHarness:
    """One gateway app, entered; ``client`` is an httpx2 client bound to it."""

    def __init__(self, settings: GatewaySettings, **app_options: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, **app_options)
        self.client = TestClient(self.app, raise_server_exceptions=True)

    def __enter__(self) -> GatewayHarness:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)

    @property
    def services(self) -> Services:
        svc = self.app.state.services
        assert isinstance(svc, Services)
        return svc

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        portal = self.client.portal
        assert portal is not None
        return portal.call(lambda: fn(*args, **kwargs))

    def add_tenant(self, name: str) -> Tenant:
        async def make() -> Tenant:
            meta = self.services.meta
            tenant = await meta.create_tenant(name)
            return Tenant(tenant.id, await meta.add_key(tenant.id))

        return self.call(make)

    async def cited_file(
        self,
        tenant_id: str,
        filename: str,
        *,
        container_id: str | None = None,
        file_id: str | None = None,
        response_id: str | None = None,
        path: str | None = None,
    ) -> FileRow:
        """A ``pending`` container file, as a citation records it (a new id for each id not
        given); the harvester copies it next. Call it on the harness's loop (``call``)."""
        return await self.services.meta.upsert_file(
            tenant_id,
            kind="container",
            upstream_file_id=file_id or ids.container_file_id(),
            container_id=container_id or ids.container_id(),
            response_id=response_id,
            filename=filename,
            origin="citation",
            path=path,
        )

    def put_file(
        self,
        tenant: Tenant,
        data: bytes,
        filename: str,
        *,
        container_id: str | None = None,
        file_id: str | None = None,
        response_id: str | None = None,
        content_type: str | None = None,
        path: str | None = None,
    ) -> FileRow:
        """A ``stored`` container file, as the harvester would leave it."""

        async def make() -> FileRow:
            svc = self.services
            if response_id:
                await svc.meta.record_response(
                    tenant.id, response_id, upstream="test", model=None, container_ids=[]
                )
            row = await self.cited_file(
                tenant.id,
                filename,
                container_id=container_id,
                file_id=file_id,
                response_id=response_id,
                path=path,
            )
            # Leased as the harvester's copy would be: the resume sweep must not copy the row
            # from the (dead) upstream and record it failed over the stored bytes.
            await svc.meta.claim_file(row.id, "harness", 600)

            async def chunks() -> AsyncIterator[bytes]:
                yield data

            info = await svc.blobs.put_stream(chunks(), expected_size=len(data))
            return await svc.meta.mark_stored(row.id, info.sha256, info.size, content_type)

        return self.call(make)
