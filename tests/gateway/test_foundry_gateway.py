"""Seed 004 with the Azure SDKs, unchanged, through the gateway over TLS (issue 12).

The gateway serves HTTPS (the same throwaway CA as the emulator, trusted the way users trust
it: ``REQUESTS_CA_BUNDLE`` and ``SSL_CERT_FILE``) in front of the emulator's Foundry project
endpoint. Callers hold a gateway key, not an Entra identity: azure-ai-agents and
azure-ai-projects accept only a ``TokenCredential`` and send ``Authorization: Bearer …``,
which the gateway's tenant auth reads as a key, so the key travels as the "token"
(:class:`GatewayKeyCredential`, the snippet in docs/foundry.md). Every generated file is then
served by the gateway after the emulator's container expired.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import CodeInterpreterTool, FilePurpose, ListSortOrder
from azure.ai.projects import AIProjectClient
from azure.ai.projects.models import (
    AutoCodeInterpreterToolParam,
    PromptAgentDefinition,
)
from azure.ai.projects.models import CodeInterpreterTool as ProjectCodeInterpreterTool
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from click.testing import CliRunner

from cigate.cli import main
from cigate.emulator.server import run_in_thread
from cigate.gateway.app import SERVER_LOOP, create_app
from cigate.testing.plugin import RunningEmulator
from tests.emulator.foundry_env import CSV, PROMPT
from tests.gateway.conftest import live_settings, local_backend
from tests.gateway.live import LiveGateway, add_tenant, code_input

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

PNG = b"\x89PNG\r\n\x1a\n"
PROJECT = "proj"


class GatewayKeyCredential:
    """A gateway key as the bearer "token" the azure-core SDKs send (they take no key)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.key, int(time.time()) + 365 * 24 * 3600)


@pytest.fixture
def gateway(
    emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveGateway]:
    """The gateway over HTTPS, its upstream the emulator's project endpoint over HTTPS."""
    for name, value in emulator.tls.env().items():
        monkeypatch.setenv(name, value)
    backend = local_backend(tmp_path)
    settings = replace(
        live_settings(emulator, backend), upstream=emulator.project_url(PROJECT, tls=True)
    )
    handle = run_in_thread(
        create_app(settings),
        "127.0.0.1",
        0,
        ssl_certfile=emulator.tls.certfile,
        ssl_keyfile=emulator.tls.keyfile,
        loop=SERVER_LOOP,
    )
    gw = LiveGateway(settings, handle, add_tenant(settings.database_url, "acme"))
    try:
        yield gw
    finally:
        gw.close()


def _project(gw: LiveGateway) -> str:
    return f"{gw.handle.https_url}/api/projects/{PROJECT}"


def test_seed_004_runs_unchanged_through_the_gateway_and_its_files_outlive_the_container(
    gateway: LiveGateway, emulator: RunningEmulator, tmp_path: Path
) -> None:
    (tmp_path / "nifty.csv").write_bytes(CSV)
    credential = GatewayKeyCredential(gateway.tenant.key)
    with AgentsClient(endpoint=_project(gateway), credential=credential) as agents:
        file = agents.files.upload_and_poll(
            file_path=str(tmp_path / "nifty.csv"), purpose=FilePurpose.AGENTS
        )
        code_interpreter = CodeInterpreterTool(file_ids=[file.id])
        agent = agents.create_agent(
            model="gpt-4o-mini",
            name="my-agent",
            instructions="You are helpful agent",
            tools=code_interpreter.definitions,
            tool_resources=code_interpreter.resources,
        )
        thread = agents.threads.create()
        agents.messages.create(thread_id=thread.id, role="user", content=PROMPT)
        run = agents.runs.create_and_process(
            thread_id=thread.id, agent_id=agent.id, polling_interval=0.05
        )
        assert run.status == "completed", run.last_error
        agents.files.delete(file.id)
        messages = list(agents.messages.list(thread_id=thread.id, order=ListSortOrder.ASCENDING))
        images = [i.image_file.file_id for m in messages for i in m.image_contents]
        # The figure the code saved and the one it only displayed.
        assert len(images) == 2
        for file_id in images:
            agents.files.save(file_id=file_id, file_name=f"{file_id}.png", target_dir=str(tmp_path))
        first = {f: (tmp_path / f"{f}.png").read_bytes() for f in images}
        assert all(data.startswith(PNG) for data in first.values())

        # The gateway kept every one: its records for the run, in the caller's tenant.
        kept = _harvested(gateway, images)
        emulator.control.advance_clock(24 * 3600)  # every container (and session) expired
        for file_id in images:
            agents.files.save(
                file_id=file_id, file_name=f"again-{file_id}", target_dir=str(tmp_path)
            )
            assert (tmp_path / f"again-{file_id}").read_bytes() == first[file_id]
        http = gateway.http()
        for row in kept:
            assert http.get(f"/files/{row['id']}/content").content == first[row["upstream_file_id"]]

        # Another tenant's key reaches none of it through the project routes.
        other = GatewayKeyCredential(gateway.add_tenant("other").key)
        with AgentsClient(endpoint=_project(gateway), credential=other) as theirs:
            for call in (
                lambda: theirs.get_agent(agent.id),
                lambda: theirs.threads.get(thread.id),
                lambda: theirs.runs.get(thread_id=thread.id, run_id=run.id),
                lambda: b"".join(theirs.files.get_content(images[0])),
            ):
                with pytest.raises(ResourceNotFoundError):
                    call()


