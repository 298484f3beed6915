"""Reading gateway settings from the environment with pydantic-settings.

The fields are :class:`~cigate.gateway.settings.GatewaySettings`' own (one source of truth): a
``BaseSettings`` model is derived from the dataclass, so a new setting needs no second entry here.
Sources, highest first: the CLI options (``from_env`` overrides), ``CIGATE_GATEWAY_*`` variables,
one file per setting in ``$CIGATE_GATEWAY_SECRETS_DIR`` (a Kubernetes Secret volume:
``/run/secrets/cigate/upstream_key``), a dotenv file at ``$CIGATE_GATEWAY_ENV_FILE``, the defaults.
An empty value is unset. Any bad value is a :class:`ConfigurationError` naming it, never a
pydantic traceback.
"""

from __future__ import annotations

import dataclasses
import os
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError, create_model
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from cigate.exceptions import ConfigurationError

__all__ = ["ENV_PREFIX", "read_settings"]

ENV_PREFIX = "CIGATE_GATEWAY_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(raw: object) -> object:
    """The spellings the gateway always accepted, and no others (pydantic also takes ``t``)."""
    if isinstance(raw, str):
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(raw)
    return raw


class _Sources(BaseSettings):
    """Where values come from and in which order (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            EnvSettingsSource(settings_cls, case_sensitive=False, env_ignore_empty=True)
        ]
        secrets_dir = os.environ.get(ENV_PREFIX + "SECRETS_DIR")
        if secrets_dir:
            if not Path(secrets_dir).is_dir():
                raise ConfigurationError(
                    f"{ENV_PREFIX}SECRETS_DIR={secrets_dir!r} is not a directory",
                    hint=_hint(),
                )
            # One file per setting, named after the field (upstream_key), as a Secret volume has.
            sources.append(
                SecretsSettingsSource(
                    settings_cls, secrets_dir=secrets_dir, case_sensitive=False, env_prefix=""
                )
            )
        env_file = os.environ.get(ENV_PREFIX + "ENV_FILE")
        if env_file:
            if not Path(env_file).is_file():
                raise ConfigurationError(
                    f"{ENV_PREFIX}ENV_FILE={env_file!r} is not a file", hint=_hint()
                )
            sources.append(
                DotEnvSettingsSource(
                    settings_cls,
                    env_file=env_file,
                    case_sensitive=False,
                    env_ignore_empty=True,
                )
            )
        return tuple(sources)


def _hint() -> str:
    from cigate.gateway.settings import SETTINGS_HINT

    return SETTINGS_HINT


@cache
def _model(settings_cls: type) -> type[_Sources]:
    """A ``BaseSettings`` with the dataclass's fields, types and defaults (plain types, not
    ``X | None``: pydantic-settings inspects unions slowly, 2 ms per read for 60 fields)."""
    spec: dict[str, Any] = {}
    for field in dataclasses.fields(settings_cls):
        kind = type(field.default)
        annotated: Any = Annotated[bool, BeforeValidator(_boolean)] if kind is bool else kind
        spec[field.name] = (annotated, field.default)
    return create_model(f"{settings_cls.__name__}Env", __base__=_Sources, **spec)


def read_settings(settings_cls: type) -> dict[str, Any]:
    """The values set in the environment, the secrets directory or the env file, converted."""
    if os.environ.get(ENV_PREFIX + "UNSCOPED"):
        raise ConfigurationError(
            "CIGATE_GATEWAY_UNSCOPED was replaced by CIGATE_GATEWAY_ALLOW_UNSCOPED",
            hint="Unscoped calls are refused by default now; to forward some for every "
            "tenant, name their families (CIGATE_GATEWAY_ALLOW_UNSCOPED=vector_stores) "
            "or '*' (the old 'forward').",
        )
    model = _model(settings_cls)
    try:
        parsed = model()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        kind = type(getattr(settings_cls, name))
        raise ConfigurationError(
            f"{ENV_PREFIX}{name.upper()}={error['input']!r} is not a valid {kind.__name__}",
            hint=_hint(),
        ) from None
    return {name: getattr(parsed, name) for name in parsed.model_fields_set}
