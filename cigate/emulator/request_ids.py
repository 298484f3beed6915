"""Every reply carries ``x-request-id`` and ``apim-request-id``, as Azure's do (api-reference 5.4).

The outermost middleware, so error bodies, injected faults and crashes are tagged too; the SDK
exposes ``x-request-id`` as ``error.request_id`` and gateways log both.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGION = "emulator"


class RequestIdMiddleware:
    """Adds ``x-request-id``, ``apim-request-id`` and ``x-ms-region`` to each HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in (
                    (b"x-request-id", request_id),
                    (b"apim-request-id", request_id),
                    (b"x-ms-region", REGION),
                ):
                    if name not in present:
                        headers.append((name, value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_ids)
