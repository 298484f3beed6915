"""The rules of one request body, shared by every server that reads one.

The gateway and the emulator read bodies from clients they do not trust, and the gateway hands
the bytes it checked to an upstream that parses them again. So both apps read bodies here, by
one set of rules (in :mod:`cigate.web`, like the download rules, because the two apps never
import each other):

* **Size.** ``Content-Length`` must be digits only (RFC 9110 8.6; anything else is a 400); a
  declared size over the cap is a 413 before a byte is read, and a body without one is counted
  as it streams and refused with 413 the moment it passes the cap: nothing beyond the cap is
  ever buffered. A body longer or shorter than its ``Content-Length`` is a 400.
* **JSON** (RFC 8259, strictly): UTF-8 only (invalid bytes, overlong forms, encoded surrogates
  and a byte-order mark refused); no ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON); no lone
  surrogate in a ``\\u`` escape (the text could not be written as UTF-8 again); a number of at
  most :data:`MAX_NUMBER_CHARS` characters whose value is finite (``1e400`` is refused, not
  read as infinity); at most :data:`MAX_DEPTH` levels of nested arrays and objects; **no
  duplicate names** in an object. RFC 8259 leaves duplicate names to each parser ("the
  behavior of software that receives such an object is unpredictable"): one parser keeps the
  first, another the last, so a body the gateway checked (``previous_response_id``, a
  container, a file id) could mean something else upstream. Refusing it leaves one reading.
* Where an object is required, anything else is a 400 (``invalid_type``). Every request body
  of the API is an object, so a body sent as JSON must be one.

Every refusal is a :class:`BodyError` (a :class:`~cigate.exceptions.BadInputError`) with a
status, a ``kind`` used as the error ``code`` and a message; each app renders it in its own
error shape. Syntax errors carry OpenAI's own words for an unparsable body.

:class:`BodyGuard` applies the size rules to every request of an app, and the JSON rules to a
body sent as JSON (``application/json``, ``*/*+json``) the moment the app first reads it (after
the app authenticated the caller, never before). A parsed body is kept in the request's state
(:func:`parsed`), so handlers do not parse it twice; handlers that read a body of another type
as JSON use :func:`parse_json` themselves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio.to_thread

from cigate.exceptions import BadInputError

__all__ = [
    "INVALID_JSON_MESSAGE",
    "MAX_DEPTH",
    "MAX_NUMBER_CHARS",
    "BodyError",
    "BodyGuard",
    "content_length",
    "is_json",
    "parse_json",
    "parse_json_object",
    "parsed",
]

#: Nesting the JSON rules allow. The API's deepest documented bodies (strict JSON schemas with
#: 10 levels of objects, input items with content parts) stay under 30; 64 leaves room and
#: keeps every recursive reader downstream (the json encoder, jsonschema, the SDK's pydantic
#: models reading an echoed field) far below Python's recursion limit.
MAX_DEPTH = 64
#: Characters of one number literal (sign, digits, point, exponent). A double needs at most
#: 24, a 64-bit integer 20; longer literals are either a mistake or an attack on ``int()``.
MAX_NUMBER_CHARS = 64
#: Bodies up to this size are parsed on the event loop; larger ones in a worker thread.
_INLINE_PARSE = 256 * 1024

#: OpenAI's answer to a body that is not JSON, word for word.
INVALID_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)
NOT_AN_OBJECT_MESSAGE = "Invalid type for request body: expected an object."
#: Where a parsed JSON body is kept in the ASGI scope's ``state``.
STATE_KEY = "cigate_json"


class BodyError(BadInputError):
    """A request body refused by these rules; ``kind`` is the error code the apps send."""

    def __init__(self, message: str, *, kind: str, status: int = 400, detail: str = "") -> None:
        super().__init__(message, status=status, hint="Send a body that follows RFC 8259.")
        self.kind = kind
        #: Why, for logs (the message keeps the service's words).
        self.detail = detail or message


def invalid_json(detail: str) -> BodyError:
    return BodyError(INVALID_JSON_MESSAGE, kind="invalid_json", detail=detail)


def too_large(limit: int) -> BodyError:
    return BodyError(
        f"Request body too large: the limit is {limit} bytes.",
        kind="request_too_large",
        status=413,
    )


def _bad_length(detail: str) -> BodyError:
    return BodyError(f"Invalid request framing: {detail}.", kind="invalid_content_length")


# -- JSON --------------------------------------------------------------------------------------


def _constant(name: str) -> Any:
    raise invalid_json(f"{name} is not JSON")


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise BodyError(
            f"A number in the JSON body is out of range: {literal[:MAX_NUMBER_CHARS]}.",
            kind="invalid_number",
        )
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise BodyError(
                    f"Duplicate name {_shown(name)} in a JSON object of the body: each name "
                    "may appear once per object.",
                    kind="duplicate_key",
                )
            seen.add(name)
    return result


def _shown(name: str) -> str:
    return repr(name.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:80])


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_float=_float, parse_constant=_constant)
#: A JSON string (RFC 8259 7), so that what is left of a text is its structure and numbers.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_LONG_NUMBER = re.compile(rf"[-+.eE0-9]{{{MAX_NUMBER_CHARS + 1},}}")
#: What a parsed text's structure holds besides brackets (everything else was in strings).
_NOT_BRACKETS = str.maketrans("", "", " \t\r\n,:-+.0123456789eEtrufalsn")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``, by the rules above, or :class:`BodyError`.

    C-speed passes do the checking: the text without its strings (numbers and structure) is
    searched for long numbers and peeled for depth; strings are only walked when an escape
    could be a surrogate. Deeper than Python can parse is a ``RecursionError``: too deep.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_json(f"invalid UTF-8 at byte {exc.start}") from None
    structure = _STRING.sub("", text)
    if (long := _LONG_NUMBER.search(structure)) is not None:
        raise BodyError(
            f"A number in the JSON body is too long ({len(long.group())} characters; the "
            f"limit is {MAX_NUMBER_CHARS}).",
            kind="invalid_number",
        )
    try:
        value, end = _DECODER.raw_decode(text, _skip_space(text, 0))
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as exc:
        raise invalid_json(f"{exc.msg} at character {exc.pos}") from None
    except ValueError as exc:  # int() of a literal the structure pass did not see
        raise invalid_json(str(exc)) from None
    if _skip_space(text, end) != len(text):
        raise invalid_json(f"extra data at character {end}")
    _check_depth(structure.translate(_NOT_BRACKETS))
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


def _skip_space(text: str, pos: int) -> int:
    """Past the JSON whitespace (RFC 8259: space, tab, LF, CR; nothing else) at ``pos``."""
    length = len(text)
    while pos < length and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _too_deep() -> BodyError:
    return BodyError(
        f"The JSON body is nested too deeply (the limit is {MAX_DEPTH} levels of arrays and "
        "objects).",
        kind="json_too_deep",
    )


def _check_depth(brackets: str) -> None:
    """Refuse more than ``MAX_DEPTH`` levels: each round removes the innermost pairs of the
    (balanced) brackets of a parsed text, so what survives ``MAX_DEPTH`` rounds is deeper."""
    for _ in range(MAX_DEPTH):
        if not brackets:
            return
        brackets = brackets.replace("[]", "").replace("{}", "")
    if brackets:
        raise _too_deep()


def _check_strings(value: Any) -> None:
    """No lone surrogate in any name or string, walked without recursion."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise invalid_json("a \\u escape is a lone surrogate") from None


