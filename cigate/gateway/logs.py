"""Structured logs: one format for every line, a request id on each, one access line per request.

:func:`configure_logging` installs one handler on the root logger (``--log-format text``: one
human line; ``json``: one JSON object per line) with a filter that adds the current request's
id (:data:`REQUEST_ID`, set by :mod:`cigate.gateway.observe`) to every record, also to lines
written by background work a request started (tasks inherit the context). ``-`` marks lines
outside any request.

The id comes from the client's ``x-request-id`` only when it is well formed
(:func:`incoming_request_id`: 1–128 of ``A-Z a-z 0-9 . _ : -``, first a letter or digit), so a
hostile value (CR/LF, quotes, escapes, megabytes) can neither forge a log line nor a header;
anything else gets a fresh id.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "ACCESS",
    "LOG_FORMATS",
    "REQUEST_ID",
    "UPSTREAM_STATE_KEY",
    "JsonFormatter",
    "RequestIdFilter",
    "configure_logging",
    "incoming_request_id",
    "new_request_id",
]

LOG_FORMATS = ("text", "json")
#: The current request's id ("-" outside a request).
REQUEST_ID: ContextVar[str] = ContextVar("cigate_request_id", default="-")
#: The access log: one line per request, written when its answer is complete.
ACCESS: Final = logging.getLogger("cigate.access")

_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged too.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "request_id", "taskName"}
)
#: The HTTP client's loggers (httpx2 logs each request at info).
_CLIENT_LOGGERS = ("httpx2", "httpcore2")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


#: Where a forwarding route leaves the name of the upstream that answered, in the request's
#: ``scope["state"]``, for the access line.
UPSTREAM_STATE_KEY = "cigate.upstream"


def new_request_id() -> str:
    return secrets.token_hex(12)


def incoming_request_id(value: bytes | None) -> str | None:
    """The client's ``x-request-id`` if it is well formed, else None (a new one is made)."""
    if value is None or len(value) > 128:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _WELL_FORMED.fullmatch(text) else None


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", REQUEST_ID.get()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=True)


def configure_logging(level: str = "info", fmt: str = "text") -> logging.Handler:
    """One stderr handler on the root logger in ``fmt``; uvicorn's loggers go through it."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level.upper())
    # The HTTP client's own line per upstream call ("HTTP Request: GET …") only at debug: the
    # access line, the upstream request id and the metrics already tell each call at info, and
    # under load the extra line per listing, record and download is CPU the relay needs.
    client_level = logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING
    for name in _CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(client_level)
    return handler
