"""Files-API ids named *inside* request bodies, checked against the caller's tenant.

The gateway scopes ids in URL paths, but several create calls take file ids in their JSON body
and make the upstream copy those files somewhere the caller can read them: a container
(``tools[].container.file_ids``, ``input_file`` parts, also as conversation items,
``POST /containers``, a JSON
``POST /containers/{cid}/files``) or a thread whose code the caller's run executes
(``tool_resources``, message ``attachments``, ``image_file`` parts). The upstream account is
shared, so a leaked id of another tenant's file would otherwise be readable by anyone.

:func:`enforce` is the one check, called by every handler that forwards such a body: it reads
the (small, JSON) body, :func:`extract` lists its file ids per operation in the upstream's
checking order, and an id the caller's tenant does not own (the owners table, kind ``file``)
is refused *before* the upstream is contacted, with the upstream's own answer for an unknown
file in that position, so a refusal tells nothing about other tenants.

Owned means: uploaded through the gateway by the tenant, or recorded for it by the gateway —
Files-API files harvested from its Assistants runs and ids it adopted with ``GET /files/{id}``
both claim the id (:meth:`~cigate.storage.metadata_files.FileQueries.upsert_file`), so a
generated image can be fed back into the tenant's next thread. A body reference never adopts
an id nobody owns (that would let a leaked id of a file made directly upstream be copied);
container file ids (``cfile_…``) and the gateway's own ids are not Files-API ids and are
refused like unknown ones, as the upstream would.

Multipart uploads are never read here (they carry bytes, not ids). A body of these operations
that is not JSON by the strict rules of :mod:`cigate.web.bodies` (whatever its content type
says) is refused with a 400 and never forwarded: the upstream must not read a body the gateway
checked in a different way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from cigate.gateway.context import Services
from cigate.gateway.edge import parse_api_path
from cigate.gateway.errors import UnknownIdError
from cigate.web.bodies import (
    NOT_PARSED,
    STATE_KEY,
    content_length,
    parse_json_async,
    parsed,
    require_object,
    too_large,
)

__all__ = ["Group", "Operation", "enforce", "extract", "json_body", "operation", "read_capped"]

#: How the upstream words an unknown file id, per API family (the emulator's exact answers).
Style = Literal["responses", "containers", "assistants"]
Operation = Literal[
    "responses",
    "containers.create",
    "containers.files.create",
    "assistants",
    "threads.create",
    "threads.update",
    "threads.create_and_run",
    "messages.create",
    "runs.create",
    "conversations",
    "agents",
]

#: POST paths (after the API prefix) whose bodies can name files, and what they are.
_OPERATIONS: list[tuple[re.Pattern[str], Operation]] = [
    (re.compile(r"responses"), "responses"),
    (re.compile(r"containers"), "containers.create"),
    (re.compile(r"containers/[^/]+/files"), "containers.files.create"),
    (re.compile(r"assistants(/[^/]+)?"), "assistants"),
    (re.compile(r"threads"), "threads.create"),
    (re.compile(r"threads/runs"), "threads.create_and_run"),
    (re.compile(r"threads/[^/]+"), "threads.update"),
    (re.compile(r"threads/[^/]+/messages"), "messages.create"),
    (re.compile(r"threads/[^/]+/runs"), "runs.create"),
    (re.compile(r"conversations(/[^/]+/items)?"), "conversations"),
    (re.compile(r"agents(/[^/]+(/versions)?)?"), "agents"),
]


@dataclass(frozen=True)
class Group:
    """File ids the upstream checks together, under one ``param`` of its error answer."""

    style: Style
    param: str
    ids: tuple[str, ...]


def operation(method: str, path: str) -> Operation | None:
    """The body-carrying operation a canonical client path names, in any of the URL forms."""
    api = parse_api_path(path)
    if method != "POST" or api is None:
        return None
    for pattern, op in _OPERATIONS:
        if pattern.fullmatch(api.rest):
            return op
    return None


def extract(op: Operation, body: Any) -> list[Group]:
    """Every file id ``body`` names for ``op``, grouped in the order the upstream checks them.

    Malformed shapes (a string where a list belongs, and so on) are skipped: the upstream
    refuses them itself, and nothing of anyone is copied.
    """
    if not isinstance(body, dict):
        return []
    if op == "responses":
        return list(_responses(body))
    if op == "conversations":  # items as a response's input: they reach its container
        return list(_input_parts(body.get("items"), "items"))
    if op == "agents":  # a definition's tools, as a response's: its container gets the files
        definition = body.get("definition")
        tools = definition.get("tools") if isinstance(definition, dict) else None
        return [
            Group(g.style, f"definition.{g.param}", g.ids) for g in _responses({"tools": tools})
        ]
    if op == "containers.create":
        return [Group("containers", "id", (f,)) for f in _strings(body.get("file_ids"))]
    if op == "containers.files.create":
        file_id = body.get("file_id")
        return [Group("containers", "id", (file_id,))] if isinstance(file_id, str) else []
    if op in ("assistants", "threads.update"):
        return _nonempty([_tool_resources(body.get("tool_resources"))])
    if op == "threads.create":
        return _nonempty(_thread(body))
    if op == "threads.create_and_run":
        thread = body.get("thread")
        return _nonempty(
            [
                _tool_resources(body.get("tool_resources")),
                *(_thread(thread) if isinstance(thread, dict) else []),
            ]
        )
    if op == "messages.create":
        return _nonempty(_message(body, ""))
    # runs.create
    return _nonempty(
        [
            group
            for i, message in enumerate(_dicts(body.get("additional_messages")))
            for group in _message(message, f"additional_messages[{i}].")
        ]
    )


async def enforce(svc: Services, tenant_id: str, request: Request) -> None:
    """Refuse the request if its body names a file the caller's tenant does not own.

    Called before forwarding; reads the body only for operations that can name files and
    never for multipart uploads. Starlette keeps the body read here, so the forwarding call
    streams the same bytes upstream.
    """
    op = operation(request.method, request.scope["path"])
    if op is None:
        return
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        return
    groups = extract(op, await json_body(request, svc.settings.max_json_body))
    if not groups:
        return
    owned = await svc.meta.owned_among(tenant_id, "file", [f for g in groups for f in g.ids])
    for group in groups:
        foreign = [f for f in dict.fromkeys(group.ids) if f not in owned]
        if foreign:
            raise _refusal(group, foreign)


def _refusal(group: Group, foreign: list[str]) -> UnknownIdError:
    """The upstream's answer for unknown files in ``group`` (the emulator's, word for word)."""
    if group.style == "responses":
        return UnknownIdError(f"File '{foreign[0]}' not found.", param=group.param)
    if group.style == "containers":
        return UnknownIdError(f"No such File object: {foreign[0]}", param=group.param)
    return UnknownIdError(
        f"Files with ids {foreign!r} were not found.", param=group.param, status=400
    )


def _responses(body: dict[str, Any]) -> Iterator[Group]:
    """``tools[i].container.file_ids`` first (the container is made first), then input parts."""
    for i, tool in enumerate(_list(body.get("tools"))):
        container = tool.get("container") if isinstance(tool, dict) else None
        if isinstance(container, dict):
            param = f"tools[{i}].container.file_ids"
            for file_id in _strings(container.get("file_ids")):
                yield Group("responses", param, (file_id,))
    yield from _input_parts(body.get("input"), "input")


def _input_parts(items: Any, name: str) -> Iterator[Group]:
    """``input_file``/``input_image`` parts of input items (a response's, a conversation's)."""
    for i, item in enumerate(_list(items)):
        content = item.get("content") if isinstance(item, dict) else None
        for j, part in enumerate(_list(content)):
            if (
                isinstance(part, dict)
                and part.get("type") in ("input_file", "input_image")
                and isinstance(part.get("file_id"), str)
            ):
                yield Group("responses", f"{name}[{i}].content[{j}].file_id", (part["file_id"],))


def _thread(thread: dict[str, Any]) -> list[Group]:
    """A new thread's ``tool_resources``, then each of its ``messages``."""
    groups = [_tool_resources(thread.get("tool_resources"))]
    for i, message in enumerate(_dicts(thread.get("messages"))):
        groups += _message(message, f"messages[{i}].")
    return groups


