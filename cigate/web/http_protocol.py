"""The HTTP/1.1 parser every server of ours runs under uvicorn, chosen here and nowhere else.

Why it is chosen explicitly: uvicorn's default (``auto``) takes ``httptools`` whenever it is
installed (``uvicorn[standard]`` installs it) and ``h11`` otherwise, and the two hand an app
different paths for one request target. ``h11`` hands over the target's bytes before ``?``;
uvicorn's ``httptools`` protocol parses the target as a URL and hands over only its path, so an
absolute-form target (``GET http://any-host/openai/v1/…``) arrived as ``/openai/v1/…`` and a
fragment was cut (``/a#/../b`` as ``/a``). The canonical-path check (:mod:`cigate.web.paths`)
must see what the client sent to refuse what another reader of the same bytes would route
elsewhere.

Why ``httptools`` at all: it parses (llhttp, in C) and frames each streamed chunk for less
than ``h11`` does, which matters when one process relays ~10,000 events a second
(``bench/load.py``, docs/gateway.md, Performance). :class:`ExactTargetProtocol` is uvicorn's
``httptools`` protocol with the scope's ``raw_path``, ``path`` and ``query_string`` taken
from the request target exactly as ``h11`` takes them. Where ``httptools`` is not installed
(it is in every lock of ours), :data:`HTTP_PROTOCOL` is ``h11``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

__all__ = ["HTTP_PROTOCOL"]

HTTP_PROTOCOL: type[asyncio.Protocol] | str

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn's h11 protocol already hands over the exact target
    HTTP_PROTOCOL = "h11"
else:

    class ExactTargetProtocol(HttpToolsProtocol):
        """uvicorn's ``httptools`` protocol; the app's path is the request target as sent, and
        what h11 refuses in a request's head is refused (400) before any app sees it."""

        #: After the head: a field llhttp reports now is a trailer, never a request header.
        _in_trailers = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_trailers = False

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._in_trailers:
                return  # uvicorn would append it to the headers the app is already reading
            if name.lower() == b"transfer-encoding":
                value = value.lower()  # as h11 hands it over
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_trailers = True
            # Checked before uvicorn starts the app: raising here is a parser error to
            # httptools, which uvicorn answers with a 400 and a closed connection.
            _check_head(self.parser.get_http_version(), self.headers)
            if self.parser.should_upgrade() and (
                self.parser.get_method() == b"CONNECT" or _has_body(self.headers)
            ):
                # llhttp hands what follows the head of CONNECT or an Upgrade request to the
                # new protocol: the app would read an empty body (h2c upgrades come with POSTs)
                # and uvicorn could close the connection before the answer's body is out.
                raise ValueError("no tunnel, and no body with a protocol switch")
            target = self.url
            raw_path, _, query_string = target.partition(b"?")
            path = unquote(raw_path.decode("ascii"))  # not ASCII: refused, as h11 does
            # uvicorn's own URL parsing is given "/" (it cannot fail on it); its result is
            # replaced below, before the app's task first runs.
            self.url = b"/"
            try:
                super().on_headers_complete()
            finally:
                self.url = target
            self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
            self.scope["path"] = self.root_path + path
            self.scope["query_string"] = query_string

    def _check_head(version: str, headers: list[tuple[bytes, bytes]]) -> None:
        """Raise for a request head h11 refuses and llhttp lets through: another HTTP version
        than 1.0 or 1.1, an HTTP/1.1 request without exactly one ``Host`` (more than one in
        1.0), and a ``Transfer-Encoding`` other than one ``chunked`` (``identity, chunked``:
        the body's framing is what request smuggling plays on)."""
        if version not in ("1.0", "1.1"):
            raise ValueError(f"HTTP/{version} is not served")
        hosts = sum(1 for name, _ in headers if name == b"host")
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise ValueError("an HTTP/1.1 request needs exactly one Host header")
        codings = [value for name, value in headers if name == b"transfer-encoding"]
        if codings and codings != [b"chunked"]:
            raise ValueError("the only transfer coding served is one 'chunked'")

    def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
        return any(
            name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0"))
            for name, value in headers
        )

    HTTP_PROTOCOL = ExactTargetProtocol
