"""Gateway settings from env variables, credential files and a dotenv file (pydantic-settings).

Precedence, highest first: CLI option > ``CIGATE_GATEWAY_*`` (or ``…_FILE`` for a credential; both
is an error) > env file > default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cigate.exceptions import ConfigurationError
from cigate.gateway.links import load_link_secret
from cigate.gateway.settings import (
    SECRET_FILE_MAX,
    SETTINGS_HINT,
    GatewaySettings,
    read_secret_file,
)
from cigate.gateway.upstreams import load_upstreams

#: Valid non-default values for the settings ``__post_init__`` constrains.
_CONSTRAINED: dict[str, str] = {
    "upstream": "https://res.openai.azure.com",
    "upstream_auth": "none",
    "allow_unscoped": "vector_stores",
    "code_interpreter": "self",
    "interpreter_api": "chat",
    "interpreter_upstream": "http://models.internal:8000",
    "interpreter_upstream_auth": "key",
    "interpreter_kernels": "remote",
    "kernel_gateway_url": "https://eg.internal",
    "entra_claim": "oid",
}


def _other_value(field: dataclasses.Field[Any]) -> tuple[str, Any]:
    """A raw env spelling of a non-default value for ``field``, and the value it must become."""
    if field.name in _CONSTRAINED:
        return _CONSTRAINED[field.name], _CONSTRAINED[field.name]
    default = field.default
    if isinstance(default, bool):
        return ("off" if default else "on"), not default
    if isinstance(default, int):
        return str(default + 3), default + 3
    if isinstance(default, float):
        return str(default + 0.5), default + 0.5
    return f"value-of-{field.name}", f"value-of-{field.name}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("CIGATE_GATEWAY_"):
            monkeypatch.delenv(name)


def test_every_field_round_trips_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    expected: dict[str, Any] = {}
    for field in dataclasses.fields(GatewaySettings):
        raw, value = _other_value(field)
        assert value != field.default, field.name
        monkeypatch.setenv(f"CIGATE_GATEWAY_{field.name.upper()}", raw)
        expected[field.name] = value
    settings = GatewaySettings.from_env()
    assert {name: getattr(settings, name) for name in expected} == expected


def test_variable_names_are_case_insensitive_and_empty_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("cigate_gateway_port", "9001")
    monkeypatch.setenv("CIGATE_GATEWAY_LINK_TTL", "")
    settings = GatewaySettings.from_env()
    assert settings.port == 9001
    assert settings.link_ttl == GatewaySettings.link_ttl


@pytest.mark.parametrize(
    ("name", "raw", "kind"),
    [
        ("PORT", "80.5", "int"),
        ("PORT", "1e3", "int"),
        ("LINK_TTL", "0x10", "int"),
        ("HARVEST_BACKOFF", "fast", "float"),
        ("CONNECT_TIMEOUT", "10s", "float"),
        ("METRICS", "t", "bool"),
        ("METRICS", "y", "bool"),
        ("REWRITE_LINKS", "enabled", "bool"),
    ],
    ids=[
        "int-fraction",
        "int-exponent",
        "int-hex",
        "float-word",
        "float-unit",
        "bool-t",
        "bool-y",
        "bool-word",
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, kind: str
) -> None:
    monkeypatch.setenv(f"CIGATE_GATEWAY_{name}", raw)
    with pytest.raises(ConfigurationError) as caught:
        GatewaySettings.from_env()
    assert str(caught.value) == f"CIGATE_GATEWAY_{name}={raw!r} is not a valid {kind}"
    assert caught.value.hint == SETTINGS_HINT
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("raw", ["1", "TRUE", "Yes", "on"], ids=["1", "TRUE", "Yes", "on"])
def test_booleans_accept_the_old_spellings(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CIGATE_GATEWAY_METRICS", raw)
    assert GatewaySettings.from_env().metrics is True
    monkeypatch.setenv("CIGATE_GATEWAY_METRICS", {"1": "0"}.get(raw, "off"))
    assert GatewaySettings.from_env().metrics is False


def test_a_credential_file_gives_its_setting_and_beats_the_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "key").write_text("s3cret-from-volume\n")
    env_file = tmp_path / "gateway.env"
    env_file.write_text("CIGATE_GATEWAY_UPSTREAM_KEY=from-env-file\n")
    monkeypatch.setenv("CIGATE_GATEWAY_UPSTREAM_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("CIGATE_GATEWAY_ENV_FILE", str(env_file))
    assert GatewaySettings.from_env().upstream_key == "s3cret-from-volume"


def test_a_credential_in_both_its_variable_and_its_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "key").write_text("one")
    monkeypatch.setenv("CIGATE_GATEWAY_UPSTREAM_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("CIGATE_GATEWAY_UPSTREAM_KEY", "other")
    with pytest.raises(ConfigurationError, match="not both"):
        GatewaySettings.from_env()


def test_only_credentials_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "port").write_text("9443")
    monkeypatch.setenv("CIGATE_GATEWAY_PORT_FILE", str(tmp_path / "port"))
    assert GatewaySettings.from_env().port == GatewaySettings.port


def test_an_env_file_sets_prefixed_variables_and_ignores_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "gateway.env"
    env_file.write_text(
        "CIGATE_GATEWAY_UPSTREAM=https://res.openai.azure.com\n"
        "cigate_gateway_metrics=yes\nUNRELATED=1\nCIGATE_GATEWAY_NOT_A_SETTING=x\n"
    )
    monkeypatch.setenv("CIGATE_GATEWAY_ENV_FILE", str(env_file))
    settings = GatewaySettings.from_env()
    assert settings.upstream == "https://res.openai.azure.com"
    assert settings.metrics is True


@pytest.mark.parametrize(
    "variable", ["UPSTREAM_KEY_FILE", "ENV_FILE"], ids=["credential-file", "env-file"]
)
def test_a_missing_credential_file_or_env_file_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    monkeypatch.setenv(f"CIGATE_GATEWAY_{variable}", str(tmp_path / "absent"))
    with pytest.raises(ConfigurationError, match=f"CIGATE_GATEWAY_{variable}="):
        GatewaySettings.from_env()


def test_precedence_is_option_then_env_then_env_file_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "gateway.env"
    # port: all three; link_ttl: env and file; resume_interval: file only.
    env_file.write_text(
        "CIGATE_GATEWAY_PORT=1001\nCIGATE_GATEWAY_LINK_TTL=1002\n"
        "CIGATE_GATEWAY_RESUME_INTERVAL=1004\n"
    )
    monkeypatch.setenv("CIGATE_GATEWAY_ENV_FILE", str(env_file))
    monkeypatch.setenv("CIGATE_GATEWAY_PORT", "3001")
    monkeypatch.setenv("CIGATE_GATEWAY_LINK_TTL", "3002")
    settings = GatewaySettings.from_env(port=4001, link_ttl=None)
    assert (settings.port, settings.link_ttl) == (4001, 3002)
    assert settings.resume_interval == 1004.0
    assert settings.harvest_attempts == GatewaySettings.harvest_attempts


def _not_a_secret(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":  # opening it for reading would wait for a writer
        path = tmp_path / "fifo"
        os.mkfifo(path)
        return path
    if kind == "too-large":
        path = tmp_path / "large"
        path.write_bytes(b"k" * (SECRET_FILE_MAX + 1))
        return path
    return {"dev-zero": Path("/dev/zero"), "directory": tmp_path}[kind]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-large", "directory"])
@pytest.mark.parametrize("channel", ["variable-file", "link-secret", "upstream-key-file"])
@pytest.mark.timeout(10)
def test_a_credential_file_that_is_no_small_regular_file_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, channel: str
) -> None:
    """Every credential file goes through one reader: a FIFO, ``/dev/zero``, a directory or a
    file over 64 KiB is a start-up error naming it, never a hang or a start-up that fills the
    memory (before: ``read_bytes`` waited for a FIFO's writer and read ``/dev/zero`` on)."""
    path = _not_a_secret(tmp_path, kind)
    if channel == "variable-file":
        monkeypatch.setenv("CIGATE_GATEWAY_UPSTREAM_KEY_FILE", str(path))
        read = GatewaySettings.from_env
    elif channel == "link-secret":
        read = partial(load_link_secret, GatewaySettings(link_secret_file=str(path)))
    else:
        doc = tmp_path / "upstreams.json"
        entry = {"name": "east", "url": "https://e.example", "key_file": str(path)}
        doc.write_text(json.dumps({"upstreams": [entry]}))
        read = partial(load_upstreams, GatewaySettings(upstreams_file=str(doc)))
    with pytest.raises(ConfigurationError, match="cannot read") as failed:
        read()
    assert str(path) in failed.value.message
    if kind == "too-large":
        assert f"larger than {SECRET_FILE_MAX // 1024} KiB" in failed.value.message


def test_a_credential_file_up_to_the_largest_size_is_read(tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_bytes(b"k" * SECRET_FILE_MAX + b"\n\n")  # the whitespace counts too
    with pytest.raises(ConfigurationError, match="larger than"):
        read_secret_file(path, "the file")
    path.write_bytes(b"k" * (SECRET_FILE_MAX - 1) + b"\n")
    assert read_secret_file(path, "the file") == "k" * (SECRET_FILE_MAX - 1)
