"""The incremental SSE splitter gives the events of the whole stream, however it is chunked.

The reference is the definition: the blank-line pattern searched over the whole stream at once.
Streams are generated from the pieces that make splitting hard (CR, LF, CRLF runs, data lines,
text without line ends), and cut at generated points, including inside a CRLF pair and inside
a blank line.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cigate.harvest import sse
from cigate.harvest.sse import SSESplitter

BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
PIECES = [b"\r", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", b"data: ", b"{}", b"x", b"event: y"]


def whole_stream(stream: bytes) -> tuple[list[bytes], bytes]:
    """The events of ``stream`` split at once, and what is left after the last blank line."""
    events, start = [], 0
    for match in BOUNDARY.finditer(stream):
        events.append(stream[start : match.start()])
        start = match.end()
    return events, stream[start:]


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(stream), *(p % (len(stream) + 1) for p in points)})
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), max_size=60),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    restart=st.booleans(),
)
def test_any_chunking_gives_the_events_of_the_whole_stream(
    pieces: list[bytes], points: list[int], restart: bool
) -> None:
    stream = b"".join(pieces)
    expected, rest = whole_stream(stream)
    splitter = SSESplitter()
    got: list[bytes] = []
    for chunk in cut(stream, points):
        events = splitter.feed(chunk)
        assert all(isinstance(e, bytes) for e in events)  # never a view of a reused buffer
        got += events
    assert got == expected
    assert splitter.flush() == ([rest] if rest.strip() else [])
    if restart:  # flushed: a new stream starts from nothing
        assert splitter.feed(b"data: 1\n\n") == [b"data: 1"]


def test_every_single_cut_of_a_crlf_stream_gives_the_same_events() -> None:
    stream = b"event: a\r\ndata: {}\r\n\r\nevent: b\r\n\r\n\r\r\n\ndata: c\r\r"
    expected, _ = whole_stream(stream)
    for at in range(len(stream) + 1):
        splitter = SSESplitter()
        assert splitter.feed(stream[:at]) + splitter.feed(stream[at:]) == expected, at


def test_an_event_that_never_ends_is_dropped_at_the_cap_and_watching_goes_on() -> None:
    splitter = SSESplitter(max_buffer=100)
    for _ in range(30):
        assert splitter.feed(b"data: " + b"x" * 20) == []
    assert splitter.feed(b"\n\ndata: next\n\n")[-1] == b"data: next"


class CountingPattern:
    """The blank-line pattern, counting the bytes each search is asked to look at."""

    def __init__(self) -> None:
        self.scanned = 0

    def finditer(self, data: bytes | bytearray, pos: int = 0) -> object:
        self.scanned += len(data) - pos
        return BOUNDARY.finditer(data, pos)


def test_a_huge_event_in_many_chunks_is_searched_once_not_once_a_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event of many data lines (each chunk has line ends but no blank line) used to be
    copied and searched whole again for every chunk: 1.3 s of the event loop for 8 MB, and
    quadratic up to the 64 MB cap. Counted in bytes searched, not timed."""
    pattern = CountingPattern()
    monkeypatch.setattr(sse, "_BOUNDARY", pattern)
    stream = (b"data: " + b"x" * 1000 + b"\n") * 2000 + b"\n"  # one 2 MB event
    splitter = SSESplitter()
    events = [e for i in range(0, len(stream), 4096) for e in splitter.feed(stream[i : i + 4096])]
    assert len(events) == 1
    assert len(events[0]) == len(stream) - 2
    assert pattern.scanned <= 2 * len(stream)
