"""Results as a rich table (terminal) and as HTML with inline images (Jupyter).

One place decides the columns — filename, file id, container, bytes, sha256, local path — so the
CLI table, ``--json`` and the notebook view say the same thing.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from rich.table import Table

from cigate.client._results import DownloadResult

__all__ = [
    "INLINE_IMAGE_LIMIT",
    "TABLE_MIN_WIDTH",
    "container_table",
    "files_lines",
    "files_table",
    "html_table",
    "markdown_html",
    "timestamp",
]

#: Images larger than this are linked, not embedded, in the HTML view.
INLINE_IMAGE_LIMIT = 5 * 1024 * 1024
_INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def files_table(results: Iterable[DownloadResult], *, title: str | None = "Files") -> Table:
    """The terminal table; failed rows show the error class and message instead of a path."""
    table = Table(title=title, show_lines=False)
    for name, style in (
        ("filename", "bold"),
        ("file id", "dim"),
        ("container", "dim"),
        ("bytes", None),
        ("sha256", "dim"),
        ("local path", "green"),
    ):
        table.add_column(
            name,
            style=style,
            justify="right" if name == "bytes" else "left",
            # The path is what the user copies next: folded, never cut short.
            overflow="fold" if name == "local path" else "ellipsis",
        )
    for r in results:
        # Names come from model-written code: text, never markup ("a[/]b.png" broke rich).
        name, fid, cid = (
            escape_markup(x) for x in (r.ref.filename, r.ref.file_id, r.ref.container_id or "")
        )
        if r.ok:
            table.add_row(
                name,
                fid,
                cid,
                f"{r.bytes:,}",
                (r.sha256 or "")[:16] + "…",
                escape_markup(str(r.path)),
            )
        else:
            kind = r.error.kind if r.error else "error"
            message = r.error.message if r.error else "not downloaded"
            table.add_row(name, fid, cid, "", "", f"[red]{kind}: {escape_markup(message)}[/red]")
    return table


#: Below this many columns the table would cut names and paths: plain lines are printed.
TABLE_MIN_WIDTH = 120


def files_lines(results: Iterable[DownloadResult]) -> list[str]:
    """A header, then one plain line per file, nothing cut (a pipe, a narrow terminal):
    ``filename<TAB>bytes<TAB>sha256<TAB>local path``, or the error class and message."""
    lines = ["filename\tbytes\tsha256\tlocal path"]
    for r in results:
        if r.ok:
            lines.append(f"{r.ref.filename}\t{r.bytes}\t{r.sha256}\t{r.path}")
        else:
            kind = r.error.kind if r.error else "error"
            message = r.error.message if r.error else "not downloaded"
            lines.append(f"{r.ref.filename}\t-\t-\t{kind}: {message}")
    return lines


def escape_markup(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def container_table(container_id: str, records: Sequence[dict[str, Any]]) -> Table:
    """``cigate ls``: the container's file records."""
    table = Table(title=f"Files in {container_id}")
    table.add_column("file id", style="dim")
    table.add_column("path", style="bold")
    table.add_column("bytes", justify="right")
    table.add_column("source")
    table.add_column("created (UTC)", justify="right")
    for r in records:
        size = r.get("bytes")
        table.add_row(
            escape_markup(str(r.get("id", ""))),
            escape_markup(str(r.get("path", ""))),
            f"{size:,}" if isinstance(size, int) else "",
            escape_markup(str(r.get("source", ""))),
            escape_markup(timestamp(r.get("created_at"))),
        )
    return table


def timestamp(value: Any) -> str:
    """A Unix time from the API as ``2026-12-04 13:05:09``; anything else as it came."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2**37:
        return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _image_cell(r: DownloadResult) -> str:
    if not r.ok or r.path is None or r.content_type not in _INLINE_TYPES:
        return ""
    if r.bytes > INLINE_IMAGE_LIMIT:
        return "(large image)"
    data = base64.b64encode(r.path.read_bytes()).decode("ascii")
    return (
        f"<img src='data:{r.content_type};base64,{data}' "
        f"alt='{escape(r.ref.filename)}' style='max-width:320px;max-height:240px'>"
    )


#: CSV files up to this size get a table preview of their first rows in the HTML view.
CSV_PREVIEW_LIMIT = 1024 * 1024
CSV_PREVIEW_ROWS = 10


def markdown_html(text: str) -> str:
    """The model's answer as HTML: headings, lists, code and clickable links.

    Raw HTML in the answer is escaped, not rendered (it comes from a model), and markdown-it
    refuses ``javascript:``-style links.
    """
    if not text:
        return ""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    return f"<div class='cigate-answer'>{html}</div>"


def _csv_cell(r: DownloadResult) -> str:
    """The first rows of a small CSV file as a table (files the model wrote are untrusted:
    every cell is escaped)."""
    if not r.ok or r.path is None or r.content_type not in ("text/csv", "application/csv"):
        return ""
    if r.bytes > CSV_PREVIEW_LIMIT:
        return "(large CSV)"
    import csv
    import io

    try:
        text = r.path.read_text(encoding="utf-8-sig")
        rows = list(itertools.islice(csv.reader(io.StringIO(text)), CSV_PREVIEW_ROWS + 1))
    except (OSError, UnicodeDecodeError, csv.Error):
        return ""
    if not rows:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row in rows[1 : CSV_PREVIEW_ROWS + 1]
    )
    more = "<caption>first rows</caption>" if len(rows) > CSV_PREVIEW_ROWS else ""
    return f"<table style='font-size:85%'>{more}<tr>{head}</tr>{body}</table>"


def html_table(results: Iterable[DownloadResult]) -> str:
    """The Jupyter view: one row per file, images shown inline."""
    rows = []
    for r in results:
        if r.ok:
            cells = [
                escape(r.ref.filename),
                escape(r.ref.file_id),
                escape(r.ref.container_id or ""),
                f"{r.bytes:,}",
                f"<code>{escape((r.sha256 or '')[:16])}…</code>",
                f"<code>{escape(str(r.path))}</code>",
                _image_cell(r) or _csv_cell(r),
            ]
        else:
            message = f"{r.error.kind}: {r.error.message}" if r.error else "not downloaded"
            hint = r.error.hint if r.error else ""
            cells = [
                escape(r.ref.filename),
                escape(r.ref.file_id),
                escape(r.ref.container_id or ""),
                "",
                "",
                f"<span style='color:#b00'>{escape(message)}</span><br><i>{escape(hint)}</i>",
                "",
            ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("filename", "file id", "container", "bytes", "sha256", "local path", "")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
