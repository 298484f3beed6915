"""Content types of code-interpreter files: from the name, else from the first bytes.

The table is the supported-types list of the Azure code interpreter docs (seed 004), plus the
image and archive types the tool produces. Auto-saved images and archives sometimes come back
without an extension (``cfile_…``), so the first bytes are sniffed for the common magic numbers;
the result picks an extension for such files and lets Jupyter show images inline.
"""

from __future__ import annotations

__all__ = ["EXTENSIONS", "TYPES", "extension_for", "guess_type", "is_json_name", "sniff"]

#: extension -> MIME type (seed 004's table first; ``.py`` keeps its first listed type).
TYPES: dict[str, str] = {
    ".c": "text/x-c",
    ".cpp": "text/x-c++",
    ".csv": "text/csv",  # RFC 7111; browsers and pandas expect it
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".html": "text/html",
    ".java": "text/x-java",
    ".json": "application/json",
    ".md": "text/markdown",
    ".pdf": "application/pdf",
    ".php": "text/x-php",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".py": "text/x-python",
    ".rb": "text/x-ruby",
    ".tex": "text/x-tex",
    ".txt": "text/plain",
    ".css": "text/css",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".js": "text/javascript",
    ".gif": "image/gif",
    ".png": "image/png",
    ".tar": "application/x-tar",
    ".ts": "application/typescript",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xml": "application/xml",
    ".zip": "application/zip",
    # Beyond seed 004: outputs the tool commonly writes.
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".gz": "application/gzip",
    ".parquet": "application/vnd.apache.parquet",
}
#: MIME type -> preferred extension (for files that arrive without one).
EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/x-tar": ".tar",
    "application/json": ".json",
    "image/svg+xml": ".svg",
}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BM", "image/bmp"),
    (b"PAR1", "application/vnd.apache.parquet"),
)
OCTET = "application/octet-stream"


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def guess_type(name: str, head: bytes = b"") -> str:
    """MIME type from the extension, else from ``head`` (the file's first bytes)."""
    known = TYPES.get(_suffix(name))
    if known:
        return known
    return sniff(head)


def sniff(head: bytes) -> str:
    """MIME type from magic bytes; ``application/octet-stream`` when nothing matches."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"[") and _is_text(head):
        return "application/json"
    if stripped.lower().startswith((b"<svg", b"<?xml")) and b"<svg" in head.lower():
        return "image/svg+xml"
    if head and _is_text(head):
        return "text/plain"
    return OCTET


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"  # a multi-byte char cut at the end
    return True


def extension_for(name: str, mime: str) -> str:
    """``name`` plus an extension when it has none and the type has a known one."""
    if _suffix(name):
        return name
    return name + EXTENSIONS.get(mime, "")


def is_json_name(name: str) -> bool:
    """True when a file of this name may legitimately hold an error-looking JSON body."""
    return _suffix(name) in (".json", ".jsonl", ".geojson", ".ipynb", "")
