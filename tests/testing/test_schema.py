"""Schema checks against the official OpenAPI description (cigate.testing.schema)."""

from __future__ import annotations

from typing import Any

import pytest

from cigate.testing import schema

CONTAINER: dict[str, Any] = {
    "id": "cntr_1",
    "object": "container",
    "created_at": 1,
    "status": "running",
    "expires_after": {"anchor": "last_active_at", "minutes": 20},
    "last_active_at": 1,
    "memory_limit": "1g",
    "name": "c",
}


@pytest.mark.parametrize(
    "path",
    ["/openai/v1/containers/cntr_1", "/v1/containers/cntr_1", "/containers/cntr_1"],
    ids=["azure-v1", "openai-style", "bare"],
)
def test_a_valid_body_passes_under_every_prefix(path: str) -> None:
    assert schema.validate_body("GET", path, 200, CONTAINER) is True


def test_a_body_missing_a_required_field_fails_and_says_where() -> None:
    body = {k: v for k, v in CONTAINER.items() if k != "name"}
    with pytest.raises(schema.SchemaMismatchError, match="'name' is a required property"):
        schema.validate_body("GET", "/openai/v1/containers/cntr_1", 200, body)


def test_a_wrong_type_deep_in_a_list_fails() -> None:
    body = {
        "object": "list",
        "data": [{**CONTAINER, "created_at": "yesterday"}],
        "first_id": "cntr_1",
        "last_id": "cntr_1",
        "has_more": False,
    }
    with pytest.raises(schema.SchemaMismatchError, match="data/0/created_at"):
        schema.validate_body("GET", "/openai/v1/containers", 200, body)


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        pytest.param("GET", "/openai/v1/nothing", 200, {}, id="unknown-operation"),
        pytest.param(
            "GET", "/openai/v1/containers/c", 404, {"error": {}}, id="undocumented-status"
        ),
        pytest.param("GET", "/openai/v1/files/f/content", 200, {"a": 1}, id="content-endpoint"),
        pytest.param(
            "DELETE",
            "/openai/v1/responses/r",
            404,
            {"error": {"code": "404", "message": "Resource not found"}},
            id="azure-gateway-error",
        ),
    ],
)
def test_nothing_is_checked_where_the_spec_has_nothing_to_say(
    method: str, path: str, status: int, body: dict[str, Any]
) -> None:
    assert schema.validate_body(method, path, status, body) is False


def test_the_overlay_allows_null_cursors_on_an_empty_page() -> None:
    body: dict[str, Any] = {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert schema.validate_body("GET", "/openai/v1/containers", 200, body)


def test_a_valid_stream_event_passes_and_is_matched_by_type() -> None:
    event = {
        "type": "response.output_text.delta",
        "sequence_number": 3,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
        "logprobs": [],
    }
    assert schema.validate_event(event) is True


def test_a_stream_event_missing_logprobs_fails() -> None:
    event = {
        "type": "response.output_text.delta",
        "sequence_number": 3,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
    }
    with pytest.raises(schema.SchemaMismatchError, match="logprobs"):
        schema.validate_event(event)


def test_an_unknown_stream_event_type_fails() -> None:
    with pytest.raises(schema.SchemaMismatchError, match="unknown Responses event type"):
        schema.validate_event({"type": "response.made_up", "sequence_number": 0})


def test_the_spec_is_loaded_once_per_process() -> None:
    assert schema.load_spec() is schema.load_spec()


def test_the_spec_ships_with_the_package_with_its_licence_and_source() -> None:
    assert schema.spec_path() == schema.BUNDLED_SPEC
    folder = schema.BUNDLED_SPEC.parent
    assert "MIT License" in (folder / "openai-openapi.LICENSE").read_text()
    source = (folder / "SOURCE.md").read_text()
    assert "openai/openai-openapi" in source
    assert "f85dbe223d40e1a31cba812ab2d755c7e98a92a3" in source


def test_the_spec_location_can_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    copy = tmp_path / "spec.yaml"
    copy.write_bytes(schema.BUNDLED_SPEC.read_bytes())
    monkeypatch.setenv(schema.SPEC_ENV, str(copy))
    assert schema.spec_path() == copy


def test_a_spec_location_that_does_not_exist_is_an_error_not_a_silent_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv(schema.SPEC_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        schema.spec_path()
