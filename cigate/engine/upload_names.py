"""File names a client may give an upload, checked as the service checks them.

An upload's name becomes a file name (in a container: ``/mnt/data/<hash>-<name>``) and comes
back in every listing, so a name that is not one plain file name is refused with a 400 in the
OpenAI shape, before anything is stored: empty, ``.`` or ``..``, a path separator (``/`` or
``\\``), a NUL or any other control character, or text that is not valid Unicode. Everything
else is kept exactly as sent: spaces, leading dots, quotes, ``;``, ``%``, any script.

Names the service makes itself (a file model code wrote, copied into the Files API) are not
uploads: they are kept as the code wrote them and never pass through here.
"""

from __future__ import annotations

import unicodedata

from cigate.engine.errors import BadRequestError

__all__ = ["check_upload_name"]


def _problem(name: str) -> str | None:
    if not name:
        return "a file name cannot be empty"
    if name in (".", ".."):
        return "a file name cannot be '.' or '..'"
    if "/" in name or "\\" in name:
        return "a file name cannot contain a path separator ('/' or '\\')"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "a file name cannot contain control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "a file name must be valid Unicode"
    return None


def check_upload_name(name: str | None, *, param: str = "file") -> str:
    """``name`` unchanged when it is a plain file name; else OpenAI's 400 naming ``param``."""
    problem = _problem(name or "")
    if problem is None:
        assert name is not None
        return name
    raise BadRequestError(
        f"Invalid file name {(name or '')!r:.300}: {problem}.",
        param=param,
        code="invalid_value",
    )
