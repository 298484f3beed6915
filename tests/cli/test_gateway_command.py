"""CLI and settings: env variables for every option, loud misconfiguration, tenant keys."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cigate.cli import main
from cigate.exceptions import BadInputError, ConfigurationError, StorageError
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


@pytest.mark.storage
def test_tenant_keys_lists_without_secrets_and_revoke_stops_only_that_key(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    cli = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = cli.invoke(main, ["gateway", "tenant", *args, "--database", url])
        return result.exit_code, result.output

    keep = invoke("add", "analytics")[1].strip()
    drop = invoke("add", "analytics")[1].strip()
    invoke("add", "finance")

    code, listing = invoke("list")
    assert code == 0, listing
    rows = [line.split("\t") for line in listing.splitlines()]
    assert [(r[0], r[3]) for r in rows] == [
        ("analytics", "2 active key(s)"),
        ("finance", "1 active key(s)"),
    ]

    code, keys = invoke("keys", "analytics")
    assert code == 0, keys
    assert keep not in keys
    assert drop not in keys
    lines = keys.splitlines()
    assert len(lines) == 2
    assert all(line.endswith("\tactive") for line in lines)
    by_prefix = {line.split("\t")[1].rstrip("…"): line.split("\t")[0] for line in lines}
    drop_id = next(kid for prefix, kid in by_prefix.items() if drop.startswith(prefix))

    code, out = invoke("revoke", "analytics", drop_id)
    assert (code, out.strip()) == (0, f"revoked {drop_id}")

    async def owners() -> dict[str, str | None]:
        async with await MetadataStore.open(url) as meta:
            found = {k: await meta.tenant_for_key(k) for k in (keep, drop)}
            return {k: t.name if t else None for k, t in found.items()}

    assert asyncio.run(owners()) == {keep: "analytics", drop: None}
    code, keys = invoke("keys", "analytics")
    assert sorted(line.split("\t")[3].split(" ")[0] for line in keys.splitlines()) == [
        "active",
        "revoked",
    ]

    code, out = invoke("revoke", "analytics", drop_id)  # already revoked
    assert code == BadInputError.exit_code
    assert "has no active key" in out
    assert "cigate gateway tenant keys analytics" in out
    code, out = invoke("keys", "nobody")
    assert code == BadInputError.exit_code
    assert "no tenant named 'nobody'" in out
    code, out = invoke("revoke", "finance", drop_id)  # another tenant's key id
    assert code == BadInputError.exit_code
    assert asyncio.run(owners())[keep] == "analytics"


UPSTREAM = ["--upstream", "http://127.0.0.1:9", "--upstream-key", "k"]


@pytest.mark.parametrize(
    ("database", "status", "hint"),
    [
        ("postgresql://nobody@127.0.0.1:1/db", StorageError.exit_code, "--database and --blobs"),
        ("mysql://somewhere/db", ConfigurationError.exit_code, "docs/storage.md"),
        ("not a url at all ://", ConfigurationError.exit_code, "docs/storage.md"),
    ],
    ids=["postgres-unreachable", "unsupported-scheme", "garbage"],
)
def test_a_bad_database_fails_before_listening_with_one_line_and_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str, status: int, hint: str
) -> None:
    monkeypatch.setattr("uvicorn.Server.run", _never_serves)
    args = ["gateway", "serve", *UPSTREAM, "--port", "0", "--database", database]
    result = CliRunner().invoke(main, args, env={"CIGATE_HOME": str(tmp_path)})
    assert result.exit_code == status, result.output
    assert "cigate gateway on" not in result.output  # no "listening" line before the failure
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert lines[-1].startswith("hint: ")
    assert hint in lines[-1]
    assert "Traceback" not in result.output


@pytest.mark.storage
def test_serve_on_port_0_prints_the_port_it_listens_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound: list[int] = []

    def record(server: Any, sockets: list[socket.socket]) -> None:
        bound.append(sockets[0].getsockname()[1])
        sockets[0].close()

    monkeypatch.setattr("uvicorn.Server.run", record)
    args = ["gateway", "serve", *UPSTREAM, "--port", "0"]
    result = CliRunner().invoke(main, args, env={"CIGATE_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert bound
    assert bound[0] != 0
    assert f"cigate gateway on http://127.0.0.1:{bound[0]} -> http://127.0.0.1:9" in result.output


def _never_serves(server: Any, sockets: list[socket.socket]) -> None:
    raise AssertionError("the gateway started serving despite a bad setting")
