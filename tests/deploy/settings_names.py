"""The environment variables the gateway reads, for checks of deployment files."""

from __future__ import annotations

from dataclasses import fields

from cigate.gateway.env import FILE_FIELDS
from cigate.gateway.settings import GatewaySettings

#: Read by the CLI (``cigate gateway serve``), not by ``GatewaySettings``.
CLI_ONLY = {"CIGATE_GATEWAY_LOG_LEVEL", "CIGATE_GATEWAY_LOG_FORMAT"}
#: Where the settings themselves may come from (cigate.gateway.env).
SOURCES = {"CIGATE_GATEWAY_ENV_FILE"}


def real_setting_names() -> set[str]:
    """Every ``CIGATE_GATEWAY_*`` name that means something, ``_FILE`` forms included."""
    names = {f"CIGATE_GATEWAY_{f.name.upper()}" for f in fields(GatewaySettings)}
    names |= {f"CIGATE_GATEWAY_{n.upper()}_FILE" for n in FILE_FIELDS}
    return names | CLI_ONLY | SOURCES
