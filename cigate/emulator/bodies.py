"""Request bodies as the emulator's handlers read them: one JSON reader, one upload reader.

Every body has already passed :class:`cigate.web.bodies.BodyGuard` (installed by
``create_app``): ``Content-Length`` checked, counted against ``max_json_body`` (JSON and
anything else) or ``max_upload_body`` (``multipart/*``) with a 413 the moment it passes the
cap, and a body sent as JSON parsed by the strict rules of :mod:`cigate.web.bodies`. Handlers
never call ``json.loads`` or ``request.form()`` themselves: they call :func:`json_object` and
:func:`upload_form`, so every body of every route is read by the same rules.

Refusals are :class:`~cigate.web.bodies.BodyError`; :mod:`cigate.emulator.errors` renders them
in the OpenAI envelope (Azure v1 validates request bodies in that envelope too, api-reference
5.2), a syntax error with OpenAI's own message and a null ``code``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from cigate.engine.errors import BadRequestError
from cigate.web.bodies import NOT_PARSED, parse_json_async, parsed, require_object

__all__ = ["json_object", "upload_form"]

#: Largest non-file field of a multipart upload (``purpose``, ``expires_after[...]``).
MAX_FORM_FIELD = 64 * 1024
#: Fields and files one multipart upload may carry (the API uses two or three).
MAX_FORM_PARTS = 16


async def json_object(request: Request, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request's JSON object; ``empty`` (when given) stands for an empty body.

    A body sent as JSON was parsed by the guard as it was read; one sent with another type
    (``curl -d`` sends ``application/x-www-form-urlencoded``) is parsed here by the same rules.
    """
    raw = await request.body()
    value = parsed(request.scope)
    if value is NOT_PARSED:
        if empty is not None and not raw.strip(b" \t\r\n"):
            return dict(empty)
        value = await parse_json_async(raw)
    return require_object(value)


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
