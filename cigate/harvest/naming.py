"""Safe local file names for names chosen by model-written code.

A container file's name comes from untrusted code: it can hold ``../``, backslashes (a path
separator on Windows, a plain character on Linux), control characters, a Windows device name, or
hundreds of bytes. Every name is reduced to one harmless basename that stays inside the output
directory on every OS, and collisions get ``name (1).ext`` instead of overwriting. The original
name is kept by callers (the download result) so nothing is lost but the danger.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from pathlib import Path

from cigate.exceptions import UnsafeFilenameError

__all__ = ["MAX_NAME_BYTES", "NameReserver", "existing_variants", "safe_name", "unique_path"]

#: Most file systems cap a name at 255 bytes; leave room for `` (999)`` and a temp suffix.
MAX_NAME_BYTES = 200
_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(10)),
    *(f"LPT{i}" for i in range(10)),
    "COM¹",
    "COM²",
    "COM³",
    "LPT¹",
    "LPT²",
    "LPT³",
}
_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\/]')


def safe_name(name: str, *, fallback: str = "file") -> str:
    """One safe basename for ``name`` (never empty, never a path, never a device name)."""
    if not isinstance(name, str):
        raise UnsafeFilenameError(f"file name must be text, not {type(name).__name__}")
    text = unicodedata.normalize("NFC", name)
    # Take the last component under both POSIX and Windows separators.
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(
        ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")
    )
    text = _BAD_CHARS.sub("_", text)
    text = text.strip().rstrip(". ")  # Windows drops trailing dots and spaces
    text = text.lstrip(".")  # no hidden files, no "." or ".."
    if not text:
        text = fallback
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if stem.split(".")[0].upper().rstrip() in _WINDOWS_RESERVED:
        stem = "_" + stem
    text = f"{stem}.{ext}" if dot else stem
    return _truncate(text)


def _truncate(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext, dot = name, "", ""
    budget = MAX_NAME_BYTES - len(ext.encode()) - len(dot)
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(". ")
    return f"{cut or 'file'}{dot}{ext}"


def _candidate(name: str, n: int) -> str:
    if n == 0:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"


def unique_path(directory: Path, name: str, taken: set[str] | None = None) -> Path:
    """``directory/name``, or ``name (1).ext``… when that exists (or is in ``taken``)."""
    safe = safe_name(name)
    for n in range(10_000):
        candidate = _candidate(safe, n)
        if taken is not None and candidate in taken:
            continue
        path = directory / candidate
        if not os.path.lexists(path):
            return path
    raise UnsafeFilenameError(f"too many files named {safe!r} in {directory}")


class NameReserver:
    """Hands out unique final paths to concurrent downloads into one directory.

    The check-then-create race between two downloads of ``chart.png`` is closed by reserving
    the name in memory until the file is in place (or the download failed).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._taken: set[str] = set()
        self._lock = threading.Lock()

    def reserve(self, name: str) -> Path:
        with self._lock:
            path = unique_path(self.directory, name, self._taken)
            self._taken.add(path.name)
            return path

    def release(self, path: Path) -> None:
        with self._lock:
            self._taken.discard(path.name)

    def inside(self, path: Path) -> bool:
        """True when ``path`` resolves inside the directory (a last-line guard)."""
        root = os.path.realpath(self.directory)
        return os.path.commonpath([root, os.path.realpath(path)]) == root


def existing_variants(directory: Path, name: str) -> list[Path]:
    """The files already saved under ``name``'s safe form and its ``name (n).ext`` variants,
    in numbering order, up to the first free number."""
    safe = safe_name(name)
    found = []
    for n in range(10_000):
        path = directory / _candidate(safe, n)
        if not os.path.lexists(path):
            break
        found.append(path)
    return found
