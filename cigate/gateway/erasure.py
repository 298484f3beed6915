"""Erasure: of one file (a tenant's ``DELETE /files/{id}``, retention) or of a whole tenant.

Erasing a file removes its row, its signed links and, when no other row names the same
sha256, its blob, in either blob store, and appends an ``erase`` record to the audit log
(:mod:`cigate.storage.metadata_erasure`, which also serialises erasure with concurrent copies
of the same bytes). The file then answers 404 on every download path of the gateway.

Erased files stay erased: a tombstone keeps the resume sweep, a later listing of the
container and on-demand adoption of a Files-API id from recording them again, and the
gateway's container and file paths answer 404 for them instead of relaying to the upstream.
Only a citation by a *new* response (or run) brings a file back: the upstream still holds it
and the tenant's model cited it again, so it is a new copy (a new ``gwf_`` id).

Deleting the container upstream does not erase the copies (keeping them after the container
expires is the gateway's purpose); erasure does.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cigate.gateway.errors import not_found
from cigate.storage.blobs import BlobStore
from cigate.storage.metadata import MetadataStore
from cigate.storage.records import Download, FileRow

__all__ = ["erase", "purge_tenant", "refuse_erased", "without_erased"]

log = logging.getLogger(__name__)

_PAGE = 200


async def erase(
    meta: MetadataStore, blobs: BlobStore, row: FileRow, *, actor: str, reason: str
) -> Download | None:
    """Erase ``row`` (of its tenant); the audit record, or ``None`` if it was gone already."""
    record = await meta.erase_file(
        row.tenant_id, row.id, actor=actor, reason=reason, delete_blob=blobs.delete
    )
    if record is not None:
        log.info("erased %s of %s (%s, by %s)", row.id, row.tenant_id, reason, actor)
    return record


async def purge_tenant(meta: MetadataStore, blobs: BlobStore, tenant_id: str, *, actor: str) -> int:
    """Erase every file of the tenant, its responses and its keys; returns how many files.

    The tenant's row, its ownership claims and its audit log stay (the proof of the purge);
    with its keys gone nobody can sign in as it, unless an Entra mapping still names it.
    """
    await meta.forget_tenant_records(tenant_id)  # first: no key signs in any more
    count = 0
    while rows := await meta.list_files(tenant_id, limit=_PAGE):
        for row in rows:
            if await erase(meta, blobs, row, actor=actor, reason="purge"):
                count += 1
    await meta.forget_tenant_records(tenant_id)
    return count


async def refuse_erased(
    meta: MetadataStore, tenant_id: str, upstream_file_id: str, container_id: str | None
) -> None:
    """The unknown-file answer for a file the tenant erased (instead of relaying upstream)."""
    if await meta.erased(tenant_id, upstream_file_id, container_id) is not None:
        raise not_found("file", upstream_file_id)


async def without_erased(
    meta: MetadataStore, tenant_id: str, container_id: str | None, body: bytes
) -> bytes:
    """A relayed upstream list page (``{"data": [{"id": …}, …], "first_id", "last_id"}``)
    without the files the tenant erased; the bytes unchanged when it names none of them."""
    try:
        page: Any = json.loads(body)
    except ValueError:
        return body
    data = page.get("data") if isinstance(page, dict) else None
    if not isinstance(data, list):
        return body
    listed = [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]
    gone = await meta.erased_among(tenant_id, container_id, listed)
    if not gone:
        return body
    kept = [i for i in data if not (isinstance(i, dict) and str(i.get("id")) in gone)]
    page["data"] = kept
    for key, at in (("first_id", 0), ("last_id", -1)):
        if key in page:
            page[key] = kept[at].get("id") if kept and isinstance(kept[at], dict) else None
    return json.dumps(page).encode()
