"""Request bodies as the emulator's handlers read them: one JSON reader, one upload reader.

Every body has already passed :class:`cigate.web.bodies.BodyGuard` (installed by
``create_app``): ``Content-Length`` checked, counted against ``max_json_body`` (JSON and
anything else) or ``max_upload_body`` (``multipart/*``) with a 413 the moment it passes the
cap, and a body sent as JSON parsed by the strict rules of :mod:`cigate.web.bodies`. Handlers
never call ``json.loads`` or ``request.form()`` themselves: they call :func:`json_object` and
:func:`upload_form` (:mod:`cigate.engine.uploads`, shared with the gateway's self-hosted
containers), so every body of every route is read by the same rules.

Refusals are :class:`~cigate.web.bodies.BodyError`; :mod:`cigate.emulator.errors` renders them
in the OpenAI envelope (Azure v1 validates request bodies in that envelope too, api-reference
5.2), a syntax error with OpenAI's own message and a null ``code``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from cigate.engine.uploads import upload_form
from cigate.web.bodies import NOT_PARSED, parse_json_async, parsed, require_object

__all__ = ["json_object", "upload_form"]


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
