"""Structured outputs (``text.format``) through the SDK's ``responses.parse``, offline.

The scripted model answers with the JSON the user scripted (a fenced ``json`` block), or builds
an instance of the schema in which strings about files carry ``sandbox:`` links, which the
engine cites as it cites links in prose.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from cigate.engine.conformance import stream_problems
from cigate.testing.plugin import RunningEmulator

MODEL = "gpt-4.1"
AUTO: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]
WRITE = "open('/mnt/data/summary.csv', 'w').write('a,b\\n1,2\\n')\nprint(42)"


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: float


class Report(BaseModel):
    summary: str
    colour: Colour
    points: list[Point]
    file_links: list[str]
    note: str | None
    ok: bool


def test_parse_returns_an_instance_of_the_model_with_the_files_cited(
    emulator: RunningEmulator,
) -> None:
    response = emulator.openai().responses.parse(
        model=MODEL,
        input=f"Run it and report.\n```python\n{WRITE}\n```\n",
        tools=AUTO,
        text_format=Report,
    )
    parsed = response.output_parsed
    assert isinstance(parsed, Report)
    assert parsed.summary.startswith("I ran 1 code cell.")
    assert "42" in parsed.summary
    assert parsed.colour is Colour.RED
    assert parsed.file_links == ["sandbox:/mnt/data/summary.csv"]
    assert parsed.ok is False
    message = response.output[-1]
    assert message.type == "message"
    (part,) = message.content
    assert part.type == "output_text"
    (citation,) = part.annotations
    assert citation.type == "container_file_citation"
    assert citation.filename == "summary.csv"
    assert part.text[citation.start_index : citation.end_index] == ("sandbox:/mnt/data/summary.csv")
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_a_scripted_json_block_is_the_answer_verbatim(emulator: RunningEmulator) -> None:
    scripted = {
        "summary": "two points",
        "colour": "blue",
        "points": [{"x": 1, "y": 2.5}, {"x": 3, "y": 4.0}],
        "file_links": [],
        "note": None,
        "ok": True,
    }
    response = emulator.openai().responses.parse(
        model=MODEL,
        input=f"Answer with this.\n```json\n{json.dumps(scripted)}\n```\n",
        text_format=Report,
    )
    assert response.output_parsed == Report.model_validate(scripted)


def test_json_object_mode_answers_an_object_with_text_and_files(
    emulator: RunningEmulator,
) -> None:
    client = emulator.openai()
    with client.responses.create(
        model=MODEL,
        input=f"Reply in JSON.\n```python\n{WRITE}\n```\n",
        tools=AUTO,  # type: ignore[arg-type]
        text={"format": {"type": "json_object"}},
        stream=True,
    ) as stream:
        events = [event.to_dict() for event in stream]
    assert stream_problems(events) == []
    answer = json.loads(events[-1]["response"]["output"][-1]["content"][0]["text"])
    assert answer["files"] == ["sandbox:/mnt/data/summary.csv"]
    assert answer["text"].startswith("I ran 1 code cell.")


MISSING = "missing_required_parameter"
INVALID_FORMATS = [
    ({"format": {"type": "json_schema", "schema": {}}}, "text.format.name", MISSING),
    ({"format": {"type": "json_schema", "name": "r"}}, "text.format.schema", MISSING),
    ({"format": {"type": "yaml"}}, "text.format.type", "invalid_value"),
    ({"format": "json"}, "text.format", "invalid_type"),
]


@pytest.mark.parametrize(
    ("text", "param", "code"),
    INVALID_FORMATS,
    ids=["no-name", "no-schema", "unknown-type", "format-not-an-object"],
)
def test_an_invalid_text_format_is_refused_like_the_service(
    emulator: RunningEmulator, text: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        emulator.openai().responses.create(model=MODEL, input="hi", text=text)  # type: ignore[arg-type]
    assert caught.value.param == param
    assert caught.value.code == code
