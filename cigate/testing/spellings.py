"""Ways to spell one request path that some component may read differently: attack data.

:func:`spellings` turns a canonical path such as ``/openai/v1/containers/cntr_1/files`` into
the canonical spelling and dozens that are not: empty segments, dot segments (plain, escaped,
fullwidth), encoded and double-encoded ``/`` and ``\\``, NUL and other controls, malformed,
overlong and invalid UTF-8 escapes, matrix parameters, escaped unreserved characters, letter
case, absolute form (with userinfo), a fragment, raw non-ASCII bytes and ambiguous queries. A
server with a canonical edge must answer every non-canonical one with a refusal and route none
of them; the isolation tests send them with :class:`cigate.testing.rawhttp.RawClient`, which
changes no byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["BETWEEN", "SPELLINGS", "Spelling", "spellings"]


@dataclass(frozen=True)
class Spelling:
    name: str
    #: The raw request target: path, and a query when the spelling is about the query.
    target: bytes
    #: Only the untouched path is canonical.
    canonical: bool = False


def _join(segments: Sequence[str]) -> str:
    return "/" + "/".join(segments)


def _cap(segments: list[str], i: int) -> str:
    return _join([s.upper() if j == i else s for j, s in enumerate(segments)])


def _last(segments: list[str], suffix: str) -> str:
    return _join(segments) + suffix


def _before_last(segments: list[str], sep: str) -> str:
    return "/" + "/".join(segments[:-1]) + sep + segments[-1]


_Rule = Callable[[list[str]], str]

#: name -> how to spell a path's segments, anywhere in the path (raw ASCII).
SPELLINGS: dict[str, _Rule] = {
    "lead-double-slash": lambda s: "/" + _join(s),
    "empty-before-last": lambda s: _before_last(s, "//"),
    "trailing-slash": lambda s: _last(s, "/"),
    "trailing-double-slash": lambda s: _last(s, "//"),
    "encoded-slash-lower-joins-last": lambda s: _before_last(s, "%2f"),
    "encoded-slash-leading": lambda s: "/%2F" + _join(s)[1:],
    "trailing-dot": lambda s: _last(s, "/."),
    "trailing-dot-dot": lambda s: _last(s, "/.."),
    "nul-suffix": lambda s: _last(s, "%00"),
    "newline-suffix": lambda s: _last(s, "%0D%0AX-Injected:%201"),
    "delete-char": lambda s: _last(s, "%7F"),
    "c1-control": lambda s: _last(s, "%C2%85"),
    "zero-width-space": lambda s: _last(s, "%E2%80%8B"),
    "malformed-escape": lambda s: _last(s, "%zz"),
    "trailing-percent": lambda s: _last(s, "%"),
    "short-escape": lambda s: _last(s, "%2"),
    "invalid-utf8": lambda s: _last(s, "%FF"),
    "surrogate": lambda s: _last(s, "%ED%A0%80"),
    "matrix-param-last": lambda s: _last(s, ";"),
    "escaped-unreserved": lambda s: _join([*s[:-1], f"%{ord(s[-1][0]):02X}{s[-1][1:]}"]),
    "encoded-question-mark": lambda s: _last(s, "%3F"),
    "encoded-hash": lambda s: _last(s, "%23"),
    "case-first": lambda s: _cap(s, 0),
    "case-second": lambda s: _cap(s, 1),
    "case-third": lambda s: _cap(s, 2),
}
#: name -> raw text put between two segments (``/a`` + text + ``b``), after segment ``at``.
BETWEEN: dict[str, str] = {
    "empty-segment": "//",
    "encoded-slash-joins": "%2F",
    "encoded-slash-segment": "/%2F/",
    "double-encoded-slash": "%252F",
    "double-encoded-slash-segment": "/%252F/",
    "double-encoded-dot-dot": "/x/%252E%252E/",
    "backslash-literal": "\\",
    "backslash-encoded": "%5C",
    "backslash-encoded-lower-segment": "/%5c/",
    "dot-segment": "/./",
    "dot-dot-segment": "/x/../",
    "dot-encoded": "/%2e/",
    "dot-dot-encoded-mixed": "/x/%2E%2e/",
    "dot-dot-half-encoded": "/x/.%2e/",
    "nul-segment": "/%00/",
    "overlong-slash": "/%C0%AF/",
    "overlong-dot-dot": "/x/%C0%AE%C0%AE/",
    "overlong-three-byte-slash": "%E0%80%AF",
    "fullwidth-dot-dot": "/x/%EF%BC%8E%EF%BC%8E/",
    "fullwidth-solidus": "%EF%BC%8F",
    "matrix-param": ";x=1/",
}
#: Spellings whose raw bytes the HTTP layer itself rejects (no ASGI app ever sees them).
_RAW: dict[str, bytes] = {
    "raw-non-ascii": "é".encode(),
    "raw-space": b" x",
    "raw-tab": b"\tx",
}


def spellings(
    path: str,
    *,
    at: Sequence[int] = (1,),
    query: str = "",
    detours: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
) -> list[Spelling]:
    """The canonical spelling of ``path`` (canonical, ASCII) and every non-canonical one.

    The :data:`BETWEEN` spellings go after segment number ``at`` (1: after the first; give
    the prefix's length to aim after an API prefix, several to try each). ``query``
    (``api-version=…``) is appended to each. ``detours`` are ``(own, theirs)`` id pairs:
    where ``theirs`` is a segment, ``own/../theirs`` (plain and escaped) is added, the way a
    caller who owns ``own`` would try to pass an ownership check on the way to ``theirs``.
    ``host`` goes into the absolute-form spelling.
    """
    segments = path.strip("/").split("/")
    suffix = f"?{query}" if query else ""
    canonical = (path + suffix).encode()
    out = [Spelling("canonical", canonical, canonical=True)]
    for name, rule in SPELLINGS.items():
        out.append(Spelling(name, (rule(list(segments)) + suffix).encode()))
    for i in at:
        if 0 < i < len(segments):
            head, tail = _join(segments[:i]), "/".join(segments[i:])
            for name, text in BETWEEN.items():
                out.append(Spelling(f"{name}@{i}", (head + text + tail + suffix).encode()))
    for name, raw in _RAW.items():
        out.append(Spelling(name, path.encode() + raw + suffix.encode()))
    # Targets a URL parser reads differently from the bytes: an absolute form (with and without
    # userinfo) and a fragment, which a parser cuts off (with the query after it).
    out.append(Spelling("absolute-form", f"http://{host}{path}{suffix}".encode()))
    out.append(Spelling("absolute-form-userinfo", f"http://u@{host}{path}{suffix}".encode()))
    out.append(Spelling("fragment", f"{path}#/../x{suffix}".encode()))
    twice = f"{path}?{query or 'api-version=2025-04-01-preview'}&API-Version=v1"
    out.append(Spelling("api-version-twice", twice.encode()))
    for own, theirs in detours:
        if theirs in segments:
            i = segments.index(theirs)
            for label, dots in (("detour", ".."), ("detour-encoded", "%2E%2E")):
                spelt = [*segments[:i], own, dots, *segments[i:]]
                out.append(Spelling(f"{label}-{own[:5]}", (_join(spelt) + suffix).encode()))
    # A rule that changes nothing for this path (letter case of "1") is not a second spelling.
    return [out[0], *(s for s in out[1:] if s.target != canonical)]