def _harvested(gw: LiveGateway, file_ids: list[str]) -> list[dict[str, Any]]:
    """The gateway's stored copies of ``file_ids`` (waits for the copies to finish)."""
    http = gw.http()
    deadline = time.monotonic() + 60
    while True:
        rows = [http.get(f"/files/{f}").json() for f in file_ids]
        if all(r.get("state") == "stored" for r in rows) or time.monotonic() > deadline:
            assert [r.get("state") for r in rows] == ["stored"] * len(rows), rows
            return rows
        time.sleep(0.1)


def test_the_projects_openai_surface_keeps_container_files_after_expiry(
    gateway: LiveGateway, emulator: RunningEmulator
) -> None:
    """``AIProjectClient.get_openai_client()`` (azure-ai-projects 2.x) through the gateway:
    a code-interpreter response's container file, served after its container expired."""
    credential = GatewayKeyCredential(gateway.tenant.key)
    with (
        AIProjectClient(endpoint=_project(gateway), credential=credential) as project,
        project.get_openai_client() as client,
    ):
        cell = "open('/mnt/data/kept.txt', 'w').write('kept by the gateway')"
        response = client.responses.create(
            model="gpt-4.1",
            input=code_input(cell),
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        )
        assert response.status == "completed"
        rows = gateway.harvested(response.id, at_least=1)
        kept = next(r for r in rows if r["filename"].endswith("kept.txt"))
        emulator.control.advance_clock(24 * 3600)
        with pytest.raises(openai.APIStatusError):
            emulator.openai().containers.files.content.retrieve(
                kept["upstream_file_id"], container_id=kept["container_id"]
            )
        data = client.containers.files.content.retrieve(
            kept["upstream_file_id"], container_id=kept["container_id"]
        ).read()
        assert data == b"kept by the gateway"


def test_a_caller_without_a_gateway_key_is_refused_on_the_project_routes(
    gateway: LiveGateway,
) -> None:
    with (
        AgentsClient(
            endpoint=_project(gateway), credential=GatewayKeyCredential("not-a-key")
        ) as agents,
        pytest.raises(ClientAuthenticationError),
    ):
        agents.threads.create()