def parse_json_object(raw: bytes, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """``raw`` as a JSON object; ``empty`` (when given) stands for a body of only whitespace."""
    if empty is not None and not raw.strip(b" \t\r\n"):
        return dict(empty)
    return require_object(parse_json(raw))


def require_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BodyError(NOT_AN_OBJECT_MESSAGE, kind="invalid_type")
    return value


async def parse_json_async(raw: bytes) -> Any:
    """:func:`parse_json`, in a worker thread for large bodies (the loop keeps serving)."""
    if len(raw) <= _INLINE_PARSE:
        return parse_json(raw)
    return await anyio.to_thread.run_sync(parse_json, raw)


# -- framing and the guard ---------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: The app's answer to a refusal made before the app runs: an ASGI app (a Starlette Response).
Refuse = Callable[[BodyError], ASGIApp]

_MISSING = object()


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The declared body size, ``None`` without one; :class:`BodyError` when it is malformed.

    RFC 9110 8.6: ``1*DIGIT``; several header lines (or a comma list) must all agree.
    """
    values: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"content-length":
            values.update(part.strip(b" \t") for part in value.split(b","))
    if not values:
        return None
    if len(values) > 1:
        raise _bad_length("Content-Length is given with different values")
    (value,) = values
    if not value.isdigit():
        raise _bad_length("Content-Length must be a non-negative integer")
    if len(value) > 18:  # beyond any cap: 10**18 bytes
        return 10**18
    return int(value)


def media_type(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's media type, lower case, without parameters ("" when absent)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


def is_json(media: str) -> bool:
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def parsed(scope: Scope) -> Any:
    """The body :class:`BodyGuard` parsed for this request, or :data:`NOT_PARSED`."""
    state = scope.get("state")
    return state.get(STATE_KEY, NOT_PARSED) if isinstance(state, MutableMapping) else NOT_PARSED


NOT_PARSED: Any = _MISSING


class BodyGuard:
    """ASGI middleware: the size and framing rules for every body, the JSON rules for JSON.

    ``json_limit`` caps every body that is not ``multipart/*``; ``upload_limit`` caps
    multipart bodies (``None``: no cap of ours, they stream). ``refuse`` renders a refusal
    made before the app runs; refusals found while the app reads are raised from ``receive``
    as :class:`BodyError`, for the app's own error handler.
    """

    def __init__(
        self, app: ASGIApp, *, json_limit: int, upload_limit: int | None, refuse: Refuse
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        media = media_type(headers)
        limit = self.upload_limit if media.startswith("multipart/") else self.json_limit
        try:
            declared = content_length(headers)
            if declared is not None and limit is not None and declared > limit:
                raise too_large(limit)
        except BodyError as exc:
            await self.refuse(exc)(scope, receive, send)
            return
        reader = _Reader(scope, receive, declared, limit, json=is_json(media))
        await self.app(scope, reader.receive, send)


class _Reader:
    """One request's ``receive``: counts, caps and checks the body; buffers and parses JSON."""

    def __init__(
        self, scope: Scope, receive: Receive, declared: int | None, limit: int | None, *, json: bool
    ) -> None:
        self.scope = scope
        self._receive = receive
        self.declared = declared
        self.limit = limit
        self.json = json
        self.size = 0
        self.complete = False

    async def receive(self) -> Message:
        if self.json and not self.complete:
            body = await self._whole()
            if body.strip(b" \t\r\n"):  # an empty body is the handler's business
                value = require_object(await parse_json_async(body))
                self.scope.setdefault("state", {})[STATE_KEY] = value
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._next()

    async def _whole(self) -> bytes:
        chunks: list[bytes] = []
        while not self.complete:
            message = await self._next()
            if message["type"] == "http.disconnect":
                raise _bad_length("the client went away before the body was complete")
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
        return b"".join(chunks)

    async def _next(self) -> Message:
        """The next message, counted. A disconnect passes through (Starlette raises
        ``ClientDisconnect`` where a handler streams the body; listeners need to see it)."""
        message = await self._receive()
        if self.complete or message["type"] != "http.request":
            return message
        self.size += len(message.get("body", b""))
        if self.limit is not None and self.size > self.limit:
            raise too_large(self.limit)
        if self.declared is not None and self.size > self.declared:
            raise _bad_length("the body is longer than its Content-Length")
        if not message.get("more_body", False):
            self.complete = True
            if self.declared is not None and self.size < self.declared:
                raise _bad_length("the body is shorter than its Content-Length")
        return message
