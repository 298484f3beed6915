"""``cigate gateway``: serve the gateway, and manage its tenants.

Every option of ``serve`` is also an environment variable (``--upstream-key`` is
``CIGATE_GATEWAY_UPSTREAM_KEY``), so container deployments need no command line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from cigate.gateway.settings import GatewaySettings

__all__ = ["gateway"]


def _env(name: str) -> str:
    return f"CIGATE_GATEWAY_{name.upper()}"


@click.group()
def gateway() -> None:
    """Run the gateway that keeps every Code Interpreter file (see docs/gateway.md)."""


@gateway.command()
@click.option("--upstream", envvar=_env("upstream"), help="Upstream base URL (Azure resource).")
@click.option(
    "--upstream-auth",
    envvar=_env("upstream_auth"),
    type=click.Choice(["key", "entra", "none"]),
    help="How the gateway authenticates upstream (default: key).",
)
@click.option("--upstream-key", envvar=_env("upstream_key"), help="Upstream API key.")
@click.option("--database", envvar=_env("database"), help="Metadata store URL (default SQLite).")
@click.option("--blobs", envvar=_env("blobs"), help="Blob store: a path or azure://CONTAINER?...")
@click.option("--host", envvar=_env("host"), help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", envvar=_env("port"), type=int, help="Port (default 8080).")
@click.option(
    "--rewrite-links/--no-rewrite-links",
    envvar=_env("rewrite_links"),
    default=None,
    help="Rewrite sandbox: links in answers to gateway URLs.",
)
@click.option("--public-url", envvar=_env("public_url"), help="Base URL clients reach us at.")
def serve(**options: Any) -> None:
    """Serve the gateway.

    Example: cigate gateway serve --upstream https://RES.openai.azure.com --upstream-key KEY
    """
    import uvicorn

    from cigate.gateway.app import create_app

    settings = GatewaySettings.from_env(**options)
    app = create_app(settings)
    click.echo(f"cigate gateway on http://{settings.host}:{settings.port} -> {settings.upstream}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


@gateway.group()
def tenant() -> None:
    """Manage tenants and their gateway keys."""


@tenant.command("add")
@click.argument("name")
@click.option("--database", envvar=_env("database"), help="Metadata store URL (default SQLite).")
def tenant_add(name: str, database: str | None) -> None:
    """Create tenant NAME (or reuse it) and print a new gateway key for it, once.

    Example: cigate gateway tenant add analytics
    """
    settings = GatewaySettings.from_env(database=database)
    key = asyncio.run(_add_tenant(settings.database_url, name))
    click.echo(key)


async def _add_tenant(url: str, name: str) -> str:
    from cigate.storage.metadata import MetadataStore

    async with await MetadataStore.open(url) as meta:
        tenant = await meta.tenant_by_name(name) or await meta.create_tenant(name)
        return await meta.add_key(tenant.id)
