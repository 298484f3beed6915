"""Who may call the emulator (api-reference 6.2): keys, bearer keys, Entra ID JWTs."""

from __future__ import annotations

import openai
import pytest

from cigate.emulator.auth import AUDIENCES, decode_jwt_claims, make_test_jwt
from cigate.testing.plugin import RunningEmulator

AZURE_401 = {
    "error": {
        "code": "401",
        "message": (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource."
        ),
    }
}
AZURE_BAD_TOKEN_401 = {
    "error": {
        "code": "401",
        "message": (
            "Unauthorized. Access token is missing, invalid, audience is incorrect "
            "(https://cognitiveservices.azure.com), or have expired."
        ),
    }
}

PATHS = [
    pytest.param("/openai/v1/files", id="v1"),
    pytest.param("/openai/files?api-version=2025-04-01-preview", id="legacy"),
    pytest.param("/v1/files", id="openai-style"),
]


def _headers(kind: str, key: str) -> dict[str, str]:
    return {
        "api-key": {"api-key": key},
        "bearer-key": {"authorization": f"Bearer {key}"},
        "bearer-lowercase": {"authorization": f"bearer {key}"},
        "jwt-cognitiveservices": {"authorization": "Bearer " + make_test_jwt(aud=AUDIENCES[0])},
        "jwt-ai-azure": {"authorization": "Bearer " + make_test_jwt(aud=AUDIENCES[1])},
        "jwt-aud-list": {"authorization": "Bearer " + make_test_jwt(aud=[AUDIENCES[1]])},  # type: ignore[arg-type]
        "jwt-aud-trailing-slash": {
            "authorization": "Bearer " + make_test_jwt(aud=AUDIENCES[0] + "/")
        },
    }[kind]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "kind",
    [
        "api-key",
        "bearer-key",
        "bearer-lowercase",
        "jwt-cognitiveservices",
        "jwt-ai-azure",
        "jwt-aud-list",
        "jwt-aud-trailing-slash",
    ],
)
def test_accepted_credentials_open_every_prefix(
    emulator: RunningEmulator, path: str, kind: str
) -> None:
    response = emulator.http_client().get(path, headers=_headers(kind, emulator.api_key))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"api-key": "wrong"}, id="wrong-api-key"),
        pytest.param({"authorization": "Bearer wrong"}, id="wrong-bearer-key"),
        pytest.param({"authorization": "Basic dXNlcjpwYXNz"}, id="basic-auth"),
        pytest.param({"api-key": ""}, id="empty-api-key"),
    ],
)
@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/openai/v1/containers", id="v1"),
        pytest.param("/openai/files?api-version=2025-04-01-preview", id="legacy"),
        pytest.param("/openai/v1/no-such-thing", id="unknown-path"),
        pytest.param("/openai/files", id="legacy-without-version"),
    ],
)
def test_a_missing_or_wrong_key_is_azures_401(
    emulator: RunningEmulator, headers: dict[str, str], path: str
) -> None:
    response = emulator.http_client().get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == AZURE_401


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(make_test_jwt(aud="https://management.azure.com"), id="wrong-audience"),
        pytest.param(make_test_jwt(lifetime=-60), id="expired"),
    ],
)
def test_a_refused_entra_token_is_azures_token_401(emulator: RunningEmulator, token: str) -> None:
    response = emulator.http_client().get(
        "/openai/v1/files", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert response.json() == AZURE_BAD_TOKEN_401


def test_the_openai_style_prefix_answers_openais_401s(emulator: RunningEmulator) -> None:
    http = emulator.http_client()
    missing = http.get("/v1/files").json()["error"]
    assert missing["message"].startswith("You didn't provide an API key.")
    assert missing["type"] == "invalid_request_error"
    wrong = http.get("/v1/files", headers={"authorization": "Bearer nope"}).json()["error"]
    assert wrong["code"] == "invalid_api_key"
    assert wrong["message"].startswith("Incorrect API key provided.")


def test_the_sdk_raises_authentication_error_on_a_wrong_key(emulator: RunningEmulator) -> None:
    client = emulator.openai(api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.containers.list()
    assert info.value.body == AZURE_401["error"]


def test_azure_openai_with_an_entra_token_provider_is_accepted(
    emulator: RunningEmulator,
) -> None:
    calls: list[int] = []

    def token_provider() -> str:
        calls.append(1)
        return make_test_jwt(aud="https://cognitiveservices.azure.com")

    client = emulator.azure_openai(azure_ad_token_provider=token_provider, max_retries=0)
    uploaded = client.files.create(file=("a.txt", b"entra"), purpose="assistants")
    assert client.files.content(uploaded.id).read() == b"entra"
    assert calls  # the SDK asked the provider for each request


def test_a_v1_client_with_an_entra_token_reaches_containers(emulator: RunningEmulator) -> None:
    client = emulator.azure_openai(
        api_version="preview",
        base_url=emulator.v1_url,
        azure_ad_token_provider=lambda: make_test_jwt(aud="https://ai.azure.com"),
        max_retries=0,
    )
    assert list(client.containers.list()) == []


def test_the_openai_beta_header_is_tolerated(emulator: RunningEmulator) -> None:
    response = emulator.http_client(headers=emulator.auth_headers).get(
        "/openai/v1/files", headers={"OpenAI-Beta": "assistants=v2"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/openai/v1/assistants", "/openai/assistants?api-version=2024-05-01-preview"],
    ids=["v1", "dated"],
)
def test_assistants_on_azure_paths_need_no_beta_header(
    emulator: RunningEmulator, path: str
) -> None:
    # §4.2: Azure's REST examples omit OpenAI-Beta; only the OpenAI-style /v1 path requires it.
    http = emulator.http_client(headers=emulator.auth_headers)
    assert "openai-beta" not in {k.lower() for k in emulator.auth_headers}
    assert http.get(path).status_code == 200
    created = http.post(path, json={"model": "gpt-4.1"})
    assert created.status_code == 200
    assert created.json()["object"] == "assistant"


def test_the_control_plane_needs_no_key(emulator: RunningEmulator) -> None:
    assert emulator.http_client().get("/_emulator/clock").status_code == 200


def test_a_test_jwt_decodes_to_its_claims() -> None:
    claims = decode_jwt_claims(make_test_jwt(aud="https://ai.azure.com", oid="me"))
    assert claims is not None
    assert claims["aud"] == "https://ai.azure.com"
    assert claims["oid"] == "me"


@pytest.mark.parametrize(
    "token",
    ["not-a-jwt", "a.b", "a.!!!.c", "a.bnVsbA.c"],
    ids=["no-dots", "two-parts", "bad-base64", "payload-not-an-object"],
)
def test_tokens_that_are_not_jwts_decode_to_nothing(token: str) -> None:
    assert decode_jwt_claims(token) is None
