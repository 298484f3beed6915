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
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """Drop terminal colour codes: tracebacks are logged as plain text, as the real tool does."""
    return _ANSI.sub("", text)


class Collector:
    """Accumulates the messages of one request; ``idle`` turns true when the kernel is done."""

    def __init__(self) -> None:
        self.result = ExecutionResult()
        self.idle = False

    def feed(self, msg: dict[str, Any]) -> None:
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type", "")
        content: dict[str, Any] = msg.get("content") or {}
        if kind == "stream":
            text = str(content.get("text", ""))
            if content.get("name") == "stderr":
                self.result.stderr += text
            else:
                self.result.stdout += text
        elif kind in ("execute_result", "display_data"):
            data: dict[str, Any] = content.get("data") or {}
            self._images(data)
            if kind == "execute_result" and "text/plain" in data:
                self.result.result_text = str(data["text/plain"])
        elif kind == "error":
            self.result.error = ExecutionError(
                ename=str(content.get("ename", "")),
                evalue=str(content.get("evalue", "")),
                traceback=[strip_ansi(str(line)) for line in content.get("traceback", [])],
            )
        elif kind == "status" and content.get("execution_state") == "idle":
            self.idle = True

    def _images(self, data: dict[str, Any]) -> None:
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
