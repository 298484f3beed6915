"""Text helpers the models share: message text, fenced python blocks, ``sandbox:`` URLs."""

from __future__ import annotations

import re
from typing import Any

from cigate.sandbox.base import MOUNT_POINT

__all__ = ["extract_code_blocks", "message_text", "sandbox_url"]

#: A fenced block whose info string is ``python`` or ``py``; the closing fence ends a line.
_CODE_BLOCK = re.compile(
    r"^[ \t]*```[ \t]*(?:python|py)[ \t]*\n(?P<code>.*?)^[ \t]*```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def message_text(item: dict[str, Any]) -> str:
    """Concatenated text of a message item: a string, or its ``input_text``/``text`` parts."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [
        str(part.get("text", ""))
        for part in content
        if isinstance(part, dict) and part.get("type") in ("input_text", "text", "output_text")
    ]
    return "\n".join(texts)


def extract_code_blocks(text: str) -> list[str]:
    """Every fenced python block in ``text``, in order, without the fences."""
    normalized = text.replace("\r\n", "\n")
    if not normalized.endswith("\n"):
        normalized += "\n"
    return [m.group("code") for m in _CODE_BLOCK.finditer(normalized)]


def sandbox_url(relpath: str) -> str:
    """The URL the model writes for a file: ``sandbox:/mnt/data/<relpath>``."""
    return f"sandbox:{MOUNT_POINT}/{relpath}"
