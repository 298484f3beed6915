"""Generate ``docs/cli.md`` from the ``--help`` of every command.

The reference cannot drift from the code: ``python -m cigate.cli.docgen`` (``make docs``)
rewrites it, and a test fails when the committed file differs from what this module produces.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

__all__ = ["DOC_PATH", "generate", "main"]

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
WIDTH = 100
_HEADER = """# CLI reference

Generated from `--help` by `python -m cigate.cli.docgen` (`make docs`); do not edit by hand.
Settings and their environment variables: [configuration.md](configuration.md).
"""


def _walk(
    command: click.Command, name: str, parent: click.Context | None
) -> Iterator[tuple[str, str]]:
    settings = {"terminal_width": WIDTH, "max_content_width": WIDTH}
    # The command's own context settings (``-h`` for help) apply as they do on a real run.
    ctx = click.Context(
        command, info_name=name, parent=parent, **{**command.context_settings, **settings}
    )
    yield ctx.command_path, command.get_help(ctx)
    if isinstance(command, click.Group):
        for sub in sorted(command.list_commands(ctx)):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                yield from _walk(child, sub, ctx)


def generate() -> str:
    """The whole Markdown document."""
    from cigate.cli import main as root

    parts = [_HEADER]
    for path, text in _walk(root, "cigate", None):
        parts.append(f"\n## `{path}`\n\n```text\n{text.rstrip()}\n```\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md (or check it with ``--check``)."""
    args = sys.argv[1:] if argv is None else argv
    text = generate()
    if "--check" in args:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != text:
            print(f"{DOC_PATH} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
