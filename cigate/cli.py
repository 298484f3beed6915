"""The ``cigate`` command: a thin click front end.

Noun groups (``emulator``, ``gateway``) live next to what they drive; client verbs (``run``,
``fetch``, ``ls``, ``demo``) live in ``cigate.commands``. Expected errors print one line and a hint,
never a traceback, and exit with the error class's status.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cigate.exceptions import CigateError


class CigateGroup(click.Group):
    """Renders ``CigateError`` as one line plus its hint and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CigateError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=CigateGroup)
@click.version_option(package_name="cigate")
def main() -> None:
    """Run code with the Code Interpreter of Azure OpenAI / OpenAI and keep every file it makes."""


def _register() -> None:
    from cigate.emulator.cli import emulator

    main.add_command(emulator)
    main.add_command(__import__("cigate.gateway.cli", fromlist=["gateway"]).gateway)
    try:  # client verbs arrive with the client library
        from cigate.commands import register
    except ImportError:
        return
    register(main)


_register()
