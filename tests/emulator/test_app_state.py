"""The emulator's shared state: typed, built by the lifespan, and a model of the user's own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cigate.emulator.app import create_app
from cigate.emulator.settings import EmulatorSettings
from cigate.emulator.state import emulator_state
from cigate.engine.model import Conversation, Reply, Step, ToolResult


class Echo:
    """A model of the user's own: one fixed answer, and a count of its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def next_step(self, conversation: Conversation, results: Sequence[ToolResult]) -> Step:
        self.calls += 1
        return Reply("my own model says hello")


def _settings(tmp_path: Path) -> EmulatorSettings:
    return EmulatorSettings(api_keys=("k",), data_dir=tmp_path, pool_size=0, isolation="none")


def test_a_model_given_to_create_app_answers_both_apis(tmp_path: Path) -> None:
    model = Echo()
    with TestClient(create_app(_settings(tmp_path), model=model), headers={"api-key": "k"}) as c:
        response = c.post("/openai/v1/responses", json={"model": "gpt-4.1", "input": "hi"})
        assert response.status_code == 200, response.text
        assert response.json()["output"][-1]["content"][0]["text"] == "my own model says hello"
        state = emulator_state(c.app)
        assert state.backends().assistants.model is model
        assert state.backends().responses.model is model
    assert model.calls == 1


def test_the_backends_exist_only_while_the_app_runs(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    state = emulator_state(app)
    with pytest.raises(RuntimeError, match="has not started"):
        state.backends()
    with TestClient(app) as client:
        assert client.get("/_emulator/health").json() == {"status": "ok"}
        assert state.backends().containers is not None
    with pytest.raises(RuntimeError, match="has not started"):
        state.backends()


def test_a_request_before_start_up_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    with pytest.raises(RuntimeError, match="has not started"):
        TestClient(app).get("/openai/v1/containers", headers={"api-key": "k"})
