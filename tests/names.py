"""Hostile file names (as model code can write them) and an RFC 6266 reader of the header.

``HOSTILE_PATHS`` are paths under ``/mnt/data`` as bytes: Linux allows any byte but ``/`` and
NUL in a name, up to 255 bytes. Each basename is unique, so a file can be found by its name.
``shown(path)`` is how the API shows a path (UTF-8, U+FFFD for bytes that are not).
``filename_from(header)`` reads ``Content-Disposition`` as a browser does (RFC 6266 4.3:
``filename*`` wins over ``filename``), with the standard library's RFC 2231/8187 decoder, so
the test does not share code with the encoder it checks.
"""

from __future__ import annotations

import email.message
import email.utils

__all__ = ["HOSTILE_PATHS", "basename", "content", "filename_from", "shown", "write_cell"]

HOSTILE_PATHS: list[bytes] = [
    # the four the adversarial review lost, and their kin
    b".htaccess",
    b"..x",
    b"....",
    b"..\\..\\win.txt",
    b"...",
    b".hidden dir/.env",
    # spaces, dots, dashes at the edges
    b" leading space.txt",
    b"trailing space ",
    b"trailing dot.",
    b"-dash-first.txt",
    b"~tilde",
    # control characters
    b"new\nline.txt",
    b"carriage\rreturn.txt",
    b"tab\tname.txt",
    b"bell\x07.txt",
    b"esc\x1b[31mred.txt",
    b"del\x7f.txt",
    # header and shell syntax
    b'double"quote.txt',
    b"single'quote.txt",
    b'x.txt"; filename="evil.exe',
    b"semi;colon=1.txt",
    b"percent%20encoded.txt",
    b"100%.txt",
    b"a&b=c?d#e.txt",
    b"<script>alert(1)</script>.html",
    b"$(rm -rf ~).sh",
    b"star*pipe|colon:.txt",
    # Windows device names
    b"CON",
    b"nul.txt",
    # Unicode
    "résumé – 報告.pdf".encode(),
    "emoji 🎉.png".encode(),
    "\u202egnp.exe".encode(),
    "zero\u200bwidth.txt".encode(),
    "cafe\u0301 NFD.txt".encode(),
    # not UTF-8
    b"\xff\xfe invalid.bin",
    b"overlong \xc0\xaf.txt",
    b"cesu \xed\xa0\x80.txt",
    # the longest names Linux allows
    b"L" * 251 + b".txt",
    "é".encode() * 127,
    # subdirectories
    b"sub dir/inner\nname.txt",
    b"deep/a/b/c/d/e/f/g/leaf.txt",
]


def shown(path: bytes) -> str:
    """The path as the API shows it."""
    return path.decode("utf-8", "replace")


def basename(path: bytes) -> str:
    return shown(path).rsplit("/", 1)[-1]


def content(index: int, path: bytes) -> bytes:
    """The bytes the cell writes to ``HOSTILE_PATHS[index]``: unique per file."""
    return b"%d:" % index + path


def write_cell() -> str:
    """A cell that writes every hostile path with its own content."""
    return (
        "import os\n"
        f"NAMES = {HOSTILE_PATHS!r}\n"
        "for i, name in enumerate(NAMES):\n"
        "    path = b'/mnt/data/' + name\n"
        "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "    with open(path, 'wb') as f:\n"
        "        f.write(b'%d:' % i + name)\n"
        "print(len(NAMES))\n"
    )


def filename_from(header: str) -> str | None:
    """The file name a browser takes from ``Content-Disposition`` (``filename*`` first)."""
    message = email.message.Message()
    message["content-disposition"] = header
    params = message.get_params(header="content-disposition") or []
    extended = [v for k, v in params if k == "filename" and isinstance(v, tuple)]
    if extended:
        return str(email.utils.collapse_rfc2231_value(extended[0]))
    return message.get_filename()
