"""Run an ASGI app (the emulator, the gateway) from the command line, as users expect.

The socket is bound before anything is printed, so ``--port 0`` prints the port the system
chose and a port already in use is one clear line (not a traceback after a "listening" line);
``preflight`` (opening the stores, say) runs before that line too, so a bad setting fails
the command instead of the server's start-up.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import click

from cigate.exceptions import ConfigurationError

__all__ = ["bind", "log_format_option", "log_level_option", "serve_app", "url_root"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def log_level_option(envvar: str) -> Callable[[Any], Any]:
    """``--log-level`` for a server command (``info``: a line per request)."""
    return click.option(
        "--log-level",
        envvar=envvar,
        type=click.Choice(LOG_LEVELS),
        default="info",
        show_default=True,
        help="How much the server logs (info: a line per request).",
    )


def log_format_option(envvar: str) -> Callable[[Any], Any]:
    """``--log-format``: ``text`` (one human line) or ``json`` (one object per line)."""
    return click.option(
        "--log-format",
        envvar=envvar,
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Log lines as text or as JSON objects (each with the request id).",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``0``: any free port); refusals are one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        taken = exc.errno == errno.EADDRINUSE
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="Choose another --port (0 picks a free one)."
            if taken
            else "Check --host: it must be an address of this machine.",
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_root(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def serve_app(
    app: object,
    *,
    host: str,
    port: int,
    log_level: str,
    banner: Callable[[str], list[str]],
    preflight: Callable[[], Coroutine[Any, Any, None]] | None = None,
    log_format: str | None = None,
    access_log: bool = True,
) -> None:
    """Check, bind, print the banner (with the real port), then serve until Ctrl-C.

    With ``log_format``, every log line (uvicorn's too) goes through
    :func:`cigate.gateway.logs.configure_logging` in that format.
    """
    import uvicorn

    if preflight is not None:
        asyncio.run(preflight())
    sock = bind(host, port)
    for line in banner(url_root(host, sock.getsockname()[1])):
        click.echo(line)
    if log_format is None:
        config = uvicorn.Config(app, log_level=log_level, access_log=access_log)  # type: ignore[arg-type]
    else:
        from cigate.gateway.logs import configure_logging

        configure_logging(log_level, log_format)
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            log_level=log_level,
            log_config=None,
            access_log=access_log,
        )
    uvicorn.Server(config).run(sockets=[sock])
