"""deploy/compose.yaml: migration before the gateway, secrets as files, real setting names.

No container registry is reachable here, so the stack itself is not started by the suite; these
checks read the file, and feed its gateway environment (with its secret files) to the real
settings loader, as the container would.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from cigate.gateway.links import load_link_secret
from cigate.gateway.settings import GatewaySettings
from tests.deploy.settings_names import real_setting_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
#: Azurite's published development account key: public, in Microsoft's documentation.
AZURITE_DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"
    "%2FK1SZFPTOtr%2FKBHBeksoGMGw%3D%3D"
)


def test_the_migration_runs_once_before_the_gateway_which_never_migrates() -> None:
    assert SERVICES["migrate"]["command"] == ["migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    gateway = SERVICES["gateway"]
    assert "--no-migrate" in gateway["command"]
    assert gateway["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert gateway["depends_on"]["azurite"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["image"] == gateway["image"]  # the same version migrates


def test_every_long_running_service_has_a_healthcheck_and_the_gateway_probes_readyz() -> None:
    for name in ("postgres", "azurite", "gateway"):
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD", name
    assert any("/readyz" in part for part in SERVICES["gateway"]["healthcheck"]["test"])


def test_the_gateway_container_is_read_only_without_capabilities() -> None:
    gateway = SERVICES["gateway"]
    assert gateway["read_only"] is True
    assert gateway["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in gateway["security_opt"]


def test_every_gateway_variable_is_a_real_setting_and_secrets_are_files() -> None:
    declared = set(COMPOSE["secrets"])
    assert all(set(spec) == {"file"} for spec in COMPOSE["secrets"].values())
    known = real_setting_names()
    for name in ("migrate", "gateway"):
        env: dict[str, str] = SERVICES[name]["environment"]
        unknown = [k for k in env if k.startswith("CIGATE_") and k not in known]
        assert unknown == [], f"{name}: not a gateway setting: {unknown}"
        for key, value in env.items():
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD|DATABASE$", key):
                assert key.endswith("_FILE"), f"{name}: {key} is inline, not a secret file"
                secret = value.removeprefix("/run/secrets/")
                assert secret in SERVICES[name]["secrets"], f"{name}: {key} is not mounted"
            assert "AccountKey" not in value or AZURITE_DEV_KEY in value, key
        assert set(SERVICES[name]["secrets"]) <= declared


def test_the_gateway_environment_loads_as_a_replica_with_its_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compose environment, secrets written as the compose README says, read by cigate."""
    files = {
        "upstream_key": "azure-key\n",
        "link_secret": "J2p3V9kqXz8m1Lr4Tn6Wc0Yb5Hd7Gf2Sa9Qe3Uo1\n",
        "database_url": "postgresql://cigate:pw@postgres:5432/cigate",
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    monkeypatch.setenv("CIGATE_UPSTREAM", "https://res.openai.azure.com")
    for key, raw in SERVICES["gateway"]["environment"].items():
        value = raw.replace("/run/secrets/", f"{tmp_path}/")
        value = re.sub(r"\$\{CIGATE_UPSTREAM:\?[^}]*\}", "https://res.openai.azure.com", value)
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value))
    settings = replace(
        GatewaySettings.from_env(), migrate="--no-migrate" not in SERVICES["gateway"]["command"]
    )
    assert settings.migrate is False
    assert settings.upstream_key == "azure-key"
    assert settings.database_url == files["database_url"]
    assert settings.blobs.startswith("azure://cigate?")
    settings.require_upstream()
    assert load_link_secret(settings) == files["link_secret"].strip().encode()
