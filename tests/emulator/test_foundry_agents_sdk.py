"""Seed 004's flow with ``azure.ai.agents.AgentsClient`` 1.1.0, unchanged, over TLS against a
Foundry project endpoint of the emulator (foundry-wire 2): the only differences from a real
project are the endpoint, the trusted CA in the environment and where the managed identity
lives."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import (
    CodeInterpreterTool,
    FilePurpose,
    ListSortOrder,
    MessageRole,
)
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential

from cigate.testing.plugin import RunningEmulator
from tests.emulator.foundry_env import CSV, PROMPT, trust_and_identity

PNG = b"\x89PNG\r\n\x1a\n"


HUB = (
    "/agents/v1.0/subscriptions/sub/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/42"
)


@pytest.fixture(params=["project", "hub"], ids=["project-endpoint", "hub-form-ml-scope"])
def agents(
    request: pytest.FixtureRequest, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AgentsClient]:
    """The documented project endpoint, and the hub form azure-ai-projects 1.0.0b* built from
    the seed's connection string (tokens for https://ml.azure.com)."""
    trust_and_identity(emulator, monkeypatch)
    with DefaultAzureCredential() as credential:
        if request.param == "project":
            yield AgentsClient(endpoint=emulator.project_url("42"), credential=credential)
        else:
            yield AgentsClient(
                endpoint=emulator.https_url + HUB,
                credential=credential,
                credential_scopes=["https://ml.azure.com/.default"],
            )


def test_seed_004_runs_unchanged_with_agents_client_over_tls(
    agents: AgentsClient, tmp_path: Path
) -> None:
    (tmp_path / "nifty.csv").write_bytes(CSV)
    with agents:
        file = agents.files.upload_and_poll(
            file_path=str(tmp_path / "nifty.csv"), purpose=FilePurpose.AGENTS
        )
        assert file.status == "processed"
        code_interpreter = CodeInterpreterTool(file_ids=[file.id])
        agent = agents.create_agent(
            model="gpt-4o-mini",
            name="my-agent",
            instructions="You are helpful agent",
            tools=code_interpreter.definitions,
            tool_resources=code_interpreter.resources,
        )
        assert agent.id.startswith("asst_")
        thread = agents.threads.create()
        assert [t.id for t in agents.threads.list()] == [thread.id]  # Foundry only; paged
        agents.messages.create(thread_id=thread.id, role="user", content=PROMPT)
        run = agents.runs.create_and_process(
            thread_id=thread.id, agent_id=agent.id, polling_interval=0.05
        )
        assert run.status == "completed", run.last_error
        agents.files.delete(file.id)
        messages = list(agents.messages.list(thread_id=thread.id, order=ListSortOrder.ASCENDING))
        assert [m.role for m in messages] == ["user", "assistant"]
        saved = []
        for message in messages:
            for image in message.image_contents:
                name = f"{image.image_file.file_id}_image_file.png"
                agents.files.save(
                    file_id=image.image_file.file_id, file_name=name, target_dir=str(tmp_path)
                )
                saved.append(tmp_path / name)
            for annotation in message.file_path_annotations:
                data = b"".join(agents.files.get_content(annotation.file_path.file_id))
                assert data.startswith(PNG)
        # The saved figure and the displayed one: two images, each a real PNG.
        assert len(saved) == 2
        assert all(path.read_bytes().startswith(PNG) for path in saved)
        steps = list(agents.run_steps.list(thread_id=thread.id, run_id=run.id))
        calls = [s for s in steps if s.type == "tool_calls"]
        assert calls
        last = agents.messages.get_last_message_text_by_role(
            thread_id=thread.id, role=MessageRole.AGENT
        )
        assert last is not None
        assert "42" in last.text.value
        agents.delete_agent(agent.id)
        with pytest.raises(ResourceNotFoundError):
            agents.get_agent(agent.id)


def test_a_token_for_the_resource_audience_is_refused_on_a_project_as_foundry_does(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_and_identity(emulator, monkeypatch)
    with DefaultAzureCredential() as credential:
        client = AgentsClient(
            endpoint=emulator.project_url("42"),
            credential=credential,
            credential_scopes=["https://cognitiveservices.azure.com/.default"],
        )
        refused = r"audience is incorrect \(https://ai\.azure\.com\)"
        with client, pytest.raises(ClientAuthenticationError, match=refused):
            client.threads.create()


ASYNC_FLOW = """
import asyncio, sys
from azure.ai.agents.aio import AgentsClient
from azure.identity.aio import DefaultAzureCredential

async def main():
    async with DefaultAzureCredential() as credential, AgentsClient(
        endpoint=sys.argv[1], credential=credential
    ) as client:
        thread = await client.threads.create()
        listed = [t.id async for t in client.threads.list()]
        print(listed == [thread.id])

asyncio.run(main())
"""


def test_the_async_agents_client_trusts_the_emulator_through_ssl_cert_file(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """azure-core's aiohttp transport reads SSL_CERT_FILE (when its process starts), not
    REQUESTS_CA_BUNDLE: the second variable ``--tls`` prints."""
    trust_and_identity(emulator, monkeypatch)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    ran = subprocess.run(
        [sys.executable, "-c", ASYNC_FLOW, emulator.project_url("42")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ran.returncode, ran.stdout.strip()) == (0, "True"), ran.stderr[-2000:]
    monkeypatch.delenv("SSL_CERT_FILE")
    untrusted = subprocess.run(
        [sys.executable, "-c", ASYNC_FLOW, emulator.project_url("42")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert untrusted.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
