"""The committed coverage page matches what the SDK and the emulator's routes say today."""

from __future__ import annotations

from pathlib import Path

from cigate.testing import coverage


def test_the_committed_coverage_page_is_up_to_date() -> None:
    committed = coverage.DEFAULT_OUTPUT.read_text()
    assert committed == coverage.render(), (
        "docs/emulator-coverage.md is out of date: run `python -m cigate.testing.coverage`"
    )


def test_every_containers_and_files_operation_is_served_on_azure_v1() -> None:
    page = coverage.render()
    rows = [
        line
        for line in page.splitlines()
        if line.startswith(("| `client.containers", "| `client.files"))
    ]
    assert len(rows) >= 15
    assert all(row.split("|")[3].strip() == "yes" for row in rows), rows


def test_containers_are_not_served_on_the_dated_azure_surface() -> None:
    rows = [
        line for line in coverage.render().splitlines() if line.startswith("| `client.containers")
    ]
    assert rows
    assert {row.split("|")[4].strip() for row in rows} == {"—"}


def test_the_check_mode_fails_on_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "coverage.md"
    stale.write_text("old\n")
    assert coverage.main(["--output", str(stale), "--check"]) == 1
    assert coverage.main(["--output", str(stale)]) == 0
    assert coverage.main(["--output", str(stale), "--check"]) == 0
