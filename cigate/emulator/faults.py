"""Scripted faults: rules that make chosen requests fail the ways Azure's do (api-reference 6.4).

A rule matches by method and path glob (``*`` = one path segment, ``**`` = anything) and then
either replaces the reply (``status`` and a ``body`` kind: OpenAI envelope, Azure envelope, empty,
plain text; or ``error_in_200``) or damages the real one (``latency_ms``,
``truncate_after_bytes``, ``drop_mid_body``, ``rate_bytes_per_s``). Damage is real at the socket
level under uvicorn: headers go out (with the full ``Content-Length`` when truncating), then
``FaultAbort`` is raised and the server aborts the connection. ``rate_bytes_per_s`` paces the
body the way a remote service and a WAN bound one connection: slices go to the socket and the
response sleeps on the event loop between them, so each connection has its own budget and a
loopback benchmark can stand in for a remote region. ``/_emulator/...`` is never faulted.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cigate.emulator.errors import AZURE_401_MESSAGE, AZURE_404_MESSAGE
from cigate.emulator.state import emulator_state
from cigate.engine.errors import BadRequestError

BODY_KINDS = ("openai", "azure", "empty", "text")
CONTROL_PREFIX = "/_emulator"
#: Header naming the fault rule that shaped a reply.
FAULT_HEADER = b"x-cigate-fault"

#: Azure's 500 wording (persistent 500 on container file content, agent-framework#7598).
AZURE_500_MESSAGE = (
    "The server had an error processing your request. Sorry about that! You can retry your "
    "request, or contact us through an Azure support request at: "
    "https://go.microsoft.com/fwlink/?linkid=2213926 if you keep seeing this error."
)
CHECKACCESS_MESSAGE = (
    "ApiId openai-api-2025-03-01-preview OperationId get-container not supported for CheckAccess."
)
_DEFAULT_MESSAGES = {
    400: "Bad request.",
    401: AZURE_401_MESSAGE,
    403: "Forbidden.",
    404: AZURE_404_MESSAGE,
    408: "The operation was timeout.",
    409: "Conflict.",
    429: "Rate limit is exceeded. Try again in 1 seconds.",
    500: AZURE_500_MESSAGE,
    502: "Bad gateway.",
    503: "The service is temporarily unable to process your request. Please try again later.",
    504: "Gateway timeout.",
}
_OPENAI_TYPES = {429: "requests", 401: "invalid_request_error"}


#: The integer fields of a rule and their ranges (``None`` is allowed where the field is).
_INT_RANGES: dict[str, tuple[int, int]] = {
    "status": (100, 599),
    "count": (0, 10**9),
    "latency_ms": (0, 600_000),
    "truncate_after_bytes": (0, 2**53),
    "rate_bytes_per_s": (1, 2**40),
}
_NULLABLE = {
    "method",
    "status",
    "message",
    "code",
    "count",
    "truncate_after_bytes",
    "rate_bytes_per_s",
}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")


def _check_field(name: str, value: object) -> None:
    """One field of a fault rule: its JSON type and range; 400 naming it otherwise."""
    if value is None and name in _NULLABLE:
        return
    if name in _INT_RANGES:
        low, high = _INT_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadRequestError(f"'{name}' must be an integer from {low} to {high}.", param=name)
    elif name == "probability":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise BadRequestError("'probability' must be between 0 and 1.", param=name)
    elif name in ("drop_mid_body", "error_in_200"):
        if not isinstance(value, bool):
            raise BadRequestError(f"'{name}' must be a boolean.", param=name)
    elif name == "headers":
        if not isinstance(value, dict) or not all(
            isinstance(v, str) and _TOKEN.match(k) and _header_value(v) for k, v in value.items()
        ):
            raise BadRequestError(
                "'headers' must be an object of header names to Latin-1 values without "
                "control characters.",
                param=name,
            )
    elif name == "method":
        if not isinstance(value, str) or not _TOKEN.match(value):
            raise BadRequestError("'method' must be an HTTP method.", param=name)
    elif not isinstance(value, str):  # path, body, message, code
        raise BadRequestError(f"'{name}' must be a string.", param=name)


def _header_value(value: str) -> bool:
    """A value a header can carry as it is: Latin-1, no control characters but tab."""
    return len(value) <= 8192 and all(
        ch == "\t" or (" " <= ch <= "~") or ("\xa0" <= ch <= "\xff") for ch in value
    )


class FaultAbort(Exception):
    """Raised mid-response so the server drops the connection (truncation, drops)."""


@dataclass
class FaultRule:
    """One scripted fault; see the module docstring and docs/emulator.md."""

    path: str
    method: str | None = None
    status: int | None = None
    body: str = "openai"
    message: str | None = None
    code: str | None = None
    count: int | None = None
    probability: float = 1.0
    latency_ms: int = 0
    truncate_after_bytes: int | None = None
    drop_mid_body: bool = False
    rate_bytes_per_s: int | None = None
    error_in_200: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    #: Set by the store.
    id: str = ""
    #: The switch that installed the rule, if any.
    switch: str | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        self._regex = glob_to_regex(self.path)

    @classmethod
    def from_json(cls, data: object) -> FaultRule:
        """Validate a control-plane request body into a rule (400 on anything odd).

        Every field is checked for its type and range here, so no value a client sends can
        fail later, when the rule fires on some other request.
        """
        if not isinstance(data, dict):
            raise BadRequestError("A fault rule must be a JSON object.")
        allowed = {f.name for f in fields(cls)} - {"id", "fired", "switch"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            shown = ", ".join(repr(name)[:80] for name in unknown[:10])
            raise BadRequestError(f"Unknown fault rule field(s): {shown}.")
        if not isinstance(data.get("path"), str) or not data["path"].startswith(("/", "*")):
            raise BadRequestError(
                "A fault rule needs a 'path' glob starting with '/'.", param="path"
            )
        if data.get("body", "openai") not in BODY_KINDS:
            raise BadRequestError(f"'body' must be one of {', '.join(BODY_KINDS)}.", param="body")
        for name, value in data.items():
            _check_field(name, value)
        return cls(**data)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self._regex.fullmatch(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def to_api(self) -> dict[str, Any]:
        data = asdict(self)
        data["remaining"] = None if self.count is None else max(self.count - self.fired, 0)
        return data

    def reply(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of a replacing fault."""
        status = self.status if self.status is not None else 500
        message = self.message or _DEFAULT_MESSAGES.get(status, f"Injected fault ({status}).")
        headers: dict[str, str] = {}
        if self.body == "openai":
            error_type = _OPENAI_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            )
            payload: bytes = json.dumps(
                {
                    "error": {
                        "message": message,
                        "type": error_type,
                        "param": None,
                        "code": self.code,
                    }
                }
            ).encode()
            headers["content-type"] = "application/json"
        elif self.body == "azure":
            code = self.code or str(status)
            payload = json.dumps({"error": {"code": code, "message": message}}).encode()
            headers["content-type"] = "application/json"
        elif self.body == "text":
            payload = message.encode()
            headers["content-type"] = "text/plain; charset=utf-8"
        else:
            payload = b""
        if self.error_in_200:
            status = 200
        headers.update({k.lower(): v for k, v in self.headers.items()})
        if status == 429:
            headers.update(_retry_headers(headers))
        headers["content-length"] = str(len(payload))
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        return status, raw, payload

    @property
    def replaces(self) -> bool:
        return self.status is not None or self.error_in_200


