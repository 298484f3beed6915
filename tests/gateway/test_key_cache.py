"""The gateway-key cache (cachetools' TTLCache): bounded, and a revoked key stops working
within its time to live."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from starlette.requests import Request

from cigate.exceptions import AccessDeniedError
from cigate.gateway.tenants import TenantResolver
from cigate.storage.metadata import MetadataStore


def _request(key: str) -> Request:
    return Request({"type": "http", "headers": [(b"api-key", key.encode())]})


def test_a_revoked_key_works_until_its_cache_entry_expires_then_is_refused(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with await MetadataStore.open(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}") as meta:
            tenant = await meta.create_tenant("acme")
            key = await meta.add_key(tenant.id)
            resolver = TenantResolver(meta, ttl=0.3)
            assert await resolver.tenant_id(_request(key)) == tenant.id
            (listed,) = await meta.list_keys(tenant.id)
            assert await meta.revoke_key(tenant.id, listed.id)
            assert await resolver.tenant_id(_request(key)) == tenant.id  # cached
            await asyncio.sleep(0.4)
            with pytest.raises(AccessDeniedError, match="Invalid gateway key"):
                await resolver.tenant_id(_request(key))

    asyncio.run(scenario())


def test_the_key_cache_holds_at_most_its_bound_and_keeps_answering(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await MetadataStore.open(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}") as meta:
            resolver = TenantResolver(meta, ttl=60, max_entries=3)
            tenants = []
            for i in range(10):
                tenant = await meta.create_tenant(f"t{i}")
                tenants.append((tenant.id, await meta.add_key(tenant.id)))
            for _ in range(2):
                for tenant_id, key in tenants:
                    assert await resolver.tenant_id(_request(key)) == tenant_id
                    assert len(resolver._cache) <= 3

    asyncio.run(scenario())
