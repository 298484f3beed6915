"""Turning a cell's IOPub messages into an ``ExecutionResult``, and the /mnt/data path rewriting.

Kept apart from the kernel lifecycle so the message rules (which types count, how images and
tracebacks are decoded) can be read and tested on their own.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cigate.sandbox.base import MOUNT_POINT, DisplayImage, ExecutionError, ExecutionResult

IMAGE_TYPES = ("image/png", "image/jpeg")
#: Characters of one stream (and of a value or an error message) one cell keeps. The kernel
#: stops sending there (with a note); the manager enforces it again, with room for the note.
MAX_STREAM = 1 << 20
_NOTE_ROOM = 1024
#: Images one cell keeps, and their bytes together.
MAX_IMAGES = 100
MAX_IMAGE_BYTES = 64 << 20
TRUNCATED = "\n[output truncated: this cell wrote more than {limit} characters to {name}]\n"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """Drop terminal colour codes: tracebacks are logged as plain text, as the real tool does."""
    return _ANSI.sub("", text)


class Collector:
    """Accumulates the messages of one request; ``idle`` turns true when the kernel is done.

    Messages come from a process that runs model-written code, so each field is type-checked
    (anything unexpected is ignored) and what one cell can make the manager hold is bounded:
    ``MAX_STREAM`` characters per stream, ``MAX_IMAGES`` images of ``MAX_IMAGE_BYTES``.
    """

    def __init__(self) -> None:
        self.result = ExecutionResult()
        self.idle = False

    def feed(self, msg: dict[str, Any]) -> None:
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type", "")
        content = msg.get("content")
        if not isinstance(content, dict):
            return
        if kind == "stream":
            text = content.get("text")
            if not isinstance(text, str):
                return
            if content.get("name") == "stderr":
                self.result.stderr = _append(self.result.stderr, text, "stderr")
            else:
                self.result.stdout = _append(self.result.stdout, text, "stdout")
        elif kind in ("execute_result", "display_data"):
            data = content.get("data")
            if not isinstance(data, dict):
                return
            self._images(data)
            if kind == "execute_result" and isinstance(data.get("text/plain"), str):
                self.result.result_text = data["text/plain"][:MAX_STREAM]
        elif kind == "error":
            lines = content.get("traceback")
            lines = lines if isinstance(lines, list) else []
            self.result.error = ExecutionError(
                ename=str(content.get("ename", ""))[:1000],
                evalue=str(content.get("evalue", ""))[:MAX_STREAM],
                traceback=[strip_ansi(str(line)) for line in lines[:1000]],
            )
        elif kind == "status" and content.get("execution_state") == "idle":
            self.idle = True

    def _images(self, data: dict[str, Any]) -> None:
        if len(self.result.images) >= MAX_IMAGES:
            return
        if sum(len(i.data) for i in self.result.images) >= MAX_IMAGE_BYTES:
            return
        for mime in IMAGE_TYPES:
            encoded = data.get(mime)
            if not isinstance(encoded, str):
                continue
            try:
                raw = base64.b64decode(encoded, validate=False)
            except (binascii.Error, ValueError):
                continue
            self.result.images.append(DisplayImage(mime_type=mime, data=raw))
            return  # one image per message: the richest of the types we keep


def _append(current: str, text: str, name: str) -> str:
    """``current + text`` up to ``MAX_STREAM`` characters, then one truncation note."""
    room = MAX_STREAM + _NOTE_ROOM - len(current)
    if room <= 0:
        return current
    if len(text) <= room:
        return current + text
    return current + text[:room] + TRUNCATED.format(limit=MAX_STREAM + _NOTE_ROOM, name=name)


class PathRewriter:
    """Unisolated kernels cannot mount /mnt/data: map it to the workdir in code, back in text."""

    def __init__(self, workdir: str | None) -> None:
        self.workdir = workdir

    def to_kernel(self, code: str) -> str:
        if self.workdir is None:
            return code
        return code.replace(MOUNT_POINT, self.workdir)

    def to_user(self, text: str) -> str:
        if self.workdir is None:
            return text
        return text.replace(self.workdir, MOUNT_POINT)

    def result(self, result: ExecutionResult) -> ExecutionResult:
        """Rewrite every text field of a result in place, and return it."""
        if self.workdir is None:
            return result
        result.stdout = self.to_user(result.stdout)
        result.stderr = self.to_user(result.stderr)
        if result.result_text is not None:
            result.result_text = self.to_user(result.result_text)
        if result.error is not None:
            err = result.error
            result.error = ExecutionError(
                ename=err.ename,
                evalue=self.to_user(err.evalue),
                traceback=[self.to_user(line) for line in err.traceback],
            )
        return result
