"""``cigate emulator serve``: run the Azure OpenAI emulator on a local port.

Prints the base URLs and the key it accepts, then serves until interrupted. ``--tls`` serves
HTTPS with a throwaway local CA (:mod:`cigate.web.tls`) and prints how to trust it, since
azure-core (the Azure AI SDKs) sends bearer tokens over TLS only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from cigate.cli.serving import log_level_option, tls_options
from cigate.emulator.settings import EmulatorSettings
from cigate.sandbox.limits import parse_size


class _Size(click.ParamType[int]):
    """A size such as 512m, 2g or a number of bytes."""

    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = _Size()


def _show_sandbox_report() -> None:
    """The sandbox logs what it enforces (one line per limit, a warning per fallback) when it
    starts, before the first request: print those lines with the server's own."""
    sandbox_log = logging.getLogger("cigate.sandbox")
    if not any(getattr(h, "cigate_report", False) for h in sandbox_log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        handler.cigate_report = True  # type: ignore[attr-defined]
        sandbox_log.addHandler(handler)
    sandbox_log.setLevel(logging.INFO)


@click.group()
def emulator() -> None:
    """A local stand-in for Azure OpenAI's Responses, containers, files and code interpreter."""


@emulator.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind. The control plane needs no key: keep it on loopback.",
)
@click.option(
    "--port", default=8089, show_default=True, type=int, help="Port to listen on (0: any free)."
)
@log_level_option("CIGATE_EMULATOR_LOG_LEVEL")
@click.option(
    "--api-key",
    envvar="CIGATE_EMULATOR_API_KEY",
    default=None,
    help="Key clients must send (comma-separated for several); generated if unset.",
)
@click.option(
    "--idle-minutes",
    type=int,
    default=None,
    help="Idle minutes before a container expires [default: 20].",
)
@click.option("--pool-size", type=int, default=None, help="Warm kernels [default: 2].")
@click.option(
    "--isolation",
    type=click.Choice(["auto", "bwrap", "none"]),
    default=None,
    help="Kernel sandbox: bubblewrap when available (auto), forced, or none.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where containers and files live [default: a new temporary directory].",
)
@click.option(
    "--memory-cap",
    type=SIZE,
    default=None,
    help="Most memory a container gets, whatever tier it asks for [default: 4g].",
)
@click.option("--pids-max", type=int, default=None, help="Processes per container [default: 256].")
@click.option("--cpu-limit", type=float, default=None, help="CPU cores per container [default: 1].")
@click.option(
    "--disk-quota", type=SIZE, default=None, help="Size of a container's /mnt/data [default: 2g]."
)
@click.option(
    "--tmp-size", type=SIZE, default=None, help="Size of a container's /tmp [default: 1g]."
)
@click.option(
    "--max-containers",
    type=int,
    default=None,
    help="Live containers on this host; idle ones expire early at the cap [default: 128].",
)
@tls_options
@click.option(
    "--tls",
    "local_tls",
    is_flag=True,
    help="Serve HTTPS with a new local CA and certificate for 127.0.0.1/localhost; prints the "
    "CA and the variables that make the SDKs trust it.",
)
def serve(  # noqa: PLR0917 - one parameter per click option
    host: str,
    port: int,
    log_level: str,
    api_key: str | None,
    idle_minutes: int | None,
    pool_size: int | None,
    isolation: str | None,
    data_dir: Path | None,
    memory_cap: int | None,
    pids_max: int | None,
    cpu_limit: float | None,
    disk_quota: int | None,
    tmp_size: int | None,
    max_containers: int | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    local_tls: bool,
) -> None:
    """Serve the emulator until Ctrl-C.

    Prints what the sandbox enforces on this machine (and by which mechanism) once it started.

    Example: cigate emulator serve --port 8089 --api-key local-key
    """
    from cigate.cli.serving import serve_app
    from cigate.emulator.app import SERVER_LOOP, create_app
    from cigate.exceptions import ConfigurationError

    if local_tls and (ssl_certfile or ssl_keyfile):
        raise ConfigurationError(
            "--tls makes its own certificate: it cannot be combined with --ssl-certfile",
            hint="Drop --tls to serve your own certificate (or unset CIGATE_SSL_CERTFILE).",
        )

    keys = tuple(k.strip() for k in api_key.split(",") if k.strip()) if api_key else None
    settings = EmulatorSettings.from_env(
        api_keys=keys,
        idle_minutes=idle_minutes,
        pool_size=pool_size,
        isolation=isolation,
        data_dir=data_dir,
        memory_cap=memory_cap,
        pids_max=pids_max,
        cpu_limit=cpu_limit,
        disk_quota=disk_quota,
        tmp_size=tmp_size,
        max_containers=max_containers,
    )

    trust: list[str] = []
    if local_tls:
        from cigate.web.tls import make_local_tls

        made = make_local_tls(settings.data_dir / "tls")
        ssl_certfile, ssl_keyfile = str(made.certfile), str(made.keyfile)
        trust = [
            f"TLS CA certificate:      {made.ca}",
            "Trust it (CA + certifi): export "
            + " ".join(f"{name}={value}" for name, value in made.env().items()),
        ]

    def banner(root: str) -> list[str]:
        return [
            f"Azure resource endpoint: {root}   (AzureOpenAI(azure_endpoint=...))",
            f"Azure v1 base URL:       {root}/openai/v1/",
            f"OpenAI-style base URL:   {root}/v1/",
            f"Foundry project:         {root}/api/projects/PROJECT   (any PROJECT name)",
            f"API key:                 {settings.api_key}",
            f"Control plane:           {root}/_emulator/ (no key; keep it on loopback)",
            f"Sandbox status:          {root}/_emulator/status",
            *trust,
        ]

    _show_sandbox_report()
    serve_app(
        create_app(settings),
        host=host,
        port=port,
        loop=SERVER_LOOP,
        log_level=log_level,
        banner=banner,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
