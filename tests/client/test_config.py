"""Endpoint normalisation, environment precedence, api-version handling and credentials."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cigate.client._config import DEFAULT_SCOPE, TokenSource, normalise_base_url, resolve_config
from cigate.exceptions import AccessDeniedError, ApiVersionError, ConfigurationError


@pytest.mark.parametrize(
    ("given", "expected", "kind"),
    [
        ("https://res.openai.azure.com/", "https://res.openai.azure.com/openai/v1/", "azure"),
        ("https://res.openai.azure.com", "https://res.openai.azure.com/openai/v1/", "azure"),
        ("res.openai.azure.com", "https://res.openai.azure.com/openai/v1/", "azure"),
        ("https://res.openai.azure.com/openai", "https://res.openai.azure.com/openai/v1/", "azure"),
        (
            "https://res.openai.azure.com/openai/v1",
            "https://res.openai.azure.com/openai/v1/",
            "azure",
        ),
        (
            "https://res.openai.azure.com/openai/v1/responses",
            "https://res.openai.azure.com/openai/v1/",
            "azure",
        ),
        (
            "https://res.services.ai.azure.com/",
            "https://res.services.ai.azure.com/openai/v1/",
            "azure",
        ),
        (
            "https://res.services.ai.azure.com/api/projects/p1",
            "https://res.services.ai.azure.com/api/projects/p1/openai/v1/",
            "azure",
        ),
        (
            "https://res.openai.azure.com/openai/deployments/gpt/chat/completions",
            "https://res.openai.azure.com/openai/v1/",
            "azure",
        ),
        ("https://api.openai.com/v1", "https://api.openai.com/v1/", "openai"),
        ("https://api.openai.com", "https://api.openai.com/v1/", "openai"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/openai/v1/", "azure"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1/", "openai"),
        ("https://apim.contoso.com/aoai/", "https://apim.contoso.com/aoai/openai/v1/", "azure"),
        (
            "https://apim.contoso.com/aoai/openai/deployments/gpt/chat/completions",
            "https://apim.contoso.com/aoai/openai/v1/",
            "azure",
        ),
        (
            "https://apim.contoso.com/aoai/openai/v1/",
            "https://apim.contoso.com/aoai/openai/v1/",
            "azure",
        ),
        (
            "https://gw.contoso.com/ai/api/projects/p1",
            "https://gw.contoso.com/ai/api/projects/p1/openai/v1/",
            "azure",
        ),
        ("https://res.openai.azure.com/a/b", "https://res.openai.azure.com/openai/v1/", "azure"),
    ],
    ids=[
        "azure-resource",
        "azure-no-slash",
        "azure-no-scheme",
        "azure-openai-prefix",
        "azure-v1",
        "azure-v1-with-operation",
        "foundry-resource",
        "foundry-project",
        "legacy-deployment-path",
        "openai-v1",
        "openai-bare",
        "local-azure-style",
        "local-openai-style",
        "api-management-prefix",
        "api-management-legacy-path",
        "api-management-v1",
        "proxy-prefix-foundry-project",
        "azure-host-stray-path",
    ],
)
def test_every_endpoint_form_becomes_one_v1_base_url(given: str, expected: str, kind: str) -> None:
    base, got_kind, _ = normalise_base_url(given)
    assert (base, got_kind) == (expected, kind)


def test_a_legacy_path_is_rewritten_with_a_note() -> None:
    _, _, notes = normalise_base_url("https://res.openai.azure.com/openai/responses")
    assert notes
    assert "v1" in notes[0]


def test_command_line_values_win_over_cigate_over_seed_over_sdk_variables() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://sdk.openai.azure.com",
        "AOAI_API_BASE": "https://seed.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "k",
    }
    assert resolve_config(env=env).base_url.startswith("https://seed.")
    env["CIGATE_ENDPOINT"] = "https://cigate.openai.azure.com"
    assert resolve_config(env=env).base_url.startswith("https://cigate.")
    cfg = resolve_config(endpoint="https://cli.openai.azure.com", env=env)
    assert cfg.base_url.startswith("https://cli.")


def test_the_seed_deployment_variable_sets_the_model() -> None:
    env = {"AOAI_API_BASE": "https://r.openai.azure.com", "AOAI_DEPLOYMENT": "gpt-4.1"}
    assert resolve_config(env=env).model == "gpt-4.1"


def test_a_dated_api_version_on_a_v1_url_is_dropped_with_a_warning() -> None:
    env = {
        "AOAI_API_BASE": "https://r.openai.azure.com",
        "AOAI_API_VERSION": "2025-04-01-preview",
        "AZURE_OPENAI_API_KEY": "k",
    }
    cfg = resolve_config(env=env)
    assert cfg.api_version is None
    assert cfg.default_query == {}
    assert any("2025-04-01-preview" in w and "AOAI_API_VERSION" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("version", "expected"),
    [("preview", {"api-version": "preview"}), ("v1", {}), (None, {})],
    ids=["preview-is-sent", "v1-is-the-default", "none"],
)
def test_only_preview_is_sent_as_api_version(version: str | None, expected: dict[str, str]) -> None:
    cfg = resolve_config(endpoint="https://r.openai.azure.com", api_key="k", api_version=version)
    assert cfg.default_query == expected


def test_an_unknown_api_version_is_an_api_version_error() -> None:
    with pytest.raises(ApiVersionError):
        resolve_config(endpoint="https://r.openai.azure.com", api_key="k", api_version="latest")


def test_a_missing_endpoint_explains_where_to_set_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_config(env={})
    assert "AZURE_OPENAI_ENDPOINT" in info.value.hint


def test_an_openai_key_alone_targets_api_openai_com() -> None:
    cfg = resolve_config(env={"OPENAI_API_KEY": "sk-1"})
    assert cfg.base_url == "https://api.openai.com/v1/"
    assert cfg.auth_headers() == {"Authorization": "Bearer sk-1"}


def test_azure_keys_go_in_the_api_key_header() -> None:
    cfg = resolve_config(endpoint="https://r.openai.azure.com", api_key="k")
    assert cfg.auth_headers() == {"api-key": "k"}


def test_auth_key_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        resolve_config(endpoint="https://r.openai.azure.com", auth="key", env={})


def test_bad_numbers_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        resolve_config(
            endpoint="https://r.openai.azure.com", api_key="k", env={"CIGATE_CONCURRENCY": "x"}
        )


class _Token:
    def __init__(self, token: str, expires_on: int) -> None:
        self.token = token
        self.expires_on = expires_on


class CountingCredential:
    """A TokenCredential that counts calls and hands out short-lived tokens."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.lifetime = lifetime

    def get_token(self, *scopes: str, **_: Any) -> _Token:
        self.calls.append(scopes)
        return _Token(f"tok{len(self.calls)}", int(time.time() + self.lifetime))


