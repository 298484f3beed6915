"""Validate emulator bodies and SSE events against the official OpenAPI description.

Fidelity comes from the upstream description, not memory (STYLE 8). The spec is 3 MB of YAML
(~1 s to parse), so the first load writes a compact JSON form (operations' response schemas and
``components.schemas``, annotations stripped) to a cache keyed by the file's size and mtime;
validators are built once per schema. The spec ships with the package
(``cigate/testing/openapi/``, see its ``SOURCE.md``), so validation works wherever cigate is
installed; ``CIGATE_OPENAPI_SPEC`` points it at another copy.

``OVERLAY`` lists the only places where we knowingly differ from the spec (Azure-only shapes and
nulls production sends); keep it small and explained.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

SPEC_ENV = "CIGATE_OPENAPI_SPEC"
_PREFIXES = ("/openai/v1", "/openai", "/v1")
_ANNOTATIONS = {
    "description",
    "example",
    "examples",
    "title",
    "deprecated",
    "x-oaiMeta",
    "x-oaiTypeLabel",
    "x-stainless-const",
    "x-oaiExpandable",
    "discriminator",
}

#: Where the emulator knowingly differs from the OpenAPI description, and why.
OVERLAY: tuple[str, ...] = (
    "Azure gateway errors {error:{code,message}} (no type/param) are not in the spec: skipped.",
    "List envelopes carry first_id/last_id null on an empty page (the spec types them string).",
    "OpenAIFile.expires_at and status_details are null when unset, as Azure and OpenAI send.",
    "OpenAIFile.purpose may be 'evals' (an Azure upload purpose the spec's enum lacks).",
    "*/content endpoints return raw bytes: never validated as JSON.",
    "Assistants objects: fields the spec marks OpenAPI-3.0 'nullable' accept null (see _NULLABLE).",
)
_NULLABLE = {
    "ContainerListResource": ("first_id", "last_id"),
    "ContainerFileListResource": ("first_id", "last_id"),
    "ListFilesResponse": ("first_id", "last_id"),
    "ResponseItemList": ("first_id", "last_id"),
    "OpenAIFile": ("expires_at", "status_details"),
    # Assistants (issue 5): 'nullable: true' is ignored by a 2020-12 validator; OpenAI sends null.
    "ListAssistantsResponse": ("first_id", "last_id"),
    "ListMessagesResponse": ("first_id", "last_id"),
    "ListRunsResponse": ("first_id", "last_id"),
    "ListRunStepsResponse": ("first_id", "last_id"),
    "RunObject": (
        "required_action",
        "last_error",
        "expires_at",
        "started_at",
        "cancelled_at",
        "failed_at",
        "completed_at",
        "incomplete_details",
        "temperature",
        "top_p",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "response_format",
    ),
}


class SchemaMismatchError(AssertionError):
    """A body or event does not match its schema; the message says where and why."""


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    #: status -> content type -> schema
    responses: dict[str, dict[str, Any]]


#: The description shipped with the package.
BUNDLED_SPEC = Path(__file__).resolve().parent / "openapi" / "openai-openapi.yaml"


def spec_path() -> Path:
    """The OpenAPI file: ``CIGATE_OPENAPI_SPEC`` when set, else the bundled copy.

    A path that does not exist is an error, never a silent "nothing validated".
    """
    path = Path(os.environ[SPEC_ENV]) if os.environ.get(SPEC_ENV) else BUNDLED_SPEC
    if not path.is_file():
        raise FileNotFoundError(
            f"no OpenAPI description at {path} ({SPEC_ENV} or the installed package is wrong)"
        )
    return path


def _strip(node: Any, *, names: bool = False) -> Any:
    """Drop annotations; ``names`` means the keys are property names, not keywords."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not names and key in _ANNOTATIONS:
                continue
            out[key] = _strip(value, names=not names and key in ("properties", "patternProperties"))
        return out
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def _compact(raw: dict[str, Any]) -> dict[str, Any]:
    operations = []
    for template, item in raw.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = {
                str(status): {
                    ctype: _strip(media.get("schema", {}))
                    for ctype, media in (resp.get("content") or {}).items()
                }
                for status, resp in op["responses"].items()
            }
            operations.append(
                {"method": method.upper(), "template": template, "responses": responses}
            )
    schemas = _strip(raw.get("components", {}).get("schemas", {}), names=True)
    return {"operations": operations, "schemas": schemas}


def _apply_overlay(schemas: dict[str, Any]) -> None:
    for name, props in _NULLABLE.items():
        for prop in props:
            target = schemas.get(name, {}).get("properties", {})
            if prop in target:
                target[prop] = {"anyOf": [target[prop], {"type": "null"}]}
    purpose = schemas.get("OpenAIFile", {}).get("properties", {}).get("purpose", {})
    if "enum" in purpose and "evals" not in purpose["enum"]:
        purpose["enum"] = [*purpose["enum"], "evals"]


