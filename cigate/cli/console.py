"""The CLI's live view: numbered steps, the code as the model writes it, a bar per download.

It implements the runner's observer protocol, so the library itself never prints. Everything
goes to stderr; stdout carries only the answer and the table (or JSON), so output can be piped.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.syntax import Syntax
from rich.text import Text

from cigate.client._results import DownloadResult
from cigate.harvest.refs import FileRef

__all__ = ["ConsoleObserver"]

_CODE_TAIL = 20  # lines of the code being written shown live


class ConsoleObserver:
    """Renders a run (or a fetch) on a rich console; use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.console,
        )
        self._tasks: dict[tuple[str | None, str], TaskID] = {}
        self._code: dict[str, str] = {}
        self._writing: str | None = None
        self._live = Live(self, console=self.console, refresh_per_second=8, transient=True)

    def __enter__(self) -> ConsoleObserver:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()
        if self._tasks:  # the live view was transient: leave the final bars on screen
            self.console.print(self.progress.get_renderable())

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self._writing is not None:
            lines = self._code.get(self._writing, "").splitlines()[-_CODE_TAIL:]
            parts.append(
                Panel(Syntax("\n".join(lines), "python"), title="code interpreter (writing…)")
            )
        if self._tasks:
            parts.append(self.progress)
        return Group(*parts)

    # -- run observer ------------------------------------------------------------------------

    def step(self, number: int, total: int, text: str) -> None:
        self.console.print(f"[bold cyan]\\[{number}/{total}][/] {text}", highlight=False)

    def warning(self, text: str) -> None:
        self.console.print(Text(f"warning: {text}", style="yellow"))

    def code_delta(self, item_id: str, delta: str) -> None:
        self._code[item_id] = self._code.get(item_id, "") + delta
        self._writing = item_id

    def code_done(self, item_id: str, code: str) -> None:
        self._code[item_id] = code
        self._writing = None
        self.console.print(Panel(Syntax(code.rstrip(), "python"), title="code interpreter"))

    # -- download observer -------------------------------------------------------------------

    def _label(self, ref: FileRef, mark: str = "↓") -> str:
        return f"{mark} {ref.filename[:60]}"

    def started(self, ref: FileRef, total: int | None) -> None:
        task = self._tasks.get(ref.key)
        if task is None:
            self._tasks[ref.key] = self.progress.add_task(self._label(ref), total=total)
        else:  # a retry starts again from zero
            self.progress.reset(task, total=total, description=self._label(ref))

    def advanced(self, ref: FileRef, nbytes: int) -> None:
        task = self._tasks.get(ref.key)
        if task is not None:
            self.progress.advance(task, nbytes)

    def finished(self, result: DownloadResult) -> None:
        ref = result.ref
        task = self._tasks.get(ref.key)
        if task is None:
            task = self._tasks[ref.key] = self.progress.add_task(self._label(ref), total=None)
        mark = "✓" if result.ok else "✗"
        kw: dict[str, Any] = {"description": self._label(ref, mark)}
        if result.ok:
            kw.update(total=result.bytes, completed=result.bytes)
        self.progress.update(task, **kw)
