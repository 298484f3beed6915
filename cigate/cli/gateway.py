"""``cigate gateway``: serve the gateway, and manage its tenants.

Every option of ``serve`` is also an environment variable (``--upstream-key`` is
``CIGATE_GATEWAY_UPSTREAM_KEY``), so container deployments need no command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cigate.cli.serving import log_format_option, log_level_option
from cigate.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from cigate.storage.metadata import MetadataStore
    from cigate.storage.records import Tenant

T = TypeVar("T")

__all__ = ["gateway"]


def _env(name: str) -> str:
    return f"CIGATE_GATEWAY_{name.upper()}"


_DATABASE = click.option(
    "--database", envvar=_env("database"), help="Metadata store URL (default SQLite)."
)


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
@click.option("--port", envvar=_env("port"), type=int, help="Port (default 8080; 0: any free).")
@log_level_option(_env("log_level"))
@click.option(
    "--rewrite-links/--no-rewrite-links",
    envvar=_env("rewrite_links"),
    default=None,
    help="Rewrite sandbox: links in answers to gateway URLs.",
)
@click.option("--public-url", envvar=_env("public_url"), help="Base URL clients reach us at.")
@log_format_option(_env("log_format"))
@click.option(
    "--metrics/--no-metrics",
    envvar=_env("metrics"),
    default=None,
    help="Serve Prometheus metrics at GET /metrics (default: off).",
)
@click.option("--metrics-token", envvar=_env("metrics_token"), help="Bearer token for /metrics.")
@click.option(
    "--ready-check-upstream/--no-ready-check-upstream",
    envvar=_env("ready_check_upstream"),
    default=None,
    help="/readyz also checks the upstream credential (default: off).",
)
def serve(log_level: str, log_format: str, **options: Any) -> None:
    """Serve the gateway.

    The metadata store (its migrations applied) and the blob store are opened and checked
    before the gateway listens: a bad --database or --blobs, or a database that cannot be
    reached, is one line and a hint.

    Example: cigate gateway serve --upstream https://RES.openai.azure.com --upstream-key KEY
    """
    from cigate.cli.serving import serve_app
    from cigate.gateway.app import create_app

    settings = GatewaySettings.from_env(**options)
    app = create_app(settings)
    serve_app(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_format=log_format,
        access_log=False,  # the gateway writes its own (cigate.access, with the request id)
        banner=lambda root: [f"cigate gateway on {root} -> {settings.upstream}"],
        preflight=lambda: _check_stores(settings),
    )


async def _check_stores(settings: GatewaySettings) -> None:
    """Open both stores as the gateway will (migrations included) and check them, once."""
    from cigate.storage.blobs import open_blob_store
    from cigate.storage.metadata import MetadataStore

    meta = await MetadataStore.open(settings.database_url)
    try:
        await meta.check()
        blobs = open_blob_store(settings.blobs_url)
        try:
            await blobs.check()
        finally:
            await blobs.close()
    finally:
        await meta.close()


@gateway.group()
def tenant() -> None:
    """Manage tenants and their gateway keys."""


@tenant.command("add")
@click.argument("name")
@_DATABASE
def tenant_add(name: str, database: str | None) -> None:
    """Create tenant NAME (or reuse it) and print a new gateway key for it, once.

    Example: cigate gateway tenant add analytics
    """
    click.echo(_on_store(database, lambda meta: _add_tenant(meta, name)))


async def _add_tenant(meta: MetadataStore, name: str) -> str:
    tenant = await meta.tenant_by_name(name) or await meta.create_tenant(name)
    return await meta.add_key(tenant.id)


@tenant.command("list")
@_DATABASE
def tenant_list(database: str | None) -> None:
    """Print every tenant: name, id, creation time and how many keys are active.

    Example: cigate gateway tenant list
    """
    for line in _on_store(database, _tenant_lines):
        click.echo(line)


async def _tenant_lines(meta: MetadataStore) -> list[str]:
    lines = []
    for t in await meta.list_tenants():
        active = sum(k.revoked_at is None for k in await meta.list_keys(t.id))
        lines.append(f"{t.name}\t{t.id}\t{_when(t.created_at)}\t{active} active key(s)")
    return lines


@tenant.command("keys")
@click.argument("name")
@_DATABASE
def tenant_keys(name: str, database: str | None) -> None:
    """Print tenant NAME's keys: id, first characters, created, revoked (never the key itself).

    Example: cigate gateway tenant keys analytics
    """
    for line in _on_store(database, lambda meta: _key_lines(meta, name)):
        click.echo(line)


async def _key_lines(meta: MetadataStore, name: str) -> list[str]:
    tenant = await _existing_tenant(meta, name)
    return [
        f"{k.id}\t{k.prefix}…\t{_when(k.created_at)}\t"
        + (f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active")
        for k in await meta.list_keys(tenant.id)
    ]


@tenant.command("revoke")
@click.argument("name")
@click.argument("key_id")
@_DATABASE
def tenant_revoke(name: str, key_id: str, database: str | None) -> None:
    """Revoke tenant NAME's key KEY_ID (a key_… id from `tenant keys`).

    A running gateway stops accepting the key within its key cache's lifetime (10 s).

    Example: cigate gateway tenant revoke analytics key_0123456789abcdef01234567
    """
    _on_store(database, lambda meta: _revoke(meta, name, key_id))
    click.echo(f"revoked {key_id}")


async def _revoke(meta: MetadataStore, name: str, key_id: str) -> None:
    from cigate.exceptions import BadInputError

    tenant = await _existing_tenant(meta, name)
    if not await meta.revoke_key(tenant.id, key_id):
        raise BadInputError(
            f"tenant {name!r} has no active key {key_id!r}",
            hint=f"List its keys with `cigate gateway tenant keys {name}`.",
        )


def _on_store(database: str | None, job: Callable[[MetadataStore], Awaitable[T]]) -> T:
    """Run ``job`` on the gateway's metadata store (``--database`` or its default)."""
    from cigate.storage.metadata import MetadataStore

    url = GatewaySettings.from_env(database=database).database_url

    async def main() -> T:
        async with await MetadataStore.open(url) as meta:
            return await job(meta)

    return asyncio.run(main())


async def _existing_tenant(meta: MetadataStore, name: str) -> Tenant:
    from cigate.exceptions import BadInputError

    tenant = await meta.tenant_by_name(name)
    if tenant is None:
        raise BadInputError(
            f"no tenant named {name!r}", hint="List tenants with `cigate gateway tenant list`."
        )
    return tenant


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
