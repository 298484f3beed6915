"""``cigate.storage`` exports exactly what the gateway codes against (STYLE rule 1)."""

from __future__ import annotations

import pytest

import cigate.storage

pytestmark = pytest.mark.storage


def test_the_storage_package_exports_exactly_its_documented_surface() -> None:
    assert set(cigate.storage.__all__) == {
        "CHUNK_SIZE",
        "ApiKey",
        "BlobInfo",
        "BlobNotFoundError",
        "BlobStore",
        "Download",
        "FileKind",
        "FileOrigin",
        "FileRow",
        "FileState",
        "Link",
        "MetadataStore",
        "NotFoundError",
        "ResponseRecord",
        "Tenant",
        "default_database_url",
        "open_blob_store",
        "read_all",
    }
    for name in cigate.storage.__all__:
        assert hasattr(cigate.storage, name), name
