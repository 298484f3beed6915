"""``cigate gateway``: serve the gateway, and manage its tenants.

Every option of ``serve`` is also an environment variable (``--upstream-key`` is
``CIGATE_GATEWAY_UPSTREAM_KEY``), so container deployments need no command line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from cigate.cli.serving import log_format_option, log_level_option, tls_options
from cigate.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from cigate.storage.blobs import BlobStore
    from cigate.storage.metadata import MetadataStore
    from cigate.storage.records import Tenant

T = TypeVar("T")

__all__ = ["gateway"]


def _env(name: str) -> str:
    return f"CIGATE_GATEWAY_{name.upper()}"


_DATABASE = click.option(
    "--database", envvar=_env("database"), help="Metadata store URL (default SQLite)."
)
_BLOBS = click.option(
    "--blobs", envvar=_env("blobs"), help="Blob store: a path or azure://CONTAINER?..."
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
@click.option(
    "--upstreams-file",
    envvar=_env("upstreams_file"),
    help="TOML/JSON file listing several upstreams (instead of --upstream).",
)
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
@click.option(
    "--code-interpreter",
    envvar=_env("code_interpreter"),
    type=click.Choice(["upstream", "self"]),
    help="Who runs code_interpreter: the provider (default) or this gateway's sandboxes.",
)
@log_format_option(_env("log_format"))
@click.option(
    "--metrics/--no-metrics",
    envvar=_env("metrics"),
    default=None,
    help="Serve Prometheus metrics at GET /metrics (default: off).",
)
@click.option("--metrics-token", envvar=_env("metrics_token"), help="Bearer token for /metrics.")
@click.option(
    "--metrics-port",
    envvar=_env("metrics_port"),
    type=int,
    help="Serve /metrics (and /healthz) on this port only, not on --port (turns metrics on).",
)
@click.option(
    "--ready-check-upstream/--no-ready-check-upstream",
    envvar=_env("ready_check_upstream"),
    default=None,
    help="/readyz also checks the upstream credential (default: off).",
)
@click.option(
    "--migrate/--no-migrate",
    envvar=_env("migrate"),
    default=None,
    help="Apply pending store migrations at start (default); --no-migrate: refuse to start "
    "unless the store is at this version (replicas after `cigate gateway migrate`).",
)
@click.option(
    "--link-secret-file",
    envvar=_env("link_secret_file"),
    help="File holding the link secret every replica shares (a mounted Secret).",
)
@tls_options
def serve(
    log_level: str,
    log_format: str,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    **options: Any,
) -> None:
    """Serve the gateway.

    The metadata store (its migrations applied) and the blob store are opened and checked
    before the gateway listens: a bad --database or --blobs, or a database that cannot be
    reached, is one line and a hint.

    Example: cigate gateway serve --upstream https://RES.openai.azure.com --upstream-key KEY
    """
    from cigate.cli.serving import serve_app
    from cigate.gateway.app import SERVER_LOOP, create_app

    settings = GatewaySettings.from_env(**options)
    if sys.platform != "win32":
        from cigate.sandbox.reaper import raise_nofile_limit

        # Every relayed stream is two open files (its client's and its upstream connection):
        # a host's usual soft limit of 1,024 would refuse connections long before the
        # upstream connection cap (CIGATE_GATEWAY_UPSTREAM_CONNECTIONS).
        raise_nofile_limit()
    app = create_app(settings, quiet_gc=True)
    serve_app(
        app,
        host=settings.host,
        port=settings.port,
        loop=SERVER_LOOP,
        log_level=log_level,
        log_format=log_format,
        access_log=False,  # the gateway writes its own (cigate.access, with the request id)
        banner=lambda root: (
            [f"cigate gateway on {root} -> {settings.upstream or settings.upstreams_file}"]
            + ([f"metrics on port {settings.metrics_port}"] if settings.metrics_port else [])
        ),
        preflight=lambda: _check_stores(settings),
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        extra_ports=(settings.metrics_port,) if settings.metrics_port else (),
    )


async def _check_stores(settings: GatewaySettings) -> None:
    """Open both stores as the gateway will (migrations included) and check them, once."""
    from cigate.gateway.links import load_link_secret
    from cigate.storage.blobs import open_blob_store
    from cigate.storage.metadata import MetadataStore

    load_link_secret(settings)  # a replica without the shared secret stops here
    meta = await MetadataStore.open(settings.database_url, migrate=settings.migrate)
    try:
        await meta.check()
        blobs = open_blob_store(settings.blobs_url)
        try:
            await blobs.check()
        finally:
            await blobs.close()
    finally:
        await meta.close()


@gateway.command()
@_DATABASE
def migrate(database: str | None) -> None:
    """Apply the metadata store's pending migrations, then exit (0: the store is current).

    Run it once per upgrade before the gateways start with --no-migrate (the Helm chart's
    migration Job, compose's migrate service). Safe to run twice or from several places.

    Example: cigate gateway migrate --database postgresql://cigate@db/cigate
    """
    from cigate.storage.metadata import MetadataStore

    url = GatewaySettings.from_env(database=database).database_url
    before, applied = asyncio.run(MetadataStore.migrate(url))
    if applied:
        click.echo(
            f"migrated the metadata store from schema version {before.current} to "
            f"{before.newest} (applied {', '.join(map(str, applied))})"
        )
    else:
        click.echo(f"the metadata store is at schema version {before.newest}: nothing to do")


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


@tenant.command("limits")
@click.argument("name")
@click.option("--quota-bytes", help="Bytes of stored files the tenant may keep ('none': no limit).")
@click.option("--retention-days", help="Days the tenant's files are kept ('none': forever).")
@_DATABASE
def tenant_limits(
    name: str, quota_bytes: str | None, retention_days: str | None, database: str | None
) -> None:
    """Set (or show) tenant NAME's storage quota and retention period.

    Example: cigate gateway tenant limits analytics --quota-bytes 10000000000 --retention-days 90
    """
    quota, days = _limit(quota_bytes, "--quota-bytes"), _limit(retention_days, "--retention-days")
    click.echo(_on_store(database, lambda meta: _set_limits(meta, name, quota, days)))


def _limit(raw: str | None, option: str) -> int | Literal["keep"] | None:
    if raw is None:
        return "keep"
    if raw.lower() == "none":
        return None
    try:
        return int(raw)
    except ValueError:
        raise click.BadParameter(f"{raw!r} is not a number or 'none'", param_hint=option) from None


async def _set_limits(
    meta: MetadataStore, name: str, quota: int | Literal["keep"] | None, days: Any
) -> str:
    tenant = await _existing_tenant(meta, name)
    await meta.set_limits(tenant.id, quota_bytes=quota, retention_days=days)
    tenant = await _existing_tenant(meta, name)
    used = await meta.usage(tenant.id)
    return (
        f"{tenant.name}\tquota {tenant.quota_bytes if tenant.quota_bytes is not None else 'none'}"
        f" bytes ({used} used)\tretention "
        f"{tenant.retention_days if tenant.retention_days is not None else 'none'} days"
    )


@tenant.command("purge")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_DATABASE
@_BLOBS
def tenant_purge(name: str, yes: bool, database: str | None, blobs: str | None) -> None:
    """Erase everything tenant NAME stored: files (and blobs no other file uses), responses
    and keys. Its audit log, with one erase record per file, stays as the proof.

    Example: cigate gateway tenant purge analytics --yes
    """
    if not yes:
        click.confirm(f"Erase every file of tenant {name!r} and revoke its keys?", abort=True)
    count = _on_stores(database, blobs, lambda meta, store: _purge(meta, store, name))
    click.echo(f"purged {name}: {count} file(s) erased, keys revoked")


async def _purge(meta: MetadataStore, blobs: BlobStore, name: str) -> int:
    from cigate.gateway.erasure import purge_tenant

    tenant = await _existing_tenant(meta, name)
    return await purge_tenant(meta, blobs, tenant.id, actor="operator:purge")


@gateway.group()
def audit() -> None:
    """Read the audit log (downloads and erasures)."""


@audit.command("export")
@click.option("--tenant", "tenant_name", help="Only this tenant's records (default: all).")
@click.option("--after", type=int, help="Only records after this id (resume an export).")
@_DATABASE
def audit_export(tenant_name: str | None, after: int | None, database: str | None) -> None:
    """Print the audit log as JSON lines, oldest first.

    Example: cigate gateway audit export --tenant analytics > analytics-audit.jsonl
    """
    _on_store(database, lambda meta: _export(meta, tenant_name, after))


async def _export(meta: MetadataStore, tenant_name: str | None, after: int | None) -> None:
    from cigate.gateway.audit import audit_json

    tenant_id = (await _existing_tenant(meta, tenant_name)).id if tenant_name else None
    while records := await meta.audit_page(tenant_id, after=after, limit=1000):
        for record in records:
            click.echo(json.dumps(audit_json(record), ensure_ascii=False))
        after = records[-1].id


def _on_stores(
    database: str | None,
    blobs: str | None,
    job: Callable[[MetadataStore, BlobStore], Awaitable[T]],
) -> T:
    """Run ``job`` on the gateway's metadata and blob stores (options or their defaults)."""
    from cigate.storage.blobs import open_blob_store

    settings = GatewaySettings.from_env(database=database, blobs=blobs)

    async def main(meta: MetadataStore) -> T:
        store = open_blob_store(settings.blobs_url)
        try:
            return await job(meta, store)
        finally:
            await store.close()

    return _on_store(settings.database_url, main)


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
