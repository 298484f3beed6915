"""``cigate emulator serve``: run the Azure OpenAI emulator on a local port.

Prints the three base URLs and the key it accepts, then serves until interrupted.
"""

from __future__ import annotations

from pathlib import Path

import click

from cigate.cli.serving import log_level_option
from cigate.emulator.settings import EmulatorSettings


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
def serve(  # noqa: PLR0917 - one parameter per click option
    host: str,
    port: int,
    log_level: str,
    api_key: str | None,
    idle_minutes: int | None,
    pool_size: int | None,
    isolation: str | None,
    data_dir: Path | None,
) -> None:
    """Serve the emulator until Ctrl-C.

    Example: cigate emulator serve --port 8089 --api-key local-key
    """
    from cigate.cli.serving import serve_app
    from cigate.emulator.app import create_app

    keys = tuple(k.strip() for k in api_key.split(",") if k.strip()) if api_key else None
    settings = EmulatorSettings.from_env(
        api_keys=keys,
        idle_minutes=idle_minutes,
        pool_size=pool_size,
        isolation=isolation,
        data_dir=data_dir,
    )

    def banner(root: str) -> list[str]:
        return [
            f"Azure resource endpoint: {root}   (AzureOpenAI(azure_endpoint=...))",
            f"Azure v1 base URL:       {root}/openai/v1/",
            f"OpenAI-style base URL:   {root}/v1/",
            f"API key:                 {settings.api_key}",
            f"Control plane:           {root}/_emulator/ (no key; keep it on loopback)",
        ]

    serve_app(create_app(settings), host=host, port=port, log_level=log_level, banner=banner)
