"""``cigate gateway tenant limits|purge`` and ``cigate gateway audit export``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cigate import ids
from cigate.cli import main
from cigate.exceptions import BadInputError
from cigate.storage.blob_local import LocalBlobStore
from cigate.storage.metadata import MetadataStore

pytestmark = pytest.mark.storage


def _store_file(url: str, blobs: Path, tenant: str, data: bytes) -> tuple[str, str]:
    """A stored file of ``tenant`` (by name); its gateway id and sha256."""

    async def make() -> tuple[str, str]:
        async with await MetadataStore.open(url) as meta:
            found = await meta.tenant_by_name(tenant)
            assert found is not None
            row = await meta.upsert_file(
                found.id,
                kind="container",
                upstream_file_id=ids.container_file_id(),
                container_id=ids.container_id(),
                response_id=None,
                filename="f.bin",
                origin="citation",
            )

            async def chunks() -> AsyncIterator[bytes]:
                yield data

            info = await LocalBlobStore(blobs).put_stream(chunks())
            await meta.mark_stored(row.id, info.sha256, info.size, None)
            return row.id, info.sha256

    return asyncio.run(make())


def test_an_operator_purges_a_tenant_and_exports_the_proof(tmp_path: Path) -> None:
    url, blobs = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", tmp_path / "blobs"
    cli = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = cli.invoke(main, ["gateway", *args, "--database", url])
        return result.exit_code, result.output

    key = invoke("tenant", "add", "a")[1].strip()
    invoke("tenant", "add", "b")
    a_files = [_store_file(url, blobs, "a", d) for d in (b"shared", b"only a")]
    b_file = _store_file(url, blobs, "b", b"shared")

    code, out = invoke("tenant", "limits", "a", "--quota-bytes", "100", "--retention-days", "7")
    assert (code, out.strip()) == (0, "a\tquota 100 bytes (12 used)\tretention 7 days")
    code, out = invoke("tenant", "limits", "a", "--quota-bytes", "none")
    assert out.strip() == "a\tquota none bytes (12 used)\tretention 7 days"
    code, out = invoke("tenant", "limits", "a", "--quota-bytes", "lots")
    assert code == 2
    assert "'lots' is not a number or 'none'" in out

    code, out = invoke("tenant", "purge", "a", "--yes", "--blobs", str(blobs))
    assert (code, out.strip()) == (0, "purged a: 2 file(s) erased, keys revoked")
    left = {p.name for p in blobs.rglob("*") if p.is_file() and len(p.name) == 64}
    assert left == {b_file[1]}

    async def signs_in() -> bool:
        async with await MetadataStore.open(url) as meta:
            return await meta.tenant_for_key(key) is not None

    assert asyncio.run(signs_in()) is False

    code, out = invoke("audit", "export", "--tenant", "a")
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["file_id"] for r in records) == sorted(f[0] for f in a_files)
    assert {(r["action"], r["actor"], r["detail"]["reason"]) for r in records} == {
        ("erase", "operator:purge", "purge")
    }
    code, everything = invoke("audit", "export")
    assert len(everything.splitlines()) == 2
    code, after = invoke("audit", "export", "--after", str(records[0]["id"]))
    assert [json.loads(line)["id"] for line in after.splitlines()] == [records[1]["id"]]
    code, out = invoke("tenant", "purge", "nobody", "--yes", "--blobs", str(blobs))
    assert code == BadInputError.exit_code
    assert "no tenant named 'nobody'" in out
