"""Link rewriting keeps annotation offsets valid; the SSE splitter handles every framing."""

from __future__ import annotations

import pytest

from cigate.gateway.rewrite import by_path_url, rewrite_part
from cigate.harvest.sse import SSESplitter, parse_event


def _citation(text: str, name: str, file_id: str) -> dict:
    url = f"sandbox:/mnt/data/{name}"
    start = text.index(url)
    return {
        "type": "container_file_citation",
        "container_id": "cntr_1",
        "file_id": file_id,
        "filename": name,
        "start_index": start,
        "end_index": start + len(url),
    }


def test_rewriting_replaces_each_sandbox_link_and_shifts_later_offsets() -> None:
    text = "Voilà: [a](sandbox:/mnt/data/a.csv) and [b](sandbox:/mnt/data/b.png) — fin, see x."
    anns = [_citation(text, "a.csv", "cfile_a"), _citation(text, "b.png", "cfile_b")]
    tail = {"type": "url_citation", "url": "u", "title": "t"}
    tail["start_index"] = text.index("x.")
    tail["end_index"] = tail["start_index"] + 1
    part = {"type": "output_text", "text": text, "annotations": [*anns, tail]}
    rewrite_part(part, lambda path: by_path_url("https://gw.example", "resp_1", path))
    new = part["text"]
    a, b, url_ann = part["annotations"]
    base = "https://gw.example/responses/resp_1/files/by-path"
    assert new[a["start_index"] : a["end_index"]] == f"{base}/a.csv"
    assert new[b["start_index"] : b["end_index"]] == f"{base}/b.png"
    assert new[url_ann["start_index"] : url_ann["end_index"]] == "x"
    assert "sandbox:" not in new


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_events_split_correctly_whatever_the_line_endings_and_chunking(newline: bytes) -> None:
    events = [
        b'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}',
        b'event: response.output_text.delta\ndata: {"type":"x","delta":"hi"}',
    ]
    stream = b"".join(e.replace(b"\n", newline) + newline * 2 for e in events)
    splitter = SSESplitter()
    got = [raw for i in range(0, len(stream), 7) for raw in splitter.feed(stream[i : i + 7])]
    assert len(got) == 2
    parsed = parse_event(got[0], (b'"response.created"',))
    assert parsed is not None
    assert parsed["response"]["id"] == "r"
    assert parse_event(got[1], (b'"response.created"',)) is None  # not interesting: not decoded
