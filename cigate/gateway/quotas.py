"""Storage quotas per tenant: bytes of stored files a tenant may keep (default: no limit).

The limit is enforced where a copy becomes ``stored``
(:meth:`cigate.storage.metadata_erasure.ErasureQueries.store_copy`, serialised per tenant), so
concurrent copies cannot overshoot it together. A file past the quota is never silently lost:
its row is ``failed`` with the kind ``quota_exceeded`` and a message that says what to do, its
download answers 403 with that message (:func:`quota_error`), and it is copied on the next
download once the tenant erased enough or the operator raised the quota. A tenant already
at or over its quota does not even fetch (:func:`quota_full`).
"""

from __future__ import annotations

from cigate.exceptions import QuotaExceededError
from cigate.storage.blobs import BlobStore
from cigate.storage.metadata import MetadataStore
from cigate.storage.metadata_erasure import KIND_QUOTA
from cigate.storage.records import BlobInfo, FileRow

__all__ = ["KIND_QUOTA", "blob_present", "quota_error", "quota_full"]


async def quota_full(meta: MetadataStore, tenant_id: str) -> str | None:
    """Why the tenant may not store another byte, or ``None`` if it may."""
    tenant = await meta.get_tenant(tenant_id)
    if tenant is None or tenant.quota_bytes is None:
        return None
    used = await meta.usage(tenant_id)
    if used < tenant.quota_bytes:
        return None
    return (
        f"the tenant's storage quota of {tenant.quota_bytes} bytes is full ({used} used); "
        "erase files or ask the operator for a larger quota, then download it again"
    )


def quota_error(row: FileRow) -> QuotaExceededError:
    """The caller's answer for a file its quota kept out of the store (403: SDKs do not retry
    it, as they would a 429 or a 5xx)."""
    return QuotaExceededError(f"File '{row.id}' was not stored: {row.error_message}", status=403)


async def blob_present(blobs: BlobStore, info: BlobInfo) -> bool:
    """Whether the blob a copy put is still there, whole (an erasure may have taken it)."""
    found = await blobs.stat(info.sha256)
    return found is not None and found.size == info.size
