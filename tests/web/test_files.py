"""The shared HTTP rules of a download: the exact name in ``filename*``, ranges of any size."""

from __future__ import annotations

import pytest

from cigate.web.files import content_disposition, parse_range
from tests.names import HOSTILE_PATHS, basename, filename_from

NAMES = [basename(p) for p in HOSTILE_PATHS]


@pytest.mark.parametrize("name", NAMES, ids=[repr(n)[:40] for n in NAMES])
def test_filename_star_gives_a_browser_back_the_exact_name(name: str) -> None:
    header = content_disposition(name)
    assert filename_from(header) == name
    assert header.isascii()
    assert "\r" not in header
    assert "\n" not in header
    assert header.startswith('attachment; filename="')
    assert header.count('"') == 2  # only the fallback's own quotes
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback
    assert not set(fallback) & set('/\\%"')
    assert all(32 <= ord(ch) < 127 for ch in fallback)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../../../etc/passwd", "passwd"),
        ("a/b/report.csv", "report.csv"),
        ("x" * 256, None),
        ("a\x00b.txt", None),
        ("lone \udcff surrogate.txt", None),
        ("", "file"),
        ("..", "file"),
    ],
    ids=["traversal", "path", "over-255-bytes", "nul", "lone-surrogate", "empty", "dot-dot"],
)
def test_what_cannot_be_a_file_name_is_sent_as_its_safe_name(
    given: str, expected: str | None
) -> None:
    got = filename_from(content_disposition(given))
    assert got is not None
    if expected is not None:
        assert got == expected
    assert "/" not in got
    assert "\x00" not in got
    assert len(got.encode()) <= 255
    got.encode("utf-8")  # valid text


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=" + "9" * 5000 + "-", False),
        ("bytes=0-" + "9" * 5000, (0, 99)),
        ("bytes=-" + "9" * 5000, (0, 99)),
        ("bytes=" + "9" * 5000 + "-" + "9" * 5001, False),
        ("bytes=" + "1" * 30 + "-5", None),
    ],
    ids=["small", "huge-start", "huge-end", "huge-suffix", "huge-both", "reversed-huge"],
)
def test_ranges_with_numbers_of_any_length_never_fail(
    header: str, expected: tuple[int, int] | bool | None
) -> None:
    assert parse_range(header, 100) == expected
