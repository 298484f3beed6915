"""Storage-specific refinements of cigate's error tree.

They subclass the shared classes in :mod:`cigate.exceptions` so that callers catching
``StorageError`` or ``BadInputError`` keep working; the extra classes let the gateway map
"no such blob" or "no such tenant" to a 404 without parsing messages.
"""

from __future__ import annotations

from cigate.exceptions import BadInputError, StorageError

#: The hint of every storage configuration error: where the URLs are explained.
STORAGE_HINT = "See docs/storage.md for the --database and --blobs URL forms."

__all__ = ["BlobNotFoundError", "NotFoundError"]


class BlobNotFoundError(StorageError):
    """The blob store holds no blob with this sha256 (never stored, or deleted)."""

    kind = "blob_not_found"
    default_hint = (
        "The metadata says the file is stored but its blob is missing: check that every "
        "gateway process uses the same --blobs store."
    )


class NotFoundError(BadInputError):
    """An id (tenant, file, key, link) is unknown, or belongs to another tenant."""

    kind = "not_found"
    default_hint = "Check the id; ids are only visible to the tenant that owns them."
