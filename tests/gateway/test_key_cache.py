"""The gateway-key cache (cachetools' TTLCache): bounded, and a revoked key stops working
within its time to live."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event
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


def test_callers_with_one_uncached_key_share_one_store_read_and_its_answer(
    tmp_path: Path,
) -> None:
    """200 requests of one tenant arriving while its entry is cold read the store once (they
    all read it before, and at 200 a second the reads queued for 0.87 s). A wrong key is
    refused for everyone asking with it, a caller that leaves does not fail the others, and
    the next expiry reads again."""

    async def scenario() -> None:
        async with await MetadataStore.open(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}") as meta:
            tenant = await meta.create_tenant("acme")
            key = await meta.add_key(tenant.id)
            reads = 0

            def count(conn: object, cursor: object, statement: str, *_: object) -> None:
                nonlocal reads
                reads += "api_keys" in statement

            event.listen(meta._engine.sync_engine, "before_cursor_execute", count)
            resolver = TenantResolver(meta, ttl=0.3)
            leaver = asyncio.create_task(resolver.tenant_id(_request(key)))
            await asyncio.sleep(0)
            calls = [resolver.tenant_id(_request(key)) for _ in range(200)]
            leaver.cancel()
            assert set(await asyncio.gather(*calls)) == {tenant.id}
            assert reads == 1
            wrong = [resolver.tenant_id(_request("cgk_" + "x" * 43)) for _ in range(20)]
            outcomes = await asyncio.gather(*wrong, return_exceptions=True)
            assert all(isinstance(o, AccessDeniedError) for o in outcomes)
            assert reads == 2
            await asyncio.sleep(0.4)
            assert await resolver.tenant_id(_request(key)) == tenant.id
            assert reads == 3

    asyncio.run(scenario())
