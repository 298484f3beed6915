"""URL forms and api-version rules (api-reference 6.1, 6.3, 7.10), at the HTTP and SDK level."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from cigate.testing.plugin import RunningEmulator

RESOURCE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
VERSION_NOT_SUPPORTED = {"error": {"code": "BadRequest", "message": "API version not supported"}}


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        pytest.param("/openai/v1/files", 200, None, id="v1-without-version"),
        pytest.param("/openai/v1/files?api-version=v1", 200, None, id="v1-with-v1"),
        pytest.param("/openai/v1/files?api-version=preview", 200, None, id="v1-with-preview"),
        pytest.param(
            "/openai/v1/containers?api-version=preview", 200, None, id="v1-containers-with-preview"
        ),
        pytest.param(
            "/openai/v1/files?api-version=2025-04-01-preview",
            400,
            VERSION_NOT_SUPPORTED,
            id="v1-with-a-dated-version",
        ),
        pytest.param(
            "/openai/v1/containers?api-version=2025-03-01-preview",
            400,
            VERSION_NOT_SUPPORTED,
            id="v1-containers-with-a-dated-version",
        ),
        pytest.param(
            "/openai/files?api-version=2025-04-01-preview",
            200,
            None,
            id="legacy-with-a-dated-version",
        ),
        pytest.param("/openai/files?api-version=2024-10-21", 200, None, id="legacy-with-a-ga-date"),
        pytest.param("/openai/files", 404, RESOURCE_NOT_FOUND, id="legacy-without-version"),
        pytest.param(
            "/openai/files?api-version=preview", 404, RESOURCE_NOT_FOUND, id="legacy-with-preview"
        ),
        pytest.param(
            "/openai/containers?api-version=2025-04-01-preview",
            404,
            RESOURCE_NOT_FOUND,
            id="legacy-containers-do-not-exist",
        ),
        pytest.param(
            "/openai/containers/cntr_x/files/cfile_y/content?api-version=preview",
            404,
            RESOURCE_NOT_FOUND,
            id="legacy-container-download-with-preview",
        ),
        pytest.param(
            "/openai/deployments/gpt/responses?api-version=2025-04-01-preview",
            404,
            RESOURCE_NOT_FOUND,
            id="deployment-scoped-responses-do-not-exist",
        ),
        pytest.param("/openai/v1/nothing-here", 404, RESOURCE_NOT_FOUND, id="v1-unknown-path"),
        pytest.param("/v1/files", 200, None, id="openai-style-files"),
        pytest.param("/v1/containers", 200, None, id="openai-style-containers"),
        pytest.param(
            "/v1/files?api-version=whatever", 200, None, id="openai-style-ignores-api-version"
        ),
    ],
)
def test_each_url_form_answers_as_azure_does(
    emulator: RunningEmulator, path: str, status: int, body: dict[str, object] | None
) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).get(path)
    assert response.status_code == status
    if body is not None:
        assert response.json() == body


def test_an_unknown_openai_style_path_is_openais_invalid_url(emulator: RunningEmulator) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).get("/v1/nothing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "Invalid URL (GET /v1/nothing)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_a_wrong_method_on_a_known_path_is_refused(emulator: RunningEmulator) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).put("/openai/v1/files")
    assert response.status_code == 405


ClientFactory = Callable[[RunningEmulator], openai.OpenAI]

CONTAINER_CAPABLE: list[object] = [
    pytest.param(lambda e: e.openai(max_retries=0), id="OpenAI-base-url-v1"),
    pytest.param(
        lambda e: e.azure_openai(api_version="preview", base_url=e.v1_url, max_retries=0),
        id="AzureOpenAI-base-url-v1-preview",
    ),
    pytest.param(
        lambda e: e.azure_openai(api_version="v1", base_url=e.v1_url, max_retries=0),
        id="AzureOpenAI-base-url-v1-v1",
    ),
    pytest.param(lambda e: e.openai(base_url=e.openai_url, max_retries=0), id="OpenAI-style"),
]


@pytest.mark.parametrize("factory", CONTAINER_CAPABLE)
def test_containers_work_through_every_v1_client_form(
    emulator: RunningEmulator, factory: ClientFactory
) -> None:
    client = factory(emulator)
    container = client.containers.create(name="forms")
    created = client.containers.files.create(container.id, file=("a.txt", b"forms"))
    content = client.containers.files.content.retrieve(created.id, container_id=container.id)
    assert content.read() == b"forms"


def test_containers_through_a_dated_azure_client_hit_the_legacy_404(
    emulator: RunningEmulator,
) -> None:
    client = emulator.azure_openai(api_version="2025-04-01-preview", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.containers.list()
    assert info.value.body == RESOURCE_NOT_FOUND["error"]
    assert info.value.request.url.path == "/openai/containers"


def test_a_dated_version_on_a_v1_base_url_is_not_supported(emulator: RunningEmulator) -> None:
    client = emulator.azure_openai(
        api_version="2025-04-01-preview", base_url=emulator.v1_url, max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.files.list()
    assert info.value.body == VERSION_NOT_SUPPORTED["error"]


@pytest.mark.parametrize(
    ("factory", "prefix"),
    [
        pytest.param(lambda e: e.openai(max_retries=0), "assistant-", id="azure-v1"),
        pytest.param(lambda e: e.azure_openai(max_retries=0), "assistant-", id="azure-legacy"),
        pytest.param(
            lambda e: e.openai(base_url=e.openai_url, max_retries=0), "file-", id="openai-style"
        ),
    ],
)
def test_file_ids_follow_the_flavor_of_the_path(
    emulator: RunningEmulator, factory: ClientFactory, prefix: str
) -> None:
    uploaded = factory(emulator).files.create(file=("a.txt", b"a"), purpose="assistants")
    assert uploaded.id.startswith(prefix)