def _retry_headers(given: dict[str, str]) -> dict[str, str]:
    """``retry-after-ms`` and ``retry-after`` for a 429, consistent with whichever the rule set.

    The SDK reads ``retry-after-ms`` first, so a default beside a rule's own ``retry-after``
    would silently win (and a delay over 120 s, which the SDK refuses to wait for, would be
    retried at once). A rule's value is kept; the missing one is derived from it.
    """
    ms, seconds = given.get("retry-after-ms"), given.get("retry-after")
    if ms is None and seconds is None:
        return {"retry-after-ms": "100", "retry-after": "1"}
    try:
        if seconds is not None and ms is None:
            return {"retry-after-ms": str(round(float(seconds) * 1000))}
        if ms is not None and seconds is None:
            return {"retry-after": str(math.ceil(float(ms) / 1000))}
    except ValueError:  # an HTTP-date retry-after, or a deliberately malformed value
        pass
    return {}


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one path segment, ``**`` across segments."""
    out = []
    for part in re.split(r"(\*\*|\*)", pattern):
        if part == "**":
            out.append(".*")
        elif part == "*":
            out.append("[^/]*")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


#: Ready-made Azure download failures (api-reference 6.4); statuses where the sources state
#: none are our choice, documented in docs/emulator.md.
SWITCHES: dict[str, list[dict[str, Any]]] = {
    "download-404-empty": [
        {
            "method": "GET",
            "path": "**/containers/*/files/*/content",
            "status": 404,
            "body": "empty",
        },
        {"method": "GET", "path": "**/containers/*/files/*", "status": 404, "body": "empty"},
    ],
    "download-500": [
        {
            "method": "GET",
            "path": "**/containers/*/files/*/content",
            "status": 500,
            "body": "openai",
            "code": "server_error",
        },
    ],
    "checkaccess": [
        {
            "method": "GET",
            "path": "**/containers/*",
            "status": 403,
            "body": "text",
            "message": CHECKACCESS_MESSAGE,
        },
        {
            "method": "GET",
            "path": "**/containers/*/files/**",
            "status": 403,
            "body": "text",
            "message": CHECKACCESS_MESSAGE,
        },
    ],
    "list-timeout": [
        {
            "method": "GET",
            "path": "**/containers",
            "status": 408,
            "body": "azure",
            "code": "Timeout",
            "message": "The operation was timeout.",
        },
    ],
}


class FaultStore:
    """The active rules, in the order they were added (first match wins)."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._rules: dict[str, FaultRule] = {}
        self._rng = rng or random.Random()

    def add(self, rule: FaultRule) -> FaultRule:
        rule.id = "fault_" + uuid.uuid4().hex[:16]
        self._rules[rule.id] = rule
        return rule

    def switch(self, name: str) -> list[FaultRule]:
        if name not in SWITCHES:
            raise KeyError(name)
        rules = [FaultRule.from_json(dict(spec)) for spec in SWITCHES[name]]
        for rule in rules:
            rule.switch = name
            self.add(rule)
        return rules

    def list(self) -> list[FaultRule]:
        return list(self._rules.values())

    def remove(self, rule_id: str) -> bool:
        return self._rules.pop(rule_id, None) is not None

    def remove_switch(self, name: str) -> int:
        doomed = [r.id for r in self._rules.values() if r.switch == name]
        for rule_id in doomed:
            del self._rules[rule_id]
        return len(doomed)

    def reset(self) -> None:
        self._rules.clear()

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first live rule that matches and whose dice roll fires; counts the firing."""
        for rule in self._rules.values():
            if rule.exhausted or not rule.matches(method, path):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            rule.fired += 1
            return rule
        return None


class FaultMiddleware:
    """Applies the app's ``FaultStore`` before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        store = emulator_state(scope["app"]).faults
        rule = store.take(scope["method"], path)
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.latency_ms:
            await asyncio.sleep(rule.latency_ms / 1000)
        damaged = _damaging_send(_pacing_send(_tagging_send(send, rule), rule), rule)
        if rule.replaces:
            status, headers, body = rule.reply()
            await damaged({"type": "http.response.start", "status": status, "headers": headers})
            await damaged({"type": "http.response.body", "body": body, "more_body": False})
        else:
            await self.app(scope, receive, damaged)


