"""Hostile container file names become safe local names inside the output directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from cigate.harvest.content_types import extension_for, guess_type, sniff
from cigate.harvest.naming import MAX_NAME_BYTES, NameReserver, safe_name, unique_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chart.png", "chart.png"),
        ("../x", "x"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("a\x00b\x1bc\n.txt", "abc.txt"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("LPT1.csv", "_LPT1.csv"),
        ("..", "file"),
        ("", "file"),
        (".hidden", "hidden"),
        ("trailing. ", "trailing"),
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("résumé.pdf", "résumé.pdf"),
        ("rtl\u202egnp.exe", "rtlgnp.exe"),
        ("lone\udcffsurrogate.txt", "lonesurrogate.txt"),
    ],
    ids=[
        "plain",
        "parent-traversal",
        "deep-traversal",
        "windows-traversal",
        "control-characters",
        "device-name",
        "device-name-with-extension",
        "printer-port",
        "dot-dot",
        "empty",
        "hidden",
        "trailing-dot-space",
        "windows-forbidden-characters",
        "unicode-kept",
        "bidi-override-removed",
        "lone-surrogate-removed",
    ],
)
def test_safe_name_reduces_any_name_to_a_harmless_basename(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_very_long_names_are_cut_to_the_cap_keeping_the_extension() -> None:
    name = "é" * 400 + ".csv"
    safe = safe_name(name)
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert safe.endswith(".csv")


def test_collisions_get_a_number_before_the_extension(tmp_path: Path) -> None:
    (tmp_path / "chart.png").write_bytes(b"x")
    (tmp_path / "chart (1).png").write_bytes(b"x")
    assert unique_path(tmp_path, "chart.png").name == "chart (2).png"
    (tmp_path / "README").write_bytes(b"x")
    assert unique_path(tmp_path, "README").name == "README (1)"


def test_the_reserver_never_hands_out_one_name_twice(tmp_path: Path) -> None:
    reserver = NameReserver(tmp_path)
    names = {reserver.reserve("a.txt").name for _ in range(5)}
    assert names == {"a.txt", "a (1).txt", "a (2).txt", "a (3).txt", "a (4).txt"}
    assert reserver.inside(tmp_path / "a.txt")
    assert not reserver.inside(tmp_path / ".." / "a.txt")


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("data.csv", b"", "text/csv"),
        ("chart.PNG", b"", "image/png"),
        (
            "report.docx",
            b"",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("cfile_1", b"\x89PNG\r\n\x1a\n....", "image/png"),
        ("cfile_2", b"\xff\xd8\xff\xe0", "image/jpeg"),
        ("cfile_3", b"PK\x03\x04rest", "application/zip"),
        ("cfile_4", b"%PDF-1.7", "application/pdf"),
        ("cfile_5", b"GIF89a", "image/gif"),
        ("noext", b"hello world\n", "text/plain"),
        ("noext", b"\x00\x01\x02\xff", "application/octet-stream"),
    ],
    ids=[
        "csv-from-seed-table",
        "extension-case-insensitive",
        "docx",
        "sniffed-png",
        "sniffed-jpeg",
        "sniffed-zip",
        "sniffed-pdf",
        "sniffed-gif",
        "sniffed-text",
        "unknown-binary",
    ],
)
def test_content_type_comes_from_the_name_else_the_first_bytes(
    name: str, head: bytes, expected: str
) -> None:
    assert guess_type(name, head) == expected


def test_files_without_an_extension_get_one_from_their_sniffed_type() -> None:
    assert extension_for("cfile_abc", sniff(b"\x89PNG\r\n\x1a\n")) == "cfile_abc.png"
    assert extension_for("chart.png", "image/jpeg") == "chart.png"
