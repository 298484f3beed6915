"""Serving stored bytes: raw content with a type guessed from the name, in large chunks.

Starlette's ``FileResponse`` already does the rules of safe file serving (stat off the loop, HEAD,
ETag, Range); we only raise its chunk size, because 64 KiB reads cap throughput far below the disk
and the socket (machine-notes: ~250 MB/s vs ~1.4 GB/s with 1 MiB).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.responses import FileResponse

CHUNK_SIZE = 1024 * 1024


class LargeChunkFileResponse(FileResponse):
    chunk_size = CHUNK_SIZE


def content_type_for(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def file_content(path: Path, filename: str) -> LargeChunkFileResponse:
    """The file's raw bytes as an attachment named ``filename``."""
    return LargeChunkFileResponse(
        path,
        media_type=content_type_for(filename),
        filename=filename,
        headers={"x-content-type-options": "nosniff"},
    )
