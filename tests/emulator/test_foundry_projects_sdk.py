"""azure-ai-projects 2.10.0's prompt-agent flow, unchanged, over TLS against the emulator: agent
versions, Conversations, ``responses.create(agent_reference=…)`` and the container file
download after the agent is gone (foundry-wire 3.3; the docs' code-interpreter sample)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from azure.ai.projects import AIProjectClient
from azure.ai.projects.models import (
    AutoCodeInterpreterToolParam,
    CodeInterpreterTool,
    PromptAgentDefinition,
)
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import DefaultAzureCredential

from cigate.testing.plugin import RunningEmulator
from tests.emulator.foundry_env import CSV, PROMPT, trust_and_identity

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def project(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AIProjectClient]:
    trust_and_identity(emulator, monkeypatch)
    with (
        DefaultAzureCredential() as credential,
        AIProjectClient(endpoint=emulator.project_url("42"), credential=credential) as client,
    ):
        yield client


def test_the_prompt_agent_flow_runs_unchanged_over_tls(
    project: AIProjectClient, tmp_path: Path
) -> None:
    (tmp_path / "nifty.csv").write_bytes(CSV)
    with project.get_openai_client() as openai_client:
        with (tmp_path / "nifty.csv").open("rb") as upload:
            file = openai_client.files.create(purpose="assistants", file=upload)
        agent = project.agents.create_version(
            agent_name="MyAgent",
            definition=PromptAgentDefinition(
                model="gpt-4.1",
                instructions="You are a helpful assistant.",
                tools=[
                    CodeInterpreterTool(container=AutoCodeInterpreterToolParam(file_ids=[file.id]))
                ],
            ),
            description="Code interpreter agent",
        )
        assert (agent.name, agent.version, agent.id) == ("MyAgent", "1", "MyAgent:1")
        assert project.agents.get_version(agent_name="MyAgent", agent_version="1").version == "1"
        assert [v.version for v in project.agents.list_versions(agent_name="MyAgent")] == ["1"]
        assert project.agents.get(agent_name="MyAgent").versions.latest.version == "1"
        assert [a.name for a in project.agents.list()] == ["MyAgent"]

        conversation = openai_client.conversations.create()
        openai_client.conversations.items.create(
            conversation_id=conversation.id,
            items=[{"type": "message", "role": "user", "content": "hi"}],
        )
        assert (
            len(list(openai_client.conversations.items.list(conversation_id=conversation.id))) == 1
        )
        assert openai_client.conversations.retrieve(conversation.id).id == conversation.id

        response = openai_client.responses.create(
            conversation=conversation.id,
            input=PROMPT,
            extra_body={"agent_reference": {"name": agent.name, "type": "agent_reference"}},
        )
        assert response.model == "gpt-4.1"  # from the agent version
        assert response.conversation is not None
        assert response.conversation.id == conversation.id
        assert response.model_extra is not None
        assert response.model_extra["agent_reference"]["version"] == "1"
        message = response.output[-1]
        assert message.type == "message"
        annotation = message.content[-1].annotations[-1]
        assert annotation.type == "container_file_citation"

        # The sample deletes the agent before it downloads: the file does not depend on it.
        project.agents.delete_version(agent_name=agent.name, agent_version=agent.version)
        with pytest.raises(ResourceNotFoundError):
            project.agents.get(agent_name=agent.name)
        data = openai_client.containers.files.content.retrieve(
            file_id=annotation.file_id, container_id=annotation.container_id
        ).read()
        assert data.startswith(PNG)

        # The agent's input file was in the sandbox (the run printed the sum), and the saved
        # and the displayed figure are both container files, both cited.
        cited = {a.filename for a in message.content[-1].annotations}
        assert "transport.png" in cited
        assert any(name.startswith("cfile_") and name.endswith(".png") for name in cited)
        assert "42" in message.content[-1].text

        # The conversation kept everything: the first item, the input, and the output.
        items = list(
            openai_client.conversations.items.list(conversation_id=conversation.id, order="asc")
        )
        assert [i.type for i in items][:2] == ["message", "message"]
        assert items[-1].id == message.id
        assert any(i.type == "code_interpreter_call" for i in items)


def test_an_unknown_agent_is_a_404_and_no_response_runs(
    emulator: RunningEmulator, project: AIProjectClient
) -> None:
    with (
        project.get_openai_client() as openai_client,
        pytest.raises(openai.NotFoundError, match="Agent 'Nobody' not found"),
    ):
        openai_client.responses.create(
            input="hi",
            extra_body={"agent_reference": {"name": "Nobody", "type": "agent_reference"}},
        )
    assert emulator.backends.responses._responses == {}
