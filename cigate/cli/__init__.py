"""The ``cigate`` command: a thin click front end.

Client verbs (``run``, ``fetch``, ``ls``, ``demo``) live in :mod:`cigate.cli.client`, the noun
groups in :mod:`cigate.cli.emulator` and :mod:`cigate.cli.gateway`. Expected errors print one
line and a hint, never a traceback, and exit with the error class's status.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cigate.exceptions import CigateError, ConfigurationError

#: The distribution on the package index (``cigate`` there is somebody else's project).
DISTRIBUTION = "cigate-toolkit"
#: The extra each command needs beyond the client's core (``pip install cigate-toolkit``).
EXTRAS = {"gateway": "gateway", "emulator": "emulator", "demo": "emulator"}


def missing_extra(command: str | None, exc: ModuleNotFoundError) -> ConfigurationError:
    """A missing third-party module, explained as the extra that brings it."""
    extra = EXTRAS.get(command or "", "gateway,emulator")
    return ConfigurationError(
        f"`cigate {command}` needs the '{extra}' extra ({exc})",
        hint=f"pip install '{DISTRIBUTION}[{extra}]'",
    )


class CigateGroup(click.Group):
    """Renders ``CigateError`` as one line plus its hint and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except ModuleNotFoundError as exc:
                if (exc.name or "cigate").partition(".")[0] == "cigate":
                    raise  # our own package is broken: a bug, not a missing extra
                raise missing_extra(ctx.invoked_subcommand, exc) from exc
        except CigateError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=CigateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION)
def main() -> None:
    """Run code with the Code Interpreter of Azure OpenAI / OpenAI and keep every file it makes."""


def _unavailable(name: str, exc: ModuleNotFoundError) -> click.Command:
    """Stands in for a noun group whose extra is not installed: says which one, in one line."""

    def explain(args: tuple[str, ...]) -> None:
        raise missing_extra(name, exc)

    return click.Command(
        name,
        callback=explain,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"(needs the '{EXTRAS[name]}' extra: pip install '{DISTRIBUTION}[{EXTRAS[name]}]')",
        add_help_option=False,
    )


def _register() -> None:
    import importlib

    from cigate.cli.client import register

    register(main)  # the client verbs: the core installs everything they need
    for name in ("emulator", "gateway"):
        try:
            command = getattr(importlib.import_module(f"cigate.cli.{name}"), name)
        except ModuleNotFoundError as exc:
            if (exc.name or "cigate").partition(".")[0] == "cigate":
                raise
            command = _unavailable(name, exc)
        main.add_command(command, name)


_register()
