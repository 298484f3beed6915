"""Multipart uploads as the engine's hosts read them (the emulator, the gateway's own containers).

The body has passed :class:`cigate.web.bodies.BodyGuard` (size caps) first; the parser's
refusals are the API's 400 in the OpenAI envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from cigate.engine.errors import BadRequestError

__all__ = ["MAX_FORM_FIELD", "MAX_FORM_PARTS", "upload_form"]

#: Largest non-file field of a multipart upload (``purpose``, ``expires_after[...]``).
MAX_FORM_FIELD = 64 * 1024
#: Fields and files one multipart upload may carry (the API uses two or three).
MAX_FORM_PARTS = 16


@asynccontextmanager
async def upload_form(request: Request) -> AsyncIterator[FormData]:
    """The multipart form of an upload, files spooled to disk; every file is closed on exit.

    A body of another type is an empty form (the handler names the missing ``file``). The
    parser's refusals (no boundary, too many parts, a field too large, broken framing) are
    the API's 400 with the parser's words. Starlette's parser leaves a file part that never
    ended (a body cut before its closing boundary) out of the form, unclosed: it is closed here
    too, so nothing leaks.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        yield FormData()
        return
    parser = MultiPartParser(
        request.headers,
        request.stream(),
        max_files=MAX_FORM_PARTS,
        max_fields=MAX_FORM_PARTS,
        max_part_size=MAX_FORM_FIELD,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequestError(f"Invalid multipart body: {exc.message}") from None
    try:
        yield form
    finally:
        await form.close()
        for spooled in parser._files_to_close_on_error:  # includes parts that never ended
            spooled.close()
