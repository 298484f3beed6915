"""Reading gateway settings from the environment with pydantic-settings.

The fields are :class:`~cigate.gateway.settings.GatewaySettings`' own (one source of truth): a
``BaseSettings`` model is derived from the dataclass, so a new setting needs no second entry here.
Sources, highest first: the CLI options (``from_env`` overrides), ``CIGATE_GATEWAY_*`` variables
or, for a credential, ``CIGATE_GATEWAY_<NAME>_FILE`` naming a file that holds it (a mounted
Kubernetes or compose secret; setting both is an error), a dotenv file at
``$CIGATE_GATEWAY_ENV_FILE``, the defaults. An empty value is unset. Any bad value is a
:class:`ConfigurationError` naming it, never a pydantic traceback.
"""

from __future__ import annotations

import dataclasses
import os
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cigate.exceptions import ConfigurationError
from cigate.gateway.settings import SETTINGS_HINT, read_secret_file

__all__ = ["ENV_PREFIX", "FILE_FIELDS", "read_settings"]

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
        # The env source pydantic-settings built from model_config (prefix, case, empty = unset).
        sources: list[PydanticBaseSettingsSource] = [env_settings, _CredentialFiles(settings_cls)]
        env_file = os.environ.get(ENV_PREFIX + "ENV_FILE")
        if env_file:
            if not Path(env_file).is_file():
                raise ConfigurationError(
                    f"{ENV_PREFIX}ENV_FILE={env_file!r} is not a file", hint=SETTINGS_HINT
                )
            sources.append(DotEnvSettingsSource(settings_cls, env_file=env_file))
        return tuple(sources)


#: Settings that may hold a credential: ``CIGATE_GATEWAY_<NAME>_FILE`` names a file holding the
#: value instead of the variable itself. The link secret has its own setting,
#: ``link_secret_file`` (checked in :mod:`cigate.gateway.links`).
FILE_FIELDS = frozenset(
    {
        "upstream_key",
        "database",
        "blobs",
        "metrics_token",
        "interpreter_upstream_key",
        "kernel_gateway_token",
    }
)


class _CredentialFiles(PydanticBaseSettingsSource):
    """``CIGATE_GATEWAY_<NAME>_FILE`` for the :data:`FILE_FIELDS`: the file's one line."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _from_file(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {name: _from_file(name) for name in sorted(FILE_FIELDS)}
        return {name: value for name, value in found.items() if value is not None}


def _from_file(name: str) -> str | None:
    """The value of ``name`` from ``CIGATE_GATEWAY_<NAME>_FILE`` when that is set."""
    variable = f"{ENV_PREFIX}{name.upper()}_FILE"
    path = os.environ.get(variable)
    if name not in FILE_FIELDS or not path:
        return None
    if os.environ.get(ENV_PREFIX + name.upper()):
        raise ConfigurationError(
            f"set {ENV_PREFIX}{name.upper()} or {variable}, not both", hint=SETTINGS_HINT
        )
    value = read_secret_file(Path(path), f"{variable}={path!r}")
    return value or None


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
            hint=SETTINGS_HINT,
        ) from None
    return {name: getattr(parsed, name) for name in parsed.model_fields_set}
