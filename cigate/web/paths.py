"""One canonical spelling of a request path, decided once at the edge of every server we run.

Between a client and the service a path is read by many components: the ASGI server (which
decodes ``%XX``, replacing invalid UTF-8), Starlette's router and ``request.url`` (which cuts a
decoded ``?`` or ``#``), httpx building the upstream URL (which removes dot segments), the
upstream's router (case-insensitive on Azure, maybe decoding twice, maybe folding Unicode), a
proxy in front (which may drop ``;params``). A path is **canonical** when every one of them
must read the same segments from it:

* it starts with ``/``; no segment is empty (no ``//``, no trailing ``/``);
* its raw bytes are printable ASCII: letters, digits, ``-._~!$&'()*+,=:@`` stand for
  themselves and everything else is a ``%XX`` escape of UTF-8; ``;`` (matrix parameters) and
  ``\\`` are refused, and an escape never spells an unreserved character (``%2e``, ``%41``:
  a second spelling of a character that needs none, and the classic way past dot checks);
* each escape is well formed and the segment decodes, once, to valid UTF-8 (no overlong forms,
  no surrogates);
* no decoded segment is ``.`` or ``..``, or contains ``/``, ``\\``, ``%`` (an escape that
  survives one decode, ``%252F``), ``?``, ``#``, a control, format, private-use, surrogate or
  unassigned character or a line/paragraph separator; nor does its compatibility form (NFKC:
  fullwidth ``．．``, ``／``, ``％``) contain any of those;
* an API prefix is spelled exactly (``/OpenAI/v1`` and ``/openai/V1``, ``/API/projects/p``
  and ``/api/projects/p/OpenAI/v1`` are refused: Azure's router ignores case, ours does not).

The query takes part in routing in one place, Azure's ``api-version``: a query naming it more
than once, under any spelling (``API-Version``, ``api%2Dversion``), is refused too, since one
reader may take the first and another the last (:class:`AmbiguousQueryError`, 400).

:func:`split` checks a raw path and returns its decoded segments; :func:`encode` is the one
spelling the servers use to build a URL from segments (every segment checked the same way,
everything but unreserved characters escaped). :class:`CanonicalPathMiddleware` applies
:func:`split` before any routing and hands the app ``scope["path"]`` = the decoded canonical
path; the refusal is rendered by the app, in the shape of the API it imitates.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cigate.exceptions import BadInputError

__all__ = [
    "AmbiguousQueryError",
    "CanonicalPathMiddleware",
    "NonCanonicalPathError",
    "api_versions",
    "check_query",
    "check_segment",
    "encode",
    "shown",
    "split",
]

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: Raw bytes that may stand for themselves in a segment: unreserved, and the sub-delimiters,
#: ``:`` and ``@`` of RFC 3986 ``pchar`` except ``;`` (matrix parameters to some servers).
_LITERAL = _UNRESERVED | frozenset(b"!$&'()*+,=:@")
_LITERAL_BYTES = bytes(sorted(_LITERAL))
_HEX = frozenset(b"0123456789ABCDEFabcdef")
#: Decoded characters no segment may hold: separators, escapes, and what ends a path in a URL.
_FORBIDDEN = frozenset("/\\%?#")
#: Unicode categories refused in a decoded segment: controls (Cc), format (Cf, e.g. zero-width
#: and bidi overrides), surrogates (Cs), private use (Co), unassigned (Cn), line and paragraph
#: separators (Zl, Zp). Each is invisible or unstable, so two readers can disagree on it.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Longest raw path looked at; longer ones are refused without decoding.
MAX_PATH_BYTES = 8192


class NonCanonicalPathError(BadInputError):
    """A request path that some component could read differently: refused, never routed.

    404, as for any URL that names no resource (OpenAI's ``Invalid URL``, Azure's ``Resource
    not found``): a refusal tells a client nothing it could not learn from a typo.
    """

    kind = "invalid_path"

    def __init__(self, raw_path: bytes, reason: str) -> None:
        super().__init__(
            f"Invalid URL ({shown(raw_path)}): {reason}",
            hint="Write the path in its canonical form: single slashes, no '.' or '..' "
            "segments, no encoded '/' or '\\', UTF-8 escapes only where needed.",
            status=404,
        )
        self.raw_path = raw_path
        self.reason = reason


class AmbiguousQueryError(BadInputError):
    """A query that routes differently depending on who reads it (``api-version`` twice)."""

    kind = "invalid_query"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400)


def shown(raw: bytes, limit: int = 200) -> str:
    """``raw`` as printable ASCII for a message or a log (escapes, at most ``limit`` chars)."""
    text = raw.decode("ascii", "backslashreplace")
    text = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _decode_segment(raw_path: bytes, raw: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # '%'
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise NonCanonicalPathError(raw_path, "malformed percent-escape")
            value = int(pair, 16)
            if value in _UNRESERVED:
                raise NonCanonicalPathError(
                    raw_path, f"escape %{pair.decode()} spells '{chr(value)}', which needs none"
                )
            out.append(value)
            i += 3
            continue
        if byte not in _LITERAL:
            what = {0x3B: "';'", 0x5C: "'\\'"}.get(byte, f"byte 0x{byte:02x}")
            raise NonCanonicalPathError(raw_path, f"{what} must not appear in a path segment")
        out.append(byte)
        i += 1
    try:
        return out.decode("utf-8", "strict")
    except UnicodeDecodeError:
        raise NonCanonicalPathError(raw_path, "escapes that are not valid UTF-8") from None


def check_segment(segment: str, raw_path: bytes | None = None) -> str:
    """``segment`` (decoded) if every component reads it as one plain segment; else refused."""
    raw = raw_path if raw_path is not None else segment.encode("utf-8", "backslashreplace")
    if segment in ("", ".", ".."):
        reason = "empty path segment" if not segment else f"'{segment}' path segment"
        raise NonCanonicalPathError(raw, reason)
    for form in (segment, unicodedata.normalize("NFKC", segment)):
        if form in (".", ".."):
            raise NonCanonicalPathError(raw, "a segment that Unicode folding turns into a dot")
        for char in form:
            if char in _FORBIDDEN:
                raise NonCanonicalPathError(raw, f"{char!r} inside a path segment")
            if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
                raise NonCanonicalPathError(
                    raw, f"character U+{ord(char):04X} inside a path segment"
                )
    return segment


def _segment(raw_path: bytes, raw: bytes) -> str:
    if raw and not raw.translate(None, _LITERAL_BYTES):  # plain ASCII: nothing to decode or fold
        if raw in (b".", b".."):
            raise NonCanonicalPathError(raw_path, f"'{raw.decode()}' path segment")
        return raw.decode("ascii")
    return check_segment(_decode_segment(raw_path, raw), raw_path)


def split(raw_path: bytes, *, prefixes: Iterable[str] = ()) -> tuple[str, ...]:
    """The decoded segments of ``raw_path``, or :class:`NonCanonicalPathError`.

    ``/`` alone is the empty tuple. ``prefixes`` (like ``/openai/v1``) must be spelled exactly
    when a path starts with them in any letter case; a ``{name}`` segment in a prefix
    (``/api/projects/{project}/openai/v1``) stands for any one segment.
    """
    if len(raw_path) > MAX_PATH_BYTES:
        raise NonCanonicalPathError(raw_path, f"path longer than {MAX_PATH_BYTES} bytes")
    if not raw_path.startswith(b"/"):
        raise NonCanonicalPathError(raw_path, "a path must start with '/' (origin form)")
    if raw_path == b"/":
        return ()
    segments = tuple(_segment(raw_path, raw) for raw in raw_path[1:].split(b"/"))
    for prefix in prefixes:
        wanted = tuple(prefix.strip("/").split("/"))
        head = segments[: len(wanted)]
        if len(head) != len(wanted):
            continue
        fixed = [(s, w) for s, w in zip(head, wanted, strict=True) if not _is_name(w)]
        if any(s != w for s, w in fixed) and all(s.casefold() == w.casefold() for s, w in fixed):
            raise NonCanonicalPathError(raw_path, f"the prefix is spelled {prefix}")
    return segments


def _is_name(segment: str) -> bool:
    """``{project}`` in a prefix: any segment goes there, in any case."""
    return segment.startswith("{") and segment.endswith("}")


def encode(segments: Iterable[str]) -> str:
    """The one URL spelling of decoded ``segments``: each checked, UTF-8, escaped but for
    unreserved characters, joined by ``/`` (no leading slash)."""
    return "/".join(quote(check_segment(s), safe="") for s in segments)


def api_versions(query_string: bytes) -> list[str]:
    """Every ``api-version`` in a query, under any spelling of its name (case, escapes)."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return [value for name, value in pairs if name.casefold() == "api-version"]


