"""Run an ASGI app (the emulator, the gateway) from the command line, as users expect.

The socket is bound before anything is printed, so ``--port 0`` prints the port the system
chose and a port already in use is one clear line (not a traceback after a "listening" line);
``preflight`` (opening the stores, say) runs before that line too, so a bad setting fails
the command instead of the server's start-up.

TLS (``--ssl-certfile``/``--ssl-keyfile``, or ``CIGATE_SSL_CERTFILE``/``CIGATE_SSL_KEYFILE``)
is the same for both servers: the pair is loaded once before binding, so a missing file, a key
that does not match or half a pair is one line too, and the printed URLs say ``https``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import click

from cigate.exceptions import ConfigurationError
from cigate.web.listen import tcp_listener

__all__ = [
    "bind",
    "check_tls",
    "log_format_option",
    "log_level_option",
    "serve_app",
    "tls_options",
    "url_root",
]

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


def tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--ssl-certfile`` and ``--ssl-keyfile`` (PEM; env ``CIGATE_SSL_CERTFILE``/``…KEYFILE``)."""
    command = click.option(
        "--ssl-keyfile",
        envvar="CIGATE_SSL_KEYFILE",
        default=None,
        help="PEM private key of --ssl-certfile.",
    )(command)
    return click.option(
        "--ssl-certfile",
        envvar="CIGATE_SSL_CERTFILE",
        default=None,
        help="PEM certificate (chain) to serve HTTPS with; needs --ssl-keyfile.",
    )(command)


def check_tls(certfile: str | None, keyfile: str | None) -> bool:
    """True when TLS is asked for and the pair loads; a clear error for anything else."""
    if not certfile and not keyfile:
        return False
    if not certfile or not keyfile:
        raise ConfigurationError(
            "TLS needs both --ssl-certfile and --ssl-keyfile",
            hint="Give both (or CIGATE_SSL_CERTFILE and CIGATE_SSL_KEYFILE), or neither.",
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the TLS certificate {certfile} with key {keyfile}: "
            f"{getattr(exc, 'strerror', None) or exc}",
            hint="Both must be PEM files this user can read, and the key must match.",
        ) from exc
    return True


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
    try:
        sock = tcp_listener(host, port)
    except OSError as exc:
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


def url_root(host: str, port: int, *, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{'[' + host + ']' if ':' in host else host}:{port}"


def serve_app(
    app: object,
    *,
    host: str,
    port: int,
    loop: str,
    log_level: str,
    banner: Callable[[str], list[str]],
    preflight: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    log_format: str | None = None,
    access_log: bool = True,
    extra_ports: tuple[int, ...] = (),
) -> None:
    """Check, bind, print the banner (with the real port), then serve until Ctrl-C.

    ``loop`` is uvicorn's name of the event loop (each app's ``SERVER_LOOP``).
    ``extra_ports`` are more listeners of the same app (on ``host``); the app tells them
    apart by the local port of each connection (the gateway's ``--metrics-port``).

    With ``log_format``, every log line (uvicorn's too) goes through
    :func:`cigate.gateway.logs.configure_logging` in that format.
    """
    import uvicorn

    from cigate.web.http_protocol import SERVER_PROTOCOLS

    tls = check_tls(ssl_certfile, ssl_keyfile)
    if preflight is not None:
        asyncio.run(preflight())
    sock = bind(host, port)
    try:
        extra = [bind(host, p) for p in extra_ports]
    except ConfigurationError:
        sock.close()
        raise
    for line in banner(url_root(host, sock.getsockname()[1], tls=tls)):
        click.echo(line)
    if log_format is not None:
        from cigate.gateway.logs import configure_logging

        configure_logging(log_level, log_format)
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level=log_level,
        # With a format of ours, every line (uvicorn's too) goes through configure_logging.
        log_config=None if log_format is not None else uvicorn.config.LOGGING_CONFIG,
        access_log=access_log,
        loop=loop,
        # Named, never uvicorn's "auto": what is installed would decide (cigate.web.http_protocol).
        **SERVER_PROTOCOLS,
        ssl_certfile=ssl_certfile if tls else None,
        ssl_keyfile=ssl_keyfile if tls else None,
    )
    uvicorn.Server(config).run(sockets=[sock, *extra])