def _load_compact(path: Path) -> dict[str, Any]:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:2".encode())
    cache = Path(tempfile.gettempdir()) / "cigate-openapi-cache" / f"{key.hexdigest()[:24]}.json"
    if cache.is_file():
        try:
            cached: dict[str, Any] = json.loads(cache.read_text())
            return cached
        except ValueError:
            pass
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as fh:
        raw = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    compact = _compact(raw)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(compact, default=str))
    tmp.replace(cache)
    return compact


class Spec:
    """The compact spec plus cached validators."""

    def __init__(self, compact: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = compact["schemas"]
        _apply_overlay(self.schemas)
        self.operations = [
            _Operation(
                op["method"], op["template"], _template_regex(op["template"]), op["responses"]
            )
            for op in compact["operations"]
        ]
        self._validators: dict[str, Draft202012Validator] = {}
        self._event_types = self._index_events()

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            root = {**schema, "components": {"schemas": self.schemas}}
            validator = Draft202012Validator(root)
            self._validators[key] = validator
        return validator

    def operation(self, method: str, path: str) -> _Operation | None:
        relative = strip_prefix(path)
        for op in self.operations:
            if op.method == method.upper() and op.pattern.fullmatch(relative):
                return op
        return None

    def _index_events(self) -> dict[str, str]:
        union = self.schemas.get("ResponseStreamEvent", {})
        out: dict[str, str] = {}
        for member in union.get("anyOf", union.get("oneOf", [])):
            name = member.get("$ref", "").rsplit("/", 1)[-1]
            type_schema = self.schemas.get(name, {}).get("properties", {}).get("type", {})
            for value in type_schema.get("enum", []) or [type_schema.get("const")]:
                if isinstance(value, str):
                    out[value] = name
        return out

    def event_schema(self, event_type: str) -> str | None:
        return self._event_types.get(event_type)


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)))


#: A Foundry project's OpenAI surfaces (v1, and the dated preview) carry the same operations.
_PROJECT_V1 = re.compile(r"^/api/projects/[^/]+/openai(?:/v1)?(?=/)")


def strip_prefix(path: str) -> str:
    project = _PROJECT_V1.match(path)
    if project:
        return path[project.end() :]
    for prefix in _PREFIXES:
        if path.startswith(prefix + "/"):
            return path[len(prefix) :]
    return path


@functools.cache
def load_spec() -> Spec:
    """The parsed spec, once per process."""
    return Spec(_load_compact(spec_path()))


def _raise_first(validator: Draft202012Validator, instance: Any, where: str) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        best = errors[0]
        location = "/".join(str(p) for p in best.absolute_path) or "(root)"
        raise SchemaMismatchError(f"{where}: at {location}: {best.message[:500]}")


def _is_azure_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and "type" not in error and "code" in error


def validate_body(method: str, path: str, status: int, body: Any) -> bool:
    """Check a JSON body against the operation's response schema for ``status``.

    Returns False when there is nothing to check (unknown operation, undocumented status,
    overlay); True when the body matched; raises ``SchemaMismatchError`` otherwise.
    """
    if path.endswith("/content") or _is_azure_error(body):
        return False
    spec = load_spec()
    op = spec.operation(method, path)
    if op is None:
        return False
    media = op.responses.get(str(status)) or {}
    schema = media.get("application/json")
    if schema is None:
        return False
    where = f"{method.upper()} {op.template} -> {status}"
    _raise_first(spec.validator(schema), body, where)
    return True


def validate_assistant_event(event: str, data: Any) -> bool:
    """Check one Assistants SSE event (``event:`` name + ``data`` object) against
    ``AssistantStreamEvent``; the final ``done`` / ``[DONE]`` frame included."""
    spec = load_spec()
    if "AssistantStreamEvent" not in spec.schemas:
        return False
    ref = {"$ref": "#/components/schemas/AssistantStreamEvent"}
    validator = spec.validator(ref)
    instance = {"event": event, "data": data}
    if not validator.is_valid(instance):  # oneOf errors are unreadable: name the event
        member = {
            "thread.run.step.delta": "RunStepDeltaObject",
            "thread.message.delta": "MessageDeltaObject",
        }.get(event)
        if member is None:
            prefix = event.rsplit(".", 1)[0]
            member = {
                "thread.run": "RunObject",
                "thread.run.step": "RunStepObject",
                "thread.message": "MessageObject",
            }.get(prefix, "AssistantStreamEvent")
        where = f"SSE event {event} ({member})"
        if member == "AssistantStreamEvent":
            _raise_first(validator, instance, where)
        _raise_first(spec.validator({"$ref": f"#/components/schemas/{member}"}), data, where)
        raise SchemaMismatchError(f"{where}: matches no AssistantStreamEvent member")
    return True


def validate_event(event: dict[str, Any]) -> bool:
    """Check one Responses SSE event against its ``ResponseStreamEvent`` member (by ``type``)."""
    spec = load_spec()
    event_type = event.get("type")
    name = spec.event_schema(event_type) if isinstance(event_type, str) else None
    if name is None:
        raise SchemaMismatchError(f"SSE event: unknown Responses event type {event_type!r}")
    ref = {"$ref": f"#/components/schemas/{name}"}
    _raise_first(spec.validator(ref), event, f"SSE event {event_type} ({name})")
    return True
