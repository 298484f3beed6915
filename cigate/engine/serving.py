"""Serving file bytes from a descriptor that is already open: the engine's one download path
(the emulator's files and containers, the gateway's self-hosted containers).

A container file is opened once, by descriptor, beneath the container's directory
(:func:`cigate.engine.workdir.open_regular`); the response is built from that descriptor's
``fstat`` and streams from that descriptor, so a name swapped for a symlink (to
``/proc/self/environ``, a host file, another container's file), a directory or a FIFO while a
download runs can never change which bytes are sent. Starlette's ``FileResponse`` is not used:
it stats a path and opens it again later, which is exactly that race.

The HTTP rules are the gateway's (:mod:`cigate.web.files`): ``HEAD`` without a body, a strong
ETag (inode, size and mtime) with ``If-None-Match`` -> 304, a single ``Range`` -> 206
(``If-Range`` honoured), an unsatisfiable range -> 416 with ``Content-Range: bytes */SIZE``,
other ``Range`` forms ignored (the whole file, 200), ``attachment`` with an exact RFC 8187
``filename*`` and an ASCII fallback, ``nosniff``. Bytes go out in 1 MiB chunks, read off the
event loop: 64 KiB reads cap throughput far below the disk and the socket (machine-notes:
~250 MB/s vs ~1.4 GB/s).

A file that shrinks while it is sent (the code truncated it) ends the body early: the
connection is cut, so the client sees an incomplete transfer, never padding or other bytes.
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import os
import stat
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cigate.engine.workdir import RegularFile
from cigate.web.files import content_disposition, etag_matches, parse_range

__all__ = ["CHUNK_SIZE", "content_type_for", "open_stored", "serve_open_file"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024


def content_type_for(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def open_stored(path: Path) -> RegularFile | None:
    """A file the server itself keeps (the Files API's store), opened for serving, or
    ``None`` when it is gone or is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return RegularFile(fd, st)


def _etag(opened: RegularFile) -> str:
    st = opened.stat
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def serve_open_file(request: Request, opened: RegularFile, filename: str) -> Response:
    """The response to one download of ``opened`` (which it owns and closes) as ``filename``."""
    size, etag = opened.size, _etag(opened)
    headers = {
        "content-type": content_type_for(filename),
        "content-disposition": content_disposition(filename),
        "etag": etag,
        "last-modified": formatdate(opened.stat.st_mtime, usegmt=True),
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        opened.close()
        return Response(status_code=304, headers={"etag": etag})
    start, end, status = 0, size - 1, 200
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header and (if_range is None or if_range.strip() == etag):
        parsed = parse_range(range_header, size)
        if parsed is False:
            opened.close()
            headers["content-range"] = f"bytes */{size}"
            return Response(status_code=416, headers=headers)
        if isinstance(parsed, tuple):
            start, end, status = parsed[0], parsed[1], 206
            headers["content-range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1 if size else 0
    headers["content-length"] = str(length)
    if request.method == "HEAD" or length == 0:
        opened.close()
        return Response(status_code=status, headers=headers)
    return StreamingResponse(_chunks(opened, start, length), status_code=status, headers=headers)


async def _chunks(opened: RegularFile, offset: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes from ``offset``, 1 MiB at a time, from the open descriptor only."""
    try:
        while length > 0:
            chunk = await anyio.to_thread.run_sync(opened.pread, min(CHUNK_SIZE, length), offset)
            if not chunk:
                log.warning("a file shrank while it was being served: the transfer is cut")
                return
            offset += len(chunk)
            length -= len(chunk)
            yield chunk
    finally:
        opened.close()