def test_entra_tokens_are_cached_until_near_expiry_then_refreshed() -> None:
    cred = CountingCredential(lifetime=3600)
    source = TokenSource(cred, DEFAULT_SCOPE)  # type: ignore[arg-type]
    assert source.token() == source.token() == "tok1"
    assert cred.calls == [(DEFAULT_SCOPE,)]
    short = CountingCredential(lifetime=60)  # inside the refresh margin: always refreshed
    source = TokenSource(short, DEFAULT_SCOPE)  # type: ignore[arg-type]
    source.token()
    source.token()
    assert len(short.calls) == 2


def test_a_credential_passed_from_code_selects_entra_and_its_scope() -> None:
    cred = CountingCredential()
    cfg = resolve_config(
        endpoint="https://r.openai.azure.com",
        credential=cred,  # type: ignore[arg-type]
        scope="https://ai.azure.com/.default",
        env={"AZURE_OPENAI_API_KEY": "ignored"},
    )
    assert cfg.uses_entra
    assert cfg.auth_headers() == {"Authorization": "Bearer tok1"}
    assert cred.calls == [("https://ai.azure.com/.default",)]
    assert "tok1" not in repr(cfg)


@pytest.mark.parametrize(
    ("endpoint", "scope"),
    [
        ("https://res.services.ai.azure.com/api/projects/p1", "https://ai.azure.com/.default"),
        ("https://gw.contoso.com/api/projects/p1/openai/v1/", "https://ai.azure.com/.default"),
        ("https://res.services.ai.azure.com/", DEFAULT_SCOPE),
        ("https://res.openai.azure.com/openai/v1/", DEFAULT_SCOPE),
    ],
    ids=["project", "project-v1-behind-a-proxy", "resource", "openai-v1"],
)
def test_entra_tokens_for_a_foundry_project_are_asked_for_ai_azure_com(
    endpoint: str, scope: str
) -> None:
    cred = CountingCredential()
    cfg = resolve_config(endpoint=endpoint, credential=cred, env={})  # type: ignore[arg-type]
    assert cfg.auth_headers() == {"Authorization": "Bearer tok1"}
    assert cred.calls == [(scope,)]


def test_a_failing_credential_is_access_denied_without_the_secret() -> None:
    class Broken:
        def get_token(self, *scopes: str, **_: Any) -> _Token:
            raise RuntimeError("no login")

    source = TokenSource(Broken(), DEFAULT_SCOPE)  # type: ignore[arg-type]
    with pytest.raises(AccessDeniedError) as info:
        source.token()
    assert "az login" in info.value.hint


def test_an_explicit_zero_is_kept_not_replaced_by_the_default() -> None:
    config = resolve_config(
        endpoint="https://res.openai.azure.com/",
        api_key="k",
        retries=0,
        backoff=0,
        backoff_max=0,
        max_retry_wait=0,
        env={},
    )
    assert config.retries == 1  # at least the first try, not the default 4
    assert config.backoff == 0.0
    assert config.backoff_max == 0.0
    assert config.max_retry_wait == 0.0


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("localhost:8000", "http://localhost:8000/openai/v1/"),
        ("127.0.0.1:8000/openai/v1", "http://127.0.0.1:8000/openai/v1/"),
        ("res.openai.azure.com", "https://res.openai.azure.com/openai/v1/"),
    ],
    ids=["localhost", "loopback-ip", "azure-host"],
)
def test_an_endpoint_without_a_scheme_is_http_only_on_loopback(given: str, base: str) -> None:
    assert normalise_base_url(given)[0] == base


@pytest.mark.parametrize("name", ["CIGATE_TIMEOUT", "CIGATE_RUN_TIMEOUT"])
@pytest.mark.parametrize("value", ["0", "-5"], ids=["zero", "negative"])
def test_a_timeout_of_zero_or_less_is_refused_not_read_as_the_default(
    name: str, value: str
) -> None:
    env = {"CIGATE_ENDPOINT": "https://res.openai.azure.com", "CIGATE_API_KEY": "k", name: value}
    with pytest.raises(ConfigurationError, match="positive number of seconds") as raised:
        resolve_config(env=env)
    assert "unset for the default" in raised.value.hint
