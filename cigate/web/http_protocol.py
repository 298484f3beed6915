"""The protocols every server of ours runs under uvicorn: h11, named, never ``auto``, and no
WebSocket protocol (no server of ours has a WebSocket route; the edge's checks are written for
HTTP).

Why it is named: uvicorn's default (``auto``) takes ``httptools`` whenever it is installed
(``uvicorn[standard]`` installs it), so what else a deployment installed chose the parser.
uvicorn's ``httptools`` protocol hands an app only the path of a parsed URL: an absolute-form
target (``GET http://any-host/openai/v1/…``) arrived as ``/openai/v1/…`` and a fragment was cut
(``/a#/../b`` as ``/a``), past the canonical-path check (:mod:`cigate.web.paths`), which must
see the target as sent. Run against h11 on the same raw requests it also dropped the body of an
Upgrade request (h2c upgrades come with POSTs), appended trailer fields to the request's
headers, and served HTTP/0.9 and 2.0 request lines and ``Transfer-Encoding: identity, chunked``.

Why h11 and not a safe subclass of the ``httptools`` protocol: one was built and measured
(2026-12-05, docs/gateway.md, Performance) and gave no gain in ``bench/load.py``; the edge's
checks were written and attacked against what h11 hands an app.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HTTP_PROTOCOL", "SERVER_PROTOCOLS"]

#: uvicorn's name of the HTTP protocol every server of ours runs.
HTTP_PROTOCOL = "h11"
#: The keyword arguments of ``uvicorn.Config`` that say so, for every server of ours.
SERVER_PROTOCOLS: dict[str, Any] = {"http": HTTP_PROTOCOL, "ws": "none"}
