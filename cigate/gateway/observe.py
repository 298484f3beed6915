"""The outermost layer of the gateway: request id, access line, metrics and the request span.

One plain ASGI middleware does all four so a request pays for one wrapper, and nothing per
chunk of a stream beyond one comparison. When the answer is complete it counts the request
under its route template (:func:`cigate.gateway.metrics.route_label`), writes one access line
(``cigate.access``) and ends the span. The answer carries the request id in ``x-request-id``;
an upstream's own ``x-request-id`` (OpenAI's, Azure's), relayed by pass-through routes, is
kept as ``x-upstream-request-id`` and in the access line, so both sides can be asked.

An exception no handler turned into an answer is logged with its traceback once, with the
request id, and answered with a 500 in the OpenAI envelope (:func:`internal_error`), never a
plain-text page.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.propagate import extract
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cigate.gateway import metrics
from cigate.gateway.errors import error_response
from cigate.gateway.logs import (
    ACCESS,
    REQUEST_ID,
    UPSTREAM_STATE_KEY,
    incoming_request_id,
    new_request_id,
)
from cigate.gateway.tracing import TRACER
from cigate.web.paths import shown

__all__ = ["ObserveMiddleware", "internal_error"]

log = logging.getLogger(__name__)

_REQUEST_ID = b"x-request-id"
_UPSTREAM_REQUEST_ID = b"x-upstream-request-id"


class ObserveMiddleware:
    """Request id, one access line, request metrics and (with a provider) the request span."""

    def __init__(self, app: ASGIApp, *, provider: TracerProvider | None = None) -> None:
        self.app = app
        self.tracer = provider.get_tracer("cigate.gateway") if provider is not None else None
        #: The labelled series of each (route, method, status) seen, so a request costs two
        #: dictionary lookups, not prometheus-client's label checks (bounded like the labels).
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming(scope) or new_request_id()
        rid_bytes = rid.encode("ascii")
        token = REQUEST_ID.set(rid)
        scope_token = metrics.SCOPE.set(scope)
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "upstream_id": None, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                headers = []
                for name, value in message.get("headers", ()):
                    if name.lower() == _REQUEST_ID:
                        state["upstream_id"] = value.decode("latin-1")
                        headers.append((_UPSTREAM_REQUEST_ID, value))
                    else:
                        headers.append((name, value))
                headers.append((_REQUEST_ID, rid_bytes))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if self.tracer is None:
                await self._answer(scope, receive, send_with_id, state)
            else:
                await self._traced(scope, receive, send_with_id, state, rid)
        finally:
            self._done(scope, state, time.perf_counter() - start)
            REQUEST_ID.reset(token)
            metrics.SCOPE.reset(scope_token)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any], rid: str
    ) -> None:
        assert self.tracer is not None
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in (b"traceparent", b"tracestate")
        }
        tracer_token = TRACER.set(self.tracer)
        method = metrics.method_label(scope["method"])
        try:
            with self.tracer.start_as_current_span(
                method,
                context=extract(carrier),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "cigate.request_id": rid},
            ) as current:
                try:
                    await self._answer(scope, receive, send, state)
                finally:
                    route = metrics.route_label(scope)
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
                    current.set_attribute("http.response.status_code", state["status"])
                    if state["status"] >= 500:
                        current.set_status(Status(StatusCode.ERROR))
        finally:
            TRACER.reset(tracer_token)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]
    ) -> None:
        """The app's answer; an exception before it started is logged once and answered
        with the OpenAI 500 (after it started, the connection must break off: re-raised)."""
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if state["started"]:
                raise
            log.error("unexpected error on %s %s", scope["method"], _path(scope), exc_info=exc)
            await internal_error()(scope, receive, send)

    def _done(self, scope: Scope, state: dict[str, Any], seconds: float) -> None:
        route = metrics.route_label(scope)
        method = metrics.method_label(scope["method"])
        status: int = state["status"]
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                metrics.REQUESTS.labels(route, method, metrics.status_label(status)),
                metrics.REQUEST_SECONDS.labels(route),
            )
        series[0].inc()
        series[1].observe(seconds)
        if ACCESS.isEnabledFor(logging.INFO):
            path = _path(scope)
            ACCESS.info(
                "%s %s %d %.1f ms",
                method,
                path,
                status,
                seconds * 1000,
                extra={
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "upstream_request_id": state["upstream_id"],
                    # The configured upstream that answered (cigate.gateway.affinity), if any.
                    "upstream": (scope.get("state") or {}).get(UPSTREAM_STATE_KEY),
                },
            )


def internal_error() -> Response:
    """The answer to a bug or an unmapped failure: the OpenAI 500, naming the request id."""
    return error_response(
        500,
        "The gateway failed on this request; its operator can find it in the log by "
        f"request id {REQUEST_ID.get()}.",
        type_="server_error",
        code="internal_error",
        headers=None,
    )


def _path(scope: Scope) -> str:
    """The path as sent, printable (a refused path may hold any byte)."""
    raw = scope.get("raw_path")
    return shown(raw if isinstance(raw, bytes) else str(scope.get("path", "")).encode(), 300)


def _incoming(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == _REQUEST_ID:
            return incoming_request_id(value)
    return None
