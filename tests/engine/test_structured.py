"""The scripted model's JSON for a schema: valid instances, deterministic, files linked."""

from __future__ import annotations

import json

import jsonschema

from cigate.engine.structured import json_reply, scripted_json

LINKS = ["sandbox:/mnt/data/a.png", "sandbox:/mnt/data/b.csv"]


def reply(schema: dict, links: list[str] = LINKS) -> object:
    text = json_reply({"type": "json_schema", "name": "r", "schema": schema}, "prose", links)
    return json.loads(text)


def test_every_keyword_the_builder_reads_gives_a_valid_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "version": {"const": 3},
            "count": {"type": "integer", "minimum": 2},
            "ratio": {"type": "number", "exclusiveMinimum": 0.5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "owner": {"$ref": "#/$defs/Person"},
            "maybe": {"type": ["string", "null"]},
            "either": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "chart_path": {"type": "string"},
            "attachments": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title"],
        "$defs": {
            "Person": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "kind": {"enum": ["a", "b"]}},
            }
        },
    }
    instance = reply(schema)
    jsonschema.validate(instance, schema)
    assert instance == {
        "title": "prose",
        "version": 3,
        "count": 2,
        "ratio": 1.5,
        "tags": ["tags", "tags"],
        "owner": {"name": "name", "kind": "a"},
        "maybe": "maybe",
        "either": False,
        "chart_path": LINKS[0],
        "attachments": LINKS,
    }
    assert reply(schema) == instance  # deterministic


def test_a_recursive_schema_ends() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/Node"}, "label": {"type": "string"}},
            }
        },
    }
    depth, node = 0, reply(schema)
    while isinstance(node, dict) and node.get("child") is not None:
        node, depth = node["child"], depth + 1
    assert 3 < depth < 20


def test_json_object_mode_and_scripted_blocks() -> None:
    answer = json_reply({"type": "json_object"}, "hello", LINKS[:1])
    assert json.loads(answer) == {"text": "hello", "files": LINKS[:1]}
    assert scripted_json('Say:\n```json\n{"a": [1, 2]}\n```\n') == '{"a": [1, 2]}'
    assert scripted_json("```json\n{not json}\n```") is None
    assert scripted_json("no block here") is None
