"""An HTTP/1.1 client that sends the request target byte for byte, as an attacker would.

Every real client normalises what it is given (httpx removes ``..`` segments, ``http.client``
refuses control characters), so none can test what a server does with the spellings it must
refuse. :class:`RawClient` writes the request line itself and parses the answer with
``http.client`` (length, chunked, keep-alive), reconnecting when the server closes.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RawClient", "RawResponse"]


@dataclass(frozen=True)
class RawResponse:
    status: int
    #: Lower-cased names; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """One keep-alive connection to ``host:port`` (reopened as needed); not thread-safe."""

    def __init__(self, host: str, port: int, *, timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def request(
        self,
        method: str,
        target: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> RawResponse:
        """Send ``method target HTTP/1.1`` with ``target`` exactly as given."""
        lines = [method.encode("ascii") + b" " + target + b" HTTP/1.1"]
        given = {k.lower(): v for k, v in (headers or {}).items()}
        given.setdefault("host", f"{self.host}:{self.port}")
        if body or method in ("POST", "PUT", "PATCH"):
            given["content-length"] = str(len(body))
        lines += [f"{k}: {v}".encode("latin-1") for k, v in given.items()]
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        for attempt in (1, 2):
            sock = self._connect()
            try:
                sock.sendall(data)
                answer = http.client.HTTPResponse(sock, method=method)
                answer.begin()
                content = answer.read()
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
                continue  # a keep-alive connection the server had closed: once more
            if answer.will_close:
                self.close()
            return RawResponse(
                answer.status, {k.lower(): v for k, v in answer.getheaders()}, content
            )
        raise AssertionError("unreachable")

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
