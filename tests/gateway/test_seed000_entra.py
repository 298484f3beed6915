"""Seed 000's notebook, unchanged, through the gateway: ``DefaultAzureCredential`` really runs.

The chain runs as on a developer's machine, offline: no service principal in the environment,
no workload identity, a managed-identity endpoint (a stand-in on 127.0.0.1, as
``AZURE_POD_IDENTITY_AUTHORITY_HOST`` allows) that answers "no identity here", no token cache,
no VS Code sign-in, and then the Azure CLI: a fake ``az`` on ``PATH`` that prints what
``az account get-access-token --output json --resource …`` prints, with a token signed by the
suite's organisation key (:mod:`tests.gateway.entra_keys`). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cigate.emulator.server import run_in_thread
from cigate.testing.plugin import RunningEmulator
from tests.gateway.conftest import live_settings, local_backend
from tests.gateway.entra_keys import AUDIENCE, ISSUER, TENANT_GUID, Jwks, SigningKey, serve_jwks
from tests.gateway.live import LiveGateway, code_input, serving

pytestmark = [pytest.mark.storage, pytest.mark.sandbox]

CHART = """
open('/mnt/data/operating_profit.csv', 'w').write('sector,profit\\nretail,12\\n')
print('saved')
"""


@pytest.fixture
def organisation() -> Iterator[tuple[SigningKey, Jwks]]:
    key = SigningKey("org-key")
    for jwks in serve_jwks([key]):
        yield key, jwks


@pytest.fixture
def developer_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, organisation: tuple[SigningKey, Jwks]
) -> Iterator[Path]:
    """The environment ``DefaultAzureCredential`` finds; returns the file ``az`` logs its
    arguments to."""
    key, _ = organisation
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    hits: list[str] = []

    async def no_identity(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        body = {"error": "invalid_request", "error_description": "Identity not found"}
        return JSONResponse(body, status_code=400)

    imds = run_in_thread(
        Starlette(routes=[Route("/metadata/identity/oauth2/token", no_identity)]), "127.0.0.1", 0
    )
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url)
    home, bin_dir, log = tmp_path / "home", tmp_path / "bin", tmp_path / "az-args.log"
    home.mkdir()
    bin_dir.mkdir()
    answer = tmp_path / "az-answer.json"
    expires = int(time.time()) + 3600
    answer.write_text(
        json.dumps(
            {
                "accessToken": key.token(),
                "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)),
                "expires_on": expires,
                "subscription": "00000000-0000-0000-0000-000000000000",
                "tenant": TENANT_GUID,
                "tokenType": "Bearer",
            }
        )
    )
    az = bin_dir / "az"
    az.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\ncat "{answer}"\n')
    az.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        yield log
    finally:
        imds.stop()
    assert hits, "the managed identity step of the chain never ran"


@pytest.fixture
def entra_gateway(
    emulator: RunningEmulator, tmp_path: Path, organisation: tuple[SigningKey, Jwks]
) -> Iterator[LiveGateway]:
    _, jwks = organisation
    backend = local_backend(tmp_path)
    settings = live_settings(emulator, backend)
    settings = type(settings)(
        **{
            **{f: getattr(settings, f) for f in settings.__dataclass_fields__},
            "entra_jwks_url": jwks.url,
            "entra_issuers": ISSUER,
            "entra_audiences": AUDIENCE,
            "entra_claim": "tid",
            "entra_tenants": f"{TENANT_GUID}=contoso",
        }
    )
    with serving(settings, "contoso") as gateway:
        yield gateway


def test_seed_000_reaches_the_gateway_with_its_entra_token(
    entra_gateway: LiveGateway, developer_machine: Path
) -> None:
    # --- the notebook, as written (seed 000, parts 1 to 3) ---
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider
    from openai import AzureOpenAI

    AOAI_API_BASE = entra_gateway.url + "/"  # the notebook's names, its endpoint the gateway
    AOAI_DEPLOYMENT = "gpt-4.1"
    AOAI_API_VERSION = "2025-04-01-preview"
    INPUT_TEXT = code_input(CHART)

    token_provider = get_bearer_token_provider(
        DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default"
    )
    client = AzureOpenAI(
        azure_endpoint=AOAI_API_BASE,
        azure_ad_token_provider=token_provider,
        api_version=AOAI_API_VERSION,
    )
    response = client.responses.create(
        model=AOAI_DEPLOYMENT,
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        instructions="You are a helpful data analyst. You should use Python tool to perform "
        "required calculations.",
        input=INPUT_TEXT,
    )
    annotations = [
        ann
        for item in response.output
        if item.type == "message"
        for part in item.content
        for ann in part.annotations
        if ann.type == "container_file_citation"
    ]
    assert len(annotations) == 1
    ann = annotations[0]
    url = f"{AOAI_API_BASE}openai/v1/containers/{ann.container_id}/files/{ann.file_id}/content"
    got = requests.get(url, headers={"Authorization": f"Bearer {token_provider()}"}, timeout=60)
    # --- end of the notebook ---
    assert (got.status_code, got.content) == (200, b"sector,profit\nretail,12\n")
    assert developer_machine.read_text().splitlines()[0] == (
        "account get-access-token --output json --resource https://cognitiveservices.azure.com"
    )
    # The file was harvested for the tenant the token's ``tid`` maps to.
    files = entra_gateway.harvested(response.id)
    assert [(f["filename"], f["state"]) for f in files] == [("operating_profit.csv", "stored")]
