"""What a download or a run hands back: plain data that prints, serialises and renders.

Results keep the original (unsafe) name next to the local path, the sha256 and byte count, and
the error if the file could not be fetched — a failed file is a row in the table with a hint,
not a lost exception. ``_repr_html_`` makes them a table with inline images in Jupyter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cigate.exceptions import CigateError
from cigate.harvest.refs import FileRef

__all__ = ["DownloadResult", "Harvest", "RunResult"]


@dataclass
class DownloadResult:
    """One file: where it went, or why it did not."""

    ref: FileRef
    path: Path | None = None
    bytes: int = 0
    sha256: str | None = None
    content_type: str | None = None
    #: How it was fetched: ``container``, ``container-listing`` (matched by path), ``files``.
    strategy: str | None = None
    attempts: int = 0
    error: CigateError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.path is not None

    @property
    def original_name(self) -> str:
        return self.ref.filename

    def _repr_html_(self) -> str:
        from cigate.client._render import html_table

        return html_table([self])

    def __rich__(self) -> Any:
        from cigate.client._render import files_table

        return files_table([self], title=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.ref.filename,
            "file_id": self.ref.file_id,
            "container_id": self.ref.container_id,
            "source": self.ref.source,
            "response_id": self.ref.response_id,
            "bytes": self.bytes if self.ok else None,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "path": str(self.path) if self.path else None,
            "strategy": self.strategy,
            "attempts": self.attempts,
            "error": self.error.to_dict() if self.error else None,
        }


@dataclass
class Harvest:
    """The results of downloading a set of FileRefs."""

    results: list[DownloadResult] = field(default_factory=list)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def errors(self) -> list[CigateError]:
        return [r.error for r in self.results if r.error is not None]

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.results if r.path is not None]

    def raise_for_errors(self) -> None:
        """Raise the first failure (its class tells what went wrong)."""
        if self.errors:
            raise self.errors[0]

    def to_dict(self) -> dict[str, Any]:
        return {"files": [r.to_dict() for r in self.results]}

    def _repr_html_(self) -> str:
        from cigate.client._render import html_table

        return html_table(self.results)

    def __rich__(self) -> Any:
        from cigate.client._render import files_table

        return files_table(self.results)


@dataclass
class RunResult(Harvest):
    """A code-interpreter run: the answer, its containers and every file it produced."""

    response_id: str | None = None
    container_ids: list[str] = field(default_factory=list)
    #: The model's answer as returned (with ``sandbox:`` links).
    text: str = ""
    #: The answer with ``sandbox:/mnt/data/…`` links rewritten to local paths.
    local_text: str = ""
    code: list[str] = field(default_factory=list)
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "response_id": self.response_id,
            "status": self.status,
            "container_ids": self.container_ids,
            "text": self.local_text or self.text,
            **super().to_dict(),
        }

    def _repr_html_(self) -> str:
        from cigate.client._render import html_table, markdown_html

        return markdown_html(self.local_text or self.text) + html_table(self.results)
