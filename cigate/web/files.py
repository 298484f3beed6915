"""The HTTP rules of one file download, shared by every server that sends file bytes.

The gateway (stored blobs) and the emulator (container files, Files-API files) answer
downloads by the same rules (RFC 9110, RFC 6266, RFC 8187), so they live here once:

* :func:`parse_range`: a single ``bytes=`` range -> 206, an unsatisfiable one -> 416, anything
  else (syntax errors, several ranges, other units) is ignored and the whole file is sent, as
  RFC 9110 allows. Numbers of any length are understood (a 5,000-digit offset is simply past
  the end), so no header can make the parser fail.
* :func:`etag_matches`: ``If-None-Match`` / ``If-Range`` weak comparison.
* :func:`content_disposition`: always ``attachment``; ``filename*`` (RFC 8187) carries the
  file's own name exactly, percent-encoded, so a receiver gets back the name the code wrote
  (``.htaccess``, ``..x``, a newline, ``;``, quotes, any script) and nothing in it can break
  the header; ``filename`` is an ASCII fallback from :func:`cigate.harvest.naming.safe_name` for
  receivers that do not read ``filename*``. A name no file can have (empty, over 255 UTF-8
  bytes, NUL, not valid Unicode) is sent as its safe name in both.

Receivers must still make the name safe for their own file system (RFC 6266 section 4.3);
browsers and the cigate client do. The ``filename*`` value holds only RFC 8187 ``attr-char``
bytes and ``%XX`` escapes: no quote, backslash, ``;``, CR or LF can reach the header.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from cigate.harvest.naming import safe_name

__all__ = ["NAME_MAX", "content_disposition", "etag_matches", "header_name", "parse_range"]

#: The longest name (in UTF-8 bytes) a Linux file can have; longer names are not file names.
NAME_MAX = 255
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
#: Any offset with more digits than this is past the end of every file there is.
_MAX_DIGITS = 18


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """``(start, end_inclusive)`` for a satisfiable single range; ``False`` when unsatisfiable.

    ``None`` means "ignore the header and send everything": RFC 9110 allows that for syntax
    errors and for multiple ranges, which are not served as multipart.
    """
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = _number(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    start = _number(first)
    end = _number(last) if last else None
    if end is not None and end < start:
        return None
    if start >= size:
        return False
    return start, size - 1 if end is None else min(end, size - 1)


def etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``W/`` prefixes are ignored; ``*`` matches."""
    for raw in header.split(","):
        candidate = raw.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def header_name(filename: str) -> str:
    """The name ``filename*`` carries: the part after the last ``/`` (a file name never has
    one), or its :func:`safe_name` when that is not a name a file can have."""
    name = filename.rsplit("/", 1)[-1]
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not text
        return safe_name(name.encode("utf-8", "replace").decode("utf-8"))
    if not encoded or len(encoded) > NAME_MAX or b"\0" in encoded or name in (".", ".."):
        return safe_name(name)
    return name


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` fallback and the exact name in ``filename*``."""
    fallback = "".join(
        ch if 32 <= ord(ch) < 127 and ch not in '"\\%' else "_" for ch in safe_name(filename)
    )
    exact = quote(header_name(filename), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
