"""CLI and settings: env variables for every option, loud misconfiguration, tenant keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from cigate.cli import main
from cigate.exceptions import ConfigurationError
from cigate.gateway.app import create_app
from cigate.gateway.settings import GatewaySettings
from cigate.storage.metadata import MetadataStore


def test_every_setting_can_come_from_a_cigate_gateway_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CIGATE_GATEWAY_UPSTREAM", "https://res.openai.azure.com")
    monkeypatch.setenv("CIGATE_GATEWAY_PORT", "9000")
    monkeypatch.setenv("CIGATE_GATEWAY_REWRITE_LINKS", "yes")
    monkeypatch.setenv("CIGATE_GATEWAY_HARVEST_BACKOFF", "0.25")
    settings = GatewaySettings.from_env(port=9100)
    assert settings.upstream == "https://res.openai.azure.com"
    assert settings.port == 9100  # explicit options win
    assert settings.rewrite_links is True
    assert settings.harvest_backoff == 0.25


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("CIGATE_GATEWAY_PORT", "eighty"),
        ("CIGATE_GATEWAY_REWRITE_LINKS", "maybe"),
        ("CIGATE_GATEWAY_UPSTREAM_AUTH", "password"),
        ("CIGATE_GATEWAY_UPSTREAM", "ftp://x"),
    ],
    ids=["port", "bool", "auth-mode", "upstream-scheme"],
)
def test_bad_values_fail_at_start_up(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError):
        GatewaySettings.from_env()


def test_an_app_without_upstream_or_key_refuses_to_start() -> None:
    with pytest.raises(ConfigurationError, match="no upstream"):
        create_app(GatewaySettings())
    with pytest.raises(ConfigurationError, match="upstream-key"):
        create_app(GatewaySettings(upstream="https://res.openai.azure.com"))


def test_serve_without_upstream_prints_one_line_and_a_hint() -> None:
    result = CliRunner().invoke(main, ["gateway", "serve"])
    assert result.exit_code == ConfigurationError.exit_code
    assert "error: no upstream configured" in result.output
    assert "Traceback" not in result.output


@pytest.mark.storage
def test_tenant_add_prints_a_key_that_names_the_tenant(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    first = CliRunner().invoke(main, ["gateway", "tenant", "add", "analytics", "--database", url])
    second = CliRunner().invoke(main, ["gateway", "tenant", "add", "analytics", "--database", url])
    assert first.exit_code == 0, first.output
    key1, key2 = first.output.strip(), second.output.strip()
    assert key1.startswith("cgk_")
    assert key1 != key2

    async def owners() -> set[str]:
        async with await MetadataStore.open(url) as meta:
            tenants = {await meta.tenant_for_key(k) for k in (key1, key2)}
            return {t.name for t in tenants if t is not None}

    assert asyncio.run(owners()) == {"analytics"}