def _tagging_send(send: Send, rule: FaultRule) -> Send:
    """Mark the reply with ``x-cigate-fault: <rule id>`` (test clients skip schema checks)."""

    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (FAULT_HEADER, rule.id.encode())]
            message = {**message, "headers": headers}
        await send(message)

    return tagged


#: Pacing granularity: about this many slices a second, at least 1 KiB and at most 256 KiB each,
#: so a paced body flows smoothly instead of in one burst per second.
_PACE_SLICES_PER_S = 50
_PACE_MIN_SLICE = 1024
_PACE_MAX_SLICE = 256 * 1024


def _pacing_send(send: Send, rule: FaultRule) -> Send:
    """Hold the body to ``rule.rate_bytes_per_s`` on this one connection.

    The clock starts when the body starts (time to first byte is ``latency_ms``'s job); each
    slice waits until ``start + (sent + len(slice)) / rate`` before it goes out, so by any moment
    ``t`` at most ``rate * t`` bytes have left and the last byte leaves at ``size / rate``,
    whatever the slice size or the event loop's jitter. Sleeping is per response, on the event
    loop, so concurrent connections are paced independently, as a remote service's are.
    """
    rate = rule.rate_bytes_per_s
    if not rate:
        return send
    size = min(max(rate // _PACE_SLICES_PER_S, _PACE_MIN_SLICE), _PACE_MAX_SLICE)
    loop = asyncio.get_running_loop()
    start: float | None = None
    sent = 0

    async def paced(message: Message) -> None:
        nonlocal start, sent
        body: bytes = message.get("body", b"") if message["type"] == "http.response.body" else b""
        if not body:
            await send(message)
            return
        if start is None:
            start = loop.time()
        more = message.get("more_body", False)
        view = memoryview(body)
        for offset in range(0, len(body), size):
            piece = bytes(view[offset : offset + size])
            sent += len(piece)
            delay = start + sent / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = offset + size >= len(body)
            await send({"type": "http.response.body", "body": piece, "more_body": more or not last})

    return paced


def _damaging_send(send: Send, rule: FaultRule) -> Send:
    """Wrap ``send`` to truncate or drop the body as the rule says."""
    if rule.truncate_after_bytes is None and not rule.drop_mid_body:
        return send
    sent = 0

    async def damaged(message: Message) -> None:
        nonlocal sent
        if message["type"] == "http.response.start" and rule.drop_mid_body:
            headers = [
                (k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"
            ]
            message = {**message, "headers": headers}
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        if rule.truncate_after_bytes is not None:
            room = rule.truncate_after_bytes - sent
            if len(body) >= room:
                if room > 0:
                    await send(
                        {"type": "http.response.body", "body": body[:room], "more_body": True}
                    )
                raise FaultAbort(
                    f"fault {rule.id}: truncated after {rule.truncate_after_bytes} bytes"
                )
        elif body:
            half = body[: max(len(body) // 2, 1)]
            await send({"type": "http.response.body", "body": half, "more_body": True})
            raise FaultAbort(f"fault {rule.id}: connection dropped mid-body")
        sent += len(body)
        await send(message)

    return damaged