def check_query(query_string: bytes) -> None:
    """Refuse a query that names ``api-version`` more than once."""
    if len(api_versions(query_string)) > 1:
        raise AmbiguousQueryError("api-version must be given at most once.")


#: Renders a refusal in the app's own error shape.
Refusal = Callable[[Scope, NonCanonicalPathError | AmbiguousQueryError], Response]


class CanonicalPathMiddleware:
    """Before any routing: a canonical path (with an unambiguous query) goes on, its decoded
    form as ``scope["path"]``; anything else is answered by ``refuse`` (the app's own error
    shape) and never reaches a route.

    ``scope["raw_path"]`` is what was on the wire; a server that gives none is taken at its
    decoded ``path`` (escaped again, so its ``/`` still split segments).
    """

    def __init__(self, app: ASGIApp, *, refuse: Refusal, prefixes: Iterable[str] = ()) -> None:
        self.app = app
        self.refuse = refuse
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path")
        if not isinstance(raw, bytes):
            raw = quote(str(scope.get("path", "")), safe="/").encode("ascii")
        try:
            segments = split(raw, prefixes=self.prefixes)
            check_query(scope.get("query_string", b""))
        except (NonCanonicalPathError, AmbiguousQueryError) as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.refuse(scope, exc)(scope, receive, send)
            return
        scope["path"] = "/" + "/".join(segments)
        await self.app(scope, receive, send)