def _message(message: dict[str, Any], prefix: str) -> list[Group]:
    """A new message's ``content`` parts (``image_file``), then its ``attachments``.

    The upstream checks ``attachments`` only; an ``image_file`` part naming a file the caller
    does not own is refused in the same words, under ``content``.
    """
    images = tuple(
        part["image_file"]["file_id"]
        for part in _dicts(message.get("content"))
        if part.get("type") == "image_file"
        and isinstance(part.get("image_file"), dict)
        and isinstance(part["image_file"].get("file_id"), str)
    )
    attachments = _dicts(message.get("attachments"))
    attached = tuple(a["file_id"] for a in attachments if isinstance(a.get("file_id"), str))
    return [
        Group("assistants", f"{prefix}attachments", attached),
        Group("assistants", f"{prefix}content", images),
    ]


def _tool_resources(resources: Any) -> Group:
    """``code_interpreter.file_ids`` and ``file_search.vector_stores[].file_ids``."""
    if not isinstance(resources, dict):
        return Group("assistants", "tool_resources", ())
    code = resources.get("code_interpreter")
    ids = list(_strings(code.get("file_ids"))) if isinstance(code, dict) else []
    search = resources.get("file_search")
    if isinstance(search, dict):
        for store in _dicts(search.get("vector_stores")):
            ids += _strings(store.get("file_ids"))
    return Group("assistants", "tool_resources", tuple(ids))


def _nonempty(groups: list[Group]) -> list[Group]:
    return [g for g in groups if g.ids]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [x for x in _list(value) if isinstance(x, dict)]


def _strings(value: Any) -> list[str]:
    return [x for x in _list(value) if isinstance(x, str)]


async def json_body(request: Request, limit: int) -> Any:
    """The request's JSON body, parsed once per request however many checks read it.

    Parsed by the strict rules of :mod:`cigate.web.bodies` (the body guard already did when
    the body was sent as JSON); anything else, or a value that is not an object, is a
    :class:`~cigate.web.bodies.BodyError` (400). An empty body is ``None``: it names nothing,
    and whether the operation takes one is the upstream's to say. The bytes stay on the request
    for forwarding (see :func:`read_capped`).
    """
    raw = await read_capped(request, limit)
    value = parsed(request.scope)
    if value is NOT_PARSED:
        value = require_object(await parse_json_async(raw)) if raw.strip(b" \t\r\n") else None
        request.scope.setdefault("state", {})[STATE_KEY] = value
    return value


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, read whole only up to ``limit`` bytes (413 beyond it).

    The gateway reads a body only to check the ids in it (JSON); everything else streams.
    The body is kept on the request, so later ``request.body()`` calls return the same bytes.
    """
    cached = getattr(request, "_body", None)
    if isinstance(cached, bytes):
        return cached
    declared = content_length(request.scope["headers"])
    if declared is not None and declared > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's cache: request.body() now returns these bytes
    return body
