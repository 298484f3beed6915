"""FileRef discovery from SDK objects, recorded events and raw JSON; link rewriting."""

from __future__ import annotations

import json
from typing import Any

from openai.types.responses import Response, ResponseOutputTextAnnotationAddedEvent

from cigate.harvest.refs import FileRef, RefCollector, find_files, rewrite_sandbox_links

CID = "cntr_6903bf2c0470819090b2b1e63e0b66800c139a5d654a42ec"
FID = "cfile_6903bf45e3288191af3d56e6d23c3a4d"
TEXT = "Done.  [Download the file](sandbox:/mnt/data/two_dice_sums_10000.txt)\n"


def _citation(fid: str = FID, name: str = "two_dice_sums_10000.txt") -> dict[str, Any]:
    start = TEXT.index("sandbox:")
    return {
        "type": "container_file_citation",
        "container_id": CID,
        "file_id": fid,
        "filename": name,
        "start_index": start,
        "end_index": start + len(f"sandbox:/mnt/data/{name}"),
    }


def _response(annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "resp_024ee52fc1900767006903bf276a60819395647a8a01d4a3d8",
        "object": "response",
        "created_at": 1761853223,
        "status": "completed",
        "model": "gpt-5-nano",
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "output": [
            {
                "id": "ci_1",
                "type": "code_interpreter_call",
                "status": "completed",
                "code": "open('/mnt/data/x','w')",
                "container_id": CID,
                "outputs": None,
            },
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": TEXT,
                        "annotations": annotations,
                        "logprobs": [],
                    }
                ],
            },
        ],
    }


def test_a_response_object_yields_its_container_file_citation() -> None:
    response = Response.model_validate(_response([_citation()]))
    refs = find_files(response)
    assert refs == [
        FileRef(
            file_id=FID,
            filename="two_dice_sums_10000.txt",
            container_id=CID,
            source="citation",
            response_id=response.id,
        )
    ]
    assert refs[0].is_container_file


def test_raw_json_text_and_dicts_give_the_same_refs() -> None:
    data = _response([_citation()])
    assert find_files(json.dumps(data)) == find_files(data) == find_files(json.dumps(data).encode())


def test_an_image_cited_twice_is_one_ref_with_the_real_name() -> None:
    auto = _citation(name=f"{FID}.png")
    real = _citation(name="chart.png")
    refs = find_files(_response([auto, real]))
    assert len(refs) == 1
    assert refs[0].filename == "chart.png"


def test_stream_events_yield_each_ref_once_as_they_arrive() -> None:
    event = ResponseOutputTextAnnotationAddedEvent.model_validate(
        {
            "type": "response.output_text.annotation.added",
            "sequence_number": 15,
            "item_id": "msg_1",
            "output_index": 2,
            "content_index": 0,
            "annotation_index": 0,
            "annotation": _citation(),
        }
    )
    collector = RefCollector()
    assert (
        collector.feed(
            {"type": "response.created", "response": {"object": "response", "id": "resp_1"}}
        )
        == []
    )
    first = collector.feed(event)
    assert [r.file_id for r in first] == [FID]
    assert first[0].response_id == "resp_1"
    assert (
        collector.feed({"type": "response.completed", "response": _response([_citation()])}) == []
    )
    assert collector.container_ids == [CID]


def test_assistants_messages_yield_files_api_refs() -> None:
    messages = {
        "object": "list",
        "data": [
            {
                "id": "msg_1",
                "object": "thread.message",
                "content": [
                    {"type": "image_file", "image_file": {"file_id": "assistant-IMG"}},
                    {
                        "type": "text",
                        "text": {
                            "value": "see sandbox:/mnt/data/out.csv",
                            "annotations": [
                                {
                                    "type": "file_path",
                                    "text": "sandbox:/mnt/data/out.csv",
                                    "start_index": 4,
                                    "end_index": 29,
                                    "file_path": {"file_id": "assistant-CSV"},
                                }
                            ],
                        },
                    },
                ],
            }
        ],
    }
    refs = find_files(messages)
    assert [(r.file_id, r.filename, r.source) for r in refs] == [
        ("assistant-IMG", "assistant-IMG", "assistants"),
        ("assistant-CSV", "out.csv", "assistants"),
    ]
    assert not any(r.is_container_file for r in refs)


def test_sandbox_links_are_rewritten_to_local_paths() -> None:
    text = (
        "[a](sandbox:/mnt/data/a.csv) and [b](sandbox:/mnt/data/b%20c.png) "
        "and [x](sandbox:/mnt/data/x)"
    )
    out = rewrite_sandbox_links(text, {"a.csv": "downloads/a.csv", "b c.png": "downloads/b c.png"})
    assert out == "[a](downloads/a.csv) and [b](<downloads/b c.png>) and [x](sandbox:/mnt/data/x)"