def test_cigate_run_through_the_gateways_project_endpoint_keeps_every_file_twice(
    gateway: LiveGateway, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """``cigate run --endpoint https://GATEWAY/api/projects/P`` over TLS with a gateway key:
    the caller saves every file, and the gateway keeps its own copy of each."""
    cell = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n"
        "plt.savefig('/mnt/data/chart.png')\n"
        "open('/mnt/data/table.csv', 'w').write('x,y\\n1,1\\n')"
    )
    env = {"CIGATE_ENDPOINT": _project(gateway), "CIGATE_API_KEY": gateway.tenant.key}
    args = ["run", code_input(cell), "--model", "gpt-4.1", "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    saved = {f["filename"]: Path(f["path"]).read_bytes() for f in data["files"]}
    # The two the code wrote, and the figure it left open, auto-saved as the service does.
    assert {"chart.png", "table.csv"} < set(saved), sorted(saved)
    rows = gateway.harvested(data["response_id"], at_least=len(saved))
    assert sorted(r["filename"] for r in rows) == sorted(saved)
    emulator.control.advance_clock(24 * 3600)
    http = gateway.http()
    for row in rows:
        assert http.get(f"/files/{row['id']}/content").content == saved[row["filename"]]


def test_the_prompt_agent_flow_runs_through_the_gateway_and_its_files_outlive_the_container(
    gateway: LiveGateway, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """azure-ai-projects 2.x unchanged (agent version, conversation, ``agent_reference``,
    container file download after the agent is deleted), then after the container expired;
    another tenant can neither run, see, nor take over the agent's name."""
    (tmp_path / "nifty.csv").write_bytes(CSV)
    credential = GatewayKeyCredential(gateway.tenant.key)
    with (
        AIProjectClient(endpoint=_project(gateway), credential=credential) as project,
        project.get_openai_client() as client,
    ):
        with (tmp_path / "nifty.csv").open("rb") as upload:
            file = client.files.create(purpose="assistants", file=upload)
        tool = ProjectCodeInterpreterTool(
            container=AutoCodeInterpreterToolParam(file_ids=[file.id])
        )
        agent = project.agents.create_version(
            agent_name="MyAgent",
            definition=PromptAgentDefinition(model="gpt-4.1", instructions="Help.", tools=[tool]),
        )
        conversation = client.conversations.create()
        reference = {"agent_reference": {"name": agent.name, "type": "agent_reference"}}
        response = client.responses.create(
            conversation=conversation.id, input=PROMPT, extra_body=reference
        )
        assert response.status == "completed"
        annotations = response.output[-1].content[-1].annotations  # type: ignore[union-attr]
        cited = {a.file_id: a for a in annotations if a.type == "container_file_citation"}
        assert len(cited) == 2  # the saved figure and the displayed one

        other = GatewayKeyCredential(gateway.add_tenant("other").key)
        with (
            AIProjectClient(endpoint=_project(gateway), credential=other) as theirs,
            theirs.get_openai_client() as their_client,
        ):
            with pytest.raises(openai.NotFoundError, match="Agent 'MyAgent' not found"):
                their_client.responses.create(input="hi", extra_body=reference)
            with pytest.raises(ResourceNotFoundError):
                theirs.agents.get(agent_name="MyAgent")
            assert [a.name for a in theirs.agents.list()] == []
            with pytest.raises(HttpResponseError) as taken:
                theirs.agents.create_version(
                    agent_name="MyAgent",
                    definition=PromptAgentDefinition(model="gpt-4.1", instructions="Mine now."),
                )
            assert taken.value.status_code == 409
        assert project.agents.get(agent_name="MyAgent").versions.latest.version == "1"

        # The sample deletes the agent before it downloads; then every container expires.
        project.agents.delete_version(agent_name=agent.name, agent_version=agent.version)
        first = {
            f: client.containers.files.content.retrieve(f, container_id=a.container_id).read()
            for f, a in cited.items()
        }
        assert all(data.startswith(PNG) for data in first.values())
        gateway.harvested(response.id, at_least=2)
        emulator.control.advance_clock(24 * 3600)
        for file_id, annotation in cited.items():
            again = client.containers.files.content.retrieve(
                file_id, container_id=annotation.container_id
            ).read()
            assert again == first[file_id]


def test_cigate_run_agent_through_the_gateway_keeps_every_file(
    gateway: LiveGateway, tmp_path: Path
) -> None:
    """``cigate run --agent NAME`` on the gateway's project endpoint: the tenant's own agent
    runs and every file is kept; another tenant's key cannot run it."""
    credential = GatewayKeyCredential(gateway.tenant.key)
    with AIProjectClient(endpoint=_project(gateway), credential=credential) as project:
        project.agents.create_version(
            agent_name="Charts",
            definition=PromptAgentDefinition(
                model="gpt-4.1",
                instructions="Run the code.",
                tools=[ProjectCodeInterpreterTool(container=AutoCodeInterpreterToolParam())],
            ),
        )
    cell = "open('/mnt/data/agent.txt', 'w').write('made by the agent')"
    args = ["run", code_input(cell), "--agent", "Charts", "--out", str(tmp_path), "--json"]
    env = {"CIGATE_ENDPOINT": _project(gateway), "CIGATE_API_KEY": gateway.tenant.key}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [f["filename"] for f in data["files"]] == ["agent.txt"]
    assert (tmp_path / "agent.txt").read_text() == "made by the agent"
    rows = gateway.harvested(data["response_id"], at_least=1)
    assert [r["filename"] for r in rows] == ["agent.txt"]

    other = {**env, "CIGATE_API_KEY": gateway.add_tenant("other").key}
    theirs = ["run", code_input(cell), "--agent", "Charts", "--out", str(tmp_path / "b")]
    refused = CliRunner().invoke(main, theirs, env=other)
    assert refused.exit_code != 0
    assert "Agent 'Charts' not found" in refused.output
    assert not (tmp_path / "b").exists()
