"""Output items, citations and deltas: pure builders, checked against the SDK's types."""

from __future__ import annotations

import pytest
from openai.types.responses import ResponseItem, ResponseOutputItem
from pydantic import TypeAdapter

from cigate.engine.containers import ContainerFile
from cigate.engine.items import (
    code_call_item,
    execution_outputs,
    find_citations,
    input_item_resource,
    message_item,
    output_text_part,
    split_code,
    split_text,
    with_outputs,
)
from cigate.sandbox.base import DisplayImage, ExecutionResult


def cfile(relpath: str, fid: str = "cfile_1") -> ContainerFile:
    return ContainerFile(
        id=fid, container_id="cntr_1", relpath=relpath, source="assistant", created_at=0, bytes=1
    )


def test_a_citation_covers_exactly_the_sandbox_url_in_code_points() -> None:
    text = "Voilà – “café” ✓ 🎉 [report](sandbox:/mnt/data/report.csv) done"
    [citation] = find_citations(text, "cntr_1", [cfile("report.csv")])
    assert text[citation["start_index"] : citation["end_index"]] == "sandbox:/mnt/data/report.csv"
    assert citation == {
        "type": "container_file_citation",
        "container_id": "cntr_1",
        "end_index": citation["end_index"],
        "file_id": "cfile_1",
        "filename": "report.csv",
        "start_index": citation["start_index"],
    }
    # A byte offset would be larger: the text before the link is not ASCII.
    assert citation["start_index"] < len(text[: citation["start_index"]].encode())


def test_the_longest_known_path_wins_and_unknown_names_are_not_cited() -> None:
    short, long = cfile("a.csv", "cfile_short"), cfile("a.csv.bak", "cfile_long")
    text = (
        "[x](sandbox:/mnt/data/a.csv.bak) [y](sandbox:/mnt/data/a.csv) "
        "[z](sandbox:/mnt/data/a.csvx) [w](sandbox:/mnt/data/dir/a.csv)"
    )
    cited = [c["file_id"] for c in find_citations(text, "cntr_1", [short, long])]
    assert cited == ["cfile_long", "cfile_short"]


def test_a_file_in_a_subdirectory_is_cited_with_its_basename() -> None:
    text = "see sandbox:/mnt/data/out/My Chart (1).png"
    [citation] = find_citations(text, "cntr_1", [cfile("out/My Chart (1).png")])
    assert citation["filename"] == "My Chart (1).png"
    assert text[citation["start_index"] :] == "sandbox:/mnt/data/out/My Chart (1).png"


def test_outputs_are_logs_then_images_as_data_urls() -> None:
    result = ExecutionResult(stdout="hi\n", images=[DisplayImage("image/png", b"\x89PNG")])
    assert execution_outputs(result) == [
        {"type": "logs", "logs": "hi"},
        {"type": "image", "url": "data:image/png;base64,iVBORw=="},
    ]
    assert execution_outputs(ExecutionResult()) == []


def test_outputs_are_hidden_unless_included() -> None:
    item = code_call_item(
        item_id="ci_1", container_id="cntr_1", code="1", status="completed", outputs=[]
    )
    assert with_outputs(item, False)["outputs"] is None
    assert with_outputs(item, True)["outputs"] == []
    assert item["outputs"] == []  # the stored item keeps them


def test_items_validate_against_the_sdk_output_item_union() -> None:
    adapter: TypeAdapter[object] = TypeAdapter(ResponseOutputItem)
    annotations = find_citations("sandbox:/mnt/data/a.txt", "cntr_1", [cfile("a.txt")])
    adapter.validate_python(
        message_item(
            item_id="msg_1",
            status="completed",
            content=[output_text_part("sandbox:/mnt/data/a.txt", annotations)],
        )
    )
    adapter.validate_python(
        code_call_item(
            item_id="ci_1", container_id="cntr_1", code="", status="in_progress", outputs=[]
        )
    )


@pytest.mark.parametrize(
    ("item", "expected_content"),
    [
        pytest.param(
            {"type": "message", "role": "user", "content": "hi"},
            [{"type": "input_text", "text": "hi"}],
            id="user-string",
        ),
        pytest.param(
            {"type": "message", "role": "assistant", "content": "ok"},
            [{"type": "output_text", "annotations": [], "logprobs": [], "text": "ok"}],
            id="assistant-string",
        ),
        pytest.param(
            {"type": "message", "role": "developer", "content": [{"type": "input_text",
                                                                  "text": "d"}]},
            [{"type": "input_text", "text": "d"}],
            id="parts-kept",
        ),
    ],
)  # fmt: skip
def test_input_messages_are_listed_as_completed_message_items(
    item: dict[str, object], expected_content: list[dict[str, object]]
) -> None:
    listed = input_item_resource(item, "msg_x")
    assert listed == {
        "id": "msg_x",
        "type": "message",
        "role": item["role"],
        "status": "completed",
        "content": expected_content,
    }
    TypeAdapter(ResponseItem).validate_python(listed)


@pytest.mark.parametrize(
    "text", ["", "one", "a b c d e f g h i", "  lead\n\nand  double  spaces \n", "日本語 テキスト"]
)
def test_text_deltas_concatenate_to_the_text(text: str) -> None:
    assert "".join(split_text(text)) == text


def test_code_deltas_are_lines_that_concatenate_to_the_code() -> None:
    code = "import os\nprint(1)\n\nx = 2"
    assert split_code(code) == ["import os\n", "print(1)\n", "\n", "x = 2"]
    assert split_code("") == [""]
