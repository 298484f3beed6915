"""Blob store URLs: every documented form opens, misconfiguration fails at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cigate.exceptions import ConfigurationError
from cigate.storage import open_blob_store
from cigate.storage.blob_azure import AzureBlobStore
from cigate.storage.blob_local import LocalBlobStore

pytestmark = pytest.mark.storage


async def test_a_path_and_a_file_url_open_a_local_store(tmp_path: Path) -> None:
    by_path = open_blob_store(str(tmp_path / "a"))
    by_url = open_blob_store(f"file://{tmp_path / 'b'}")
    assert isinstance(by_path, LocalBlobStore)
    assert by_path.root == tmp_path / "a"
    assert isinstance(by_url, LocalBlobStore)
    assert by_url.root == tmp_path / "b"
    assert by_path.path("ab" + "0" * 62) == tmp_path / "a" / "ab" / "00" / ("ab" + "0" * 62)


@pytest.mark.parametrize(
    "url",
    [
        "azure://files?connection_string=UseDevelopmentStorage%3Dtrue",
        "azure://files?account=myaccount",
        "azure://files?account=myaccount&endpoint=https%3A%2F%2Fx.blob.core.chinacloudapi.cn",
    ],
    ids=["azurite-shortcut", "entra-id", "entra-id-sovereign-cloud"],
)
async def test_azure_urls_open_without_touching_the_network(url: str) -> None:
    store = open_blob_store(url)
    try:
        assert isinstance(store, AzureBlobStore)
    finally:
        await store.close()


async def test_the_connection_string_can_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CIGATE_BLOB_CONNECTION_STRING", "UseDevelopmentStorage=true")
    store = open_blob_store("azure://files")
    try:
        assert "127.0.0.1:10000" in repr(store)
    finally:
        await store.close()
    assert "CIGATE_BLOB_CONNECTION_STRING" in os.environ


@pytest.mark.parametrize(
    "url",
    [
        "",
        "azure://files",
        "azure://Bad_Name?account=x",
        "azure://files?acount=typo",
        "azure://files?connection_string=garbage",
        "s3://bucket",
        "file://otherhost/x",
    ],
    ids=[
        "empty",
        "no-credentials",
        "bad-container",
        "unknown-option",
        "bad-connection-string",
        "unknown-scheme",
        "remote-file-url",
    ],
)
def test_misconfigured_blob_urls_fail_at_start_up(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_blob_store(url)
