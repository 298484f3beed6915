"""Live progress of a run in Jupyter (seed 000's home), where rich's terminal view shows nothing.

``cigate.run(...)`` in a notebook cell picks :class:`NotebookObserver` when no observer is given:
one output area, updated in place through IPython's display handles (no widgets needed), shows
the numbered steps, the code as the model writes it, and each download with its progress. The
result then renders itself (``RunResult._repr_html_``). Updates are throttled so a fast stream
does not flood the notebook's websocket.
"""

from __future__ import annotations

import sys
import time
from html import escape
from typing import Any, cast

from cigate.client._results import DownloadResult
from cigate.harvest.refs import FileRef

__all__ = ["NotebookObserver", "in_notebook"]

_CODE_TAIL = 20
_MIN_INTERVAL = 0.2


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a terminal IPython, not plain Python)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class NotebookObserver:
    """A run's steps, code and downloads in one notebook output, updated in place."""

    def __init__(self) -> None:
        from IPython import display as ipython_display

        show = cast(Any, ipython_display.display)
        self._html = cast(Any, ipython_display.HTML)
        self._steps: list[str] = []
        self._warnings: list[str] = []
        self._code = ""
        self._downloads: dict[tuple[str | None, str], list[Any]] = {}
        self._last = 0.0
        self._handle: Any = show(self._html(self._render()), display_id=True)

    # -- run observer ------------------------------------------------------------------------

    def step(self, number: int, total: int, text: str) -> None:
        self._steps.append(f"[{number}/{total}] {text}")
        self._refresh(force=True)

    def warning(self, text: str) -> None:
        self._warnings.append(text)
        self._refresh(force=True)

    def code_delta(self, item_id: str, delta: str) -> None:
        self._code += delta
        self._refresh()

    def code_done(self, item_id: str, code: str) -> None:
        self._code = ""
        self._steps.append("ran:\n" + code.rstrip())
        self._refresh(force=True)

    # -- download observer -------------------------------------------------------------------

    def started(self, ref: FileRef, total: int | None) -> None:
        self._downloads[ref.key] = [ref.filename, 0, total, "↓"]
        self._refresh(force=True)

    def advanced(self, ref: FileRef, nbytes: int) -> None:
        row = self._downloads.get(ref.key)
        if row is not None:
            row[1] += nbytes
            self._refresh()

    def finished(self, result: DownloadResult) -> None:
        row = self._downloads.setdefault(result.ref.key, [result.ref.filename, 0, None, ""])
        row[1], row[2] = result.bytes, result.bytes if result.ok else row[2]
        row[3] = "✓" if result.ok else f"✗ {result.error.kind if result.error else 'failed'}"
        self._refresh(force=True)

    # -- rendering ---------------------------------------------------------------------------

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _MIN_INTERVAL:
            return
        self._last = now
        if self._handle is not None:
            self._handle.update(self._html(self._render()))

    def _render(self) -> str:
        parts = [
            "<div class='cigate-progress' style='font-family:monospace;font-size:90%'>",
            *(f"<pre style='margin:2px 0'>{escape(s)}</pre>" for s in self._steps),
            *(f"<div style='color:#a60'>warning: {escape(w)}</div>" for w in self._warnings),
        ]
        if self._code:
            tail = "\n".join(self._code.splitlines()[-_CODE_TAIL:])
            parts.append(
                "<pre style='background:#f6f6f6;margin:2px 0'>"
                f"<i>writing…</i>\n{escape(tail)}</pre>"
            )
        for name, done, total, mark in self._downloads.values():
            size = f"{done:,} / {total:,} bytes" if total else f"{done:,} bytes"
            parts.append(f"<div>{escape(mark)} {escape(name)} — {size}</div>")
        parts.append("</div>")
        return "".join(parts)
