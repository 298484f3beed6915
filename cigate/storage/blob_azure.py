"""Blobs in Azure Blob Storage (or Azurite), named ``<sha256>`` in one container.

Crash-safe put without knowing the digest up front:

1. blocks of 4 MiB are staged (a few in flight) on ``.staging/<UTC stamp>-<uuid>`` while
   the bytes are hashed; staged blocks are invisible until committed, so a crash here leaves
   nothing that anyone can read;
2. when the stream ends and the size checks out, the staging blob is committed and copied
   server-side (same account, no bytes through us) to ``<sha256>``, unless a blob with that
   digest exists already (content addressing: identical bytes are stored once);
3. the staging blob is deleted, on success and on every failure.

A process killed between 1 and 3 leaves a staging blob; :meth:`AzureBlobStore.cleanup`
deletes staging blobs older than a grace period (default 1 day, the stamp in the name
tells their age even when they hold only uncommitted blocks). A reader never sees a
partial ``<sha256>``: a committed block list and a finished copy are both atomic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from cigate.exceptions import CigateError, ConfigurationError, IntegrityError, StorageError
from cigate.storage.blobs import CHUNK_SIZE, check_range, check_sha256
from cigate.storage.errors import STORAGE_HINT, BlobNotFoundError
from cigate.storage.records import BlobInfo

__all__ = ["AzureBlobStore", "azurite_connection_string"]

BLOCK_SIZE = 4 * 1024 * 1024
_STAGING = ".staging/"
_STAMP = "%Y%m%dT%H%M%SZ"
_CONTAINER_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
#: The well-known Azurite account key (public, documented by Microsoft; not a secret).
_DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(port: int = 10000, host: str = "127.0.0.1") -> str:
    """The connection string of an Azurite blob service (``devstoreaccount1``)."""
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={_DEV_KEY};BlobEndpoint=http://{host}:{port}/devstoreaccount1;"
    )


@contextmanager
def _azure_errors(action: str) -> Iterator[None]:
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        yield
    except CigateError:
        raise
    except ResourceNotFoundError as exc:
        raise BlobNotFoundError(f"{action}: not found") from exc
    except (AzureError, OSError) as exc:
        raise StorageError(f"Azure Blob Storage: {action} failed: {exc}") from exc


class AzureBlobStore:
    """A :class:`~cigate.storage.blobs.BlobStore` over one Azure Blob Storage container."""

    def __init__(
        self,
        service: Any,
        container: str,
        *,
        credential: Any = None,
        block_size: int = BLOCK_SIZE,
        concurrency: int = 3,
        staging_grace: timedelta = timedelta(days=1),
    ) -> None:
        self._service = service
        self._container = service.get_container_client(container)
        self._credential = credential
        self._block_size = block_size
        self._concurrency = concurrency
        self.staging_grace = staging_grace
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._delegation: tuple[Any, datetime] | None = None

    @classmethod
    def from_settings(
        cls,
        container: str,
        *,
        account: str | None = None,
        endpoint: str | None = None,
        connection_string: str | None = None,
    ) -> AzureBlobStore:
        """Build from the parts of an ``azure://`` URL (see :func:`open_blob_store`)."""
        if not _CONTAINER_NAME.fullmatch(container or ""):
            raise ConfigurationError(
                f"not a valid Azure container name: {container!r}", hint=STORAGE_HINT
            )
        try:
            from azure.storage.blob.aio import BlobServiceClient
        except ImportError as exc:  # pragma: no cover - the azure extra is a dev dependency
            raise ConfigurationError(
                "Azure blobs need the azure extra", hint="pip install 'cigate-toolkit[azure]'"
            ) from exc
        sizes: dict[str, Any] = {
            "max_single_get_size": CHUNK_SIZE,
            "max_chunk_get_size": CHUNK_SIZE,
        }
        if account or endpoint:
            from azure.identity.aio import DefaultAzureCredential

            url = endpoint or f"https://{account}.blob.core.windows.net"
            credential = DefaultAzureCredential()
            service = BlobServiceClient(url, credential=credential, **sizes)
            return cls(service, container, credential=credential)
        if not connection_string:
            raise ConfigurationError(
                "azure:// blob URLs need ?account=NAME (Microsoft Entra ID) or a connection "
                "string (?connection_string=… or CIGATE_BLOB_CONNECTION_STRING)",
                hint=STORAGE_HINT,
            )
        if connection_string.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
            connection_string = azurite_connection_string()
        try:
            service = BlobServiceClient.from_connection_string(connection_string, **sizes)
        except ValueError as exc:
            raise ConfigurationError(
                f"invalid Azure connection string: {exc}", hint=STORAGE_HINT
            ) from exc
        return cls(service, container)

    def __repr__(self) -> str:
        return f"AzureBlobStore({self._container.url!r})"

    async def _ensure_container(self) -> None:
        if self._ready:
            return
        from azure.core.exceptions import ResourceExistsError

        async with self._ready_lock:
            if not self._ready:
                with _azure_errors("creating the blob container"), suppress(ResourceExistsError):
                    await self._container.create_container()
                self._ready = True

    async def put_stream(
        self, chunks: AsyncIterator[bytes], *, expected_size: int | None = None
    ) -> BlobInfo:
        await self._ensure_container()
        stamp = datetime.now(UTC).strftime(_STAMP)
        staging = self._container.get_blob_client(f"{_STAGING}{stamp}-{uuid.uuid4().hex}")
        slots = asyncio.Semaphore(self._concurrency)
        tasks: list[asyncio.Task[None]] = []
        block_ids: list[str] = []
        digest = hashlib.sha256()
        size = 0

        async def stage(block_id: str, data: bytes) -> None:
            try:
                with _azure_errors("staging a block"):
                    # A stream, not bytes: aiohttp warns that a big bytes body blocks the loop.
                    await staging.stage_block(block_id, io.BytesIO(data), length=len(data))
            finally:
                slots.release()

        async def flush(data: bytes) -> None:
            await asyncio.to_thread(digest.update, data)
            await slots.acquire()  # at most `concurrency` blocks in memory and in flight
            for task in tasks:
                if task.done() and task.exception() is not None:
                    slots.release()
                    raise task.exception()  # type: ignore[misc]
            block_id = base64.b64encode(f"{len(block_ids):08d}".encode()).decode()
            block_ids.append(block_id)
            tasks.append(asyncio.create_task(stage(block_id, data)))

        try:
            buffer = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    raise IntegrityError(
                        f"received more than the expected {expected_size} bytes; nothing was kept"
                    )
                buffer += chunk
                while len(buffer) >= self._block_size:
                    await flush(bytes(memoryview(buffer)[: self._block_size]))
                    del buffer[: self._block_size]
            if buffer:
                await flush(bytes(buffer))
            await asyncio.gather(*tasks)
            if expected_size is not None and size != expected_size:
                raise IntegrityError(
                    f"received {size} bytes, expected {expected_size}; nothing was kept"
                )
            sha = digest.hexdigest()
            if await self.stat(sha) is None:
                with _azure_errors("committing a blob"):
                    await staging.commit_block_list(block_ids)
                await self._copy(staging, sha, size)
            return BlobInfo(sha, size)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._discard(staging)

    async def _copy(self, staging: Any, sha: str, size: int) -> None:
        """Server-side copy of the committed staging blob to its content address."""
        target = self._container.get_blob_client(sha)
        source = staging.url + "?" + await self._read_sas(staging.blob_name)
        with _azure_errors("copying a blob to its content address"):
            props = await target.start_copy_from_url(source)
            status = props.get("copy_status")
            while status == "pending":
                await asyncio.sleep(0.1)
                status = (await target.get_blob_properties()).copy.status
            if status != "success":
                raise StorageError(f"copying blob {sha} ended with status {status!r}")
            stored = (await target.get_blob_properties()).size
        if stored != size:
            raise IntegrityError(f"blob {sha} has {stored} bytes after the copy, not {size}")

    async def _read_sas(self, blob_name: str) -> str:
        """A 1-hour read SAS for a staging blob (account key, or Entra user delegation)."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = datetime.now(UTC)
        kwargs: dict[str, Any] = {}
        account_key = getattr(self._service.credential, "account_key", None)
        if account_key:
            kwargs["account_key"] = account_key
        else:
            if self._delegation is None or self._delegation[1] < now + timedelta(minutes=10):
                with _azure_errors("getting a user delegation key"):
                    key = await self._service.get_user_delegation_key(
                        now - timedelta(minutes=5), now + timedelta(hours=2)
                    )
                self._delegation = (key, now + timedelta(hours=2))
            kwargs["user_delegation_key"] = self._delegation[0]
        return str(
            generate_blob_sas(
                self._service.account_name,
                self._container.container_name,
                blob_name,
                permission=BlobSasPermissions(read=True),
                expiry=now + timedelta(hours=1),
                start=now - timedelta(minutes=5),
                **kwargs,
            )
        )

    async def _discard(self, staging: Any) -> None:
        """Delete a staging blob, committed or holding only uncommitted blocks."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            await staging.delete_blob()
        except ResourceNotFoundError:
            # Only uncommitted blocks (or nothing): an empty commit replaces them, then delete.
            try:
                await staging.commit_block_list([])
                await staging.delete_blob()
            except AzureError:
                pass  # cleanup() removes it later
        except AzureError:
            pass

    async def open(
        self, sha256: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        info = await self.stat(sha256)
        if info is None:
            raise BlobNotFoundError(f"blob {sha256} is not stored")
        begin, stop = check_range(info.size, start, end)
        if begin >= stop:
            return _nothing()
        # The download starts now: a blob deleted since the stat (an erasure) is a
        # BlobNotFoundError before the caller answered, not a body cut short.
        blob = self._container.get_blob_client(sha256)
        with _azure_errors(f"reading blob {sha256}"):
            stream = await blob.download_blob(offset=begin, length=stop - begin)
        return self._read(sha256, stream)

    async def _read(self, sha256: str, stream: Any) -> AsyncIterator[bytes]:
        with _azure_errors(f"reading blob {sha256}"):
            async for chunk in stream.chunks():
                for offset in range(0, len(chunk), CHUNK_SIZE):
                    yield chunk[offset : offset + CHUNK_SIZE]

    async def stat(self, sha256: str) -> BlobInfo | None:
        check_sha256(sha256)
        await self._ensure_container()
        try:
            with _azure_errors(f"reading blob {sha256}"):
                props = await self._container.get_blob_client(sha256).get_blob_properties()
        except BlobNotFoundError:
            return None
        return BlobInfo(sha256, int(props.size))

    async def delete(self, sha256: str) -> None:
        check_sha256(sha256)
        try:
            with _azure_errors(f"deleting blob {sha256}"):
                await self._container.get_blob_client(sha256).delete_blob()
        except BlobNotFoundError:
            pass

    async def cleanup(self, older_than: float | None = None) -> int:
        """Delete staging blobs older than ``older_than`` s / ``staging_grace`` (dead puts)."""
        await self._ensure_container()
        grace = self.staging_grace if older_than is None else timedelta(seconds=older_than)
        cutoff = datetime.now(UTC) - grace
        removed = 0
        with _azure_errors("listing staging blobs"):
            names = [
                b.name
                async for b in self._container.list_blobs(
                    name_starts_with=_STAGING, include=["uncommittedblobs"]
                )
            ]
        for name in names:
            stamp = name[len(_STAGING) :].split("-", 1)[0]
            try:
                made = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
            except ValueError:
                made = datetime.min.replace(tzinfo=UTC)  # not ours in form: garbage anyway
            if made <= cutoff:
                await self._discard(self._container.get_blob_client(name))
                removed += 1
        return removed

    async def check(self) -> None:
        await self._ensure_container()  # a fresh store creates its container on first use
        with _azure_errors("checking the blob container"):
            await self._container.get_container_properties()

    async def list_names(self) -> list[str]:
        await self._ensure_container()
        with _azure_errors("listing blobs"):
            return sorted(
                [b.name async for b in self._container.list_blobs(include=["uncommittedblobs"])]
            )

    async def close(self) -> None:
        await self._service.close()
        if self._credential is not None:
            await self._credential.close()


async def _nothing() -> AsyncIterator[bytes]:
    """The chunks of an empty range: none."""
    empty: tuple[bytes, ...] = ()
    for chunk in empty:
        yield chunk
