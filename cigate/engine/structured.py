"""Structured outputs for the scripted model: ``text.format`` ``json_schema`` and ``json_object``.

A real model writes JSON that fits the requested schema; the scripted model has no language, so
it either replies with the JSON the user scripted (the first fenced ``json`` block of the latest
user message, verbatim) or builds a deterministic instance of the schema:

- the first string it reaches gets the prose reply (what the cells did, or the echo), a string
  property whose name mentions a file, path, link, url or attachment gets the first file's
  ``sandbox:/mnt/data/…`` link (so the engine cites it, as for a prose reply), other strings
  their property name;
- numbers and integers their ``minimum`` (else 0), booleans ``false``, arrays ``minItems`` items
  (an array of file links gets one link per file), objects every property;
- ``enum``/``const`` their first value, ``anyOf``/``oneOf`` their first non-null branch, local
  ``$ref``s (``#/$defs/…``) resolved, as the SDK's ``responses.parse`` writes them.

``json_object`` gets ``{"text": <prose>, "files": [<links>]}``. Schemas are not checked for the
strict-mode rules the service enforces (documented in docs/emulator-responses.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["json_reply", "scripted_json"]

_JSON_BLOCK = re.compile(r"^[ \t]*```[ \t]*json[ \t]*\n(?P<body>.*?)^[ \t]*```[ \t]*$", re.M | re.S)
_FILE_WORDS = ("file", "path", "link", "url", "attachment")
_MAX_DEPTH = 12


def scripted_json(user_text: str) -> str | None:
    """The first fenced ``json`` block of the user's message, if it holds valid JSON."""
    match = _JSON_BLOCK.search(user_text.replace("\r\n", "\n") + "\n")
    if match is None:
        return None
    body = match.group("body").strip()
    try:
        json.loads(body)
    except ValueError:
        return None
    return body


def json_reply(text_format: dict[str, Any], prose: str, links: Sequence[str]) -> str:
    """The reply for a ``json_schema`` or ``json_object`` format (see the module docstring)."""
    if text_format.get("type") == "json_object":
        return json.dumps({"text": prose, "files": list(links)}, ensure_ascii=False)
    schema = text_format.get("schema")
    builder = _Builder(schema if isinstance(schema, dict) else {}, prose, list(links))
    return json.dumps(builder.build(builder.root, name="", depth=0), ensure_ascii=False)


class _Builder:
    def __init__(self, root: dict[str, Any], prose: str, links: list[str]) -> None:
        self.root = root
        self.prose: str | None = prose
        self.links = links

    def build(self, schema: Any, *, name: str, depth: int) -> Any:
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return None
        if "$ref" in schema:
            return self.build(self._resolve(schema["$ref"]), name=name, depth=depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf", "allOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                chosen = next((b for b in branches if _kind(b) != "null"), branches[0])
                return self.build(chosen, name=name, depth=depth + 1)
        kind = _kind(schema)
        if kind == "object":
            properties = schema.get("properties") or {}
            return {
                key: self.build(sub, name=key, depth=depth + 1) for key, sub in properties.items()
            }
        if kind == "array":
            return self._array(schema, name=name, depth=depth)
        if kind == "string":
            return self._string(name)
        if kind in ("integer", "number"):
            return _lowest(schema, integer=kind == "integer")
        if kind == "boolean":
            return False
        return None

    def _array(self, schema: dict[str, Any], *, name: str, depth: int) -> list[Any]:
        items = schema.get("items") or {}
        if _kind(items) == "string" and _names_a_file(name) and self.links:
            return list(self.links)
        count = int(schema.get("minItems") or 0)
        return [self.build(items, name=name, depth=depth + 1) for _ in range(count)]

    def _string(self, name: str) -> str:
        if _names_a_file(name) and self.links:
            return self.links[0]
        if self.prose is not None:
            prose, self.prose = self.prose, None
            return prose
        return name

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return None
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        return node


def _lowest(schema: dict[str, Any], *, integer: bool) -> int | float:
    """``minimum``, just above ``exclusiveMinimum``, else 0."""
    low = schema.get("minimum")
    if isinstance(low, (int, float)):
        return int(low) if integer else float(low)
    above = schema.get("exclusiveMinimum")
    if isinstance(above, (int, float)):
        return int(above) + 1 if integer else float(above) + 1
    return 0 if integer else 0.0


def _kind(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the non-null one
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else None


def _names_a_file(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _FILE_WORDS)
