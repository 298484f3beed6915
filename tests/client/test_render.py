"""Tables show names chosen by model-written code as text, never as rich markup."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cigate.client._render import container_table, files_table
from cigate.client._results import DownloadResult
from cigate.exceptions import FileNotFoundInContainerError
from cigate.harvest.refs import FileRef

NAMES = ["a[/]b.png", "[bold]x.csv", "[link=http://127.0.0.1/]c.txt"]


def _render(table: object) -> str:
    console = Console(width=400, record=True, color_system=None)
    console.print(table)
    return console.export_text()


@pytest.mark.parametrize("name", NAMES, ids=["closing-tag", "style-tag", "link-tag"])
def test_a_file_name_that_looks_like_markup_is_shown_as_is(name: str, tmp_path: Path) -> None:
    ok = DownloadResult(
        ref=FileRef("cfile_1", name, "cntr_1"), path=tmp_path / name, bytes=1, sha256="ab"
    )
    failed = DownloadResult(
        ref=FileRef("cfile_2", name, "cntr_1"), error=FileNotFoundInContainerError("gone")
    )
    text = _render(files_table([ok, failed]))
    assert text.count(name) >= 2  # the filename of both rows
    assert str(ok.path) in text


@pytest.mark.parametrize("name", NAMES, ids=["closing-tag", "style-tag", "link-tag"])
def test_a_container_path_that_looks_like_markup_is_shown_as_is(name: str) -> None:
    record = {"id": "cfile_1", "path": f"/mnt/data/{name}", "bytes": 1, "source": "assistant"}
    assert f"/mnt/data/{name}" in _render(container_table("cntr_1", [record]))


def test_the_answer_renders_as_markdown_with_the_models_html_escaped() -> None:
    from cigate.client._render import markdown_html

    html = markdown_html(
        "# Result\n\nSee [the chart](downloads/chart.png).\n\n"
        "<script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>"
    )
    assert "<h1>Result</h1>" in html
    assert '<a href="downloads/chart.png">the chart</a>' in html
    assert "<script>" not in html
    assert "<img" not in html
    assert 'href="javascript:' not in html


def test_a_single_download_result_renders_in_a_notebook_and_a_terminal(tmp_path: Path) -> None:
    from rich.console import Console

    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,<x>\n")
    result = DownloadResult(
        ref=FileRef("cfile_1", "t.csv", "cntr_1"),
        path=path,
        bytes=10,
        sha256="ab" * 32,
        content_type="text/csv",
    )
    html = result._repr_html_()
    assert "<th>a</th><th>b</th>" in html
    assert "<td>&lt;x&gt;</td>" in html
    console = Console(width=200, record=True)
    console.print(result)
    assert "t.csv" in console.export_text()
