"""The control plane ``/_emulator/...``: reset, clock, faults and switches (no API key).

Tests and the demo drive the emulator's hidden state through here instead of sleeping or
monkeypatching; ``/_emulator/identity/token`` is a managed-identity endpoint for
azure-identity. It needs no key, so bind the emulator to loopback (the CLI's default). Handlers
only parse and serialise: state lives in the backends, the clock and the ``FaultStore``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate.clock import Clock
from cigate.emulator.auth import make_test_jwt
from cigate.emulator.bodies import json_object
from cigate.emulator.faults import SWITCHES, FaultRule, FaultStore
from cigate.emulator.state import backends, emulator_state
from cigate.engine.errors import ApiError, BadRequestError, NotFoundError

log = logging.getLogger(__name__)
_TOKEN_LIFETIME = 3600.0


async def _json(request: Request) -> dict[str, Any]:
    return await json_object(request, empty={})


def _faults(request: Request) -> FaultStore:
    return emulator_state(request.app).faults


async def reset(request: Request) -> Response:
    await emulator_state(request.app).reset()
    return JSONResponse({"reset": True})


def _clock_body(clock: Clock) -> dict[str, float]:
    return {"now": clock.now(), "offset": clock.offset}


async def get_clock(request: Request) -> Response:
    return JSONResponse(_clock_body(backends(request).clock))


async def advance_clock(request: Request) -> Response:
    body = await _json(request)
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise BadRequestError("'seconds' must be a number >= 0.", param="seconds")
    running = backends(request)
    running.clock.advance(float(seconds))
    expired = await running.containers.reap_expired()
    return JSONResponse({**_clock_body(running.clock), "expired_containers": expired})


async def add_fault(request: Request) -> Response:
    rule = _faults(request).add(FaultRule.from_json(await _json(request)))
    log.info("fault %s added: %s %s", rule.id, rule.method or "*", rule.path)
    return JSONResponse(rule.to_api())


async def list_faults(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [r.to_api() for r in _faults(request).list()]})


async def clear_faults(request: Request) -> Response:
    _faults(request).reset()
    return JSONResponse({"deleted": True})


async def delete_fault(request: Request) -> Response:
    fault_id = request.path_params["fault_id"]
    if not _faults(request).remove(fault_id):
        raise NotFoundError(f"No fault rule with id '{fault_id}'.", param="fault_id")
    return JSONResponse({"id": fault_id, "deleted": True})


async def switch_on(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        rules = _faults(request).switch(name)
    except KeyError:
        raise ApiError(404, f"Unknown switch '{name}'. Known: {', '.join(SWITCHES)}.") from None
    return JSONResponse({"switch": name, "data": [r.to_api() for r in rules]})


async def switch_off(request: Request) -> Response:
    removed = _faults(request).remove_switch(request.path_params["name"])
    return JSONResponse({"switch": request.path_params["name"], "removed": removed})


async def identity_token(request: Request) -> Response:
    """A managed-identity token endpoint (App Service's protocol, ``api-version=2019-08-01``).

    With ``IDENTITY_ENDPOINT=<emulator>/_emulator/identity/token`` and any ``IDENTITY_HEADER``,
    azure-identity's ``ManagedIdentityCredential`` (and so ``DefaultAzureCredential``) gets
    tokens the emulator accepts: unsigned JWTs whose ``aud`` is the resource asked for.
    """
    if not request.headers.get("x-identity-header"):
        raise ApiError(400, "The X-IDENTITY-HEADER header is required.", code="bad_request")
    resource = request.query_params.get("resource", "")
    if not resource.startswith("https://"):
        raise BadRequestError("'resource' must be an https:// URI.", param="resource")
    resource = resource.removesuffix("/.default").rstrip("/")
    token = make_test_jwt(aud=resource, lifetime=_TOKEN_LIFETIME)
    expires_on = int(time.time() + _TOKEN_LIFETIME)
    return JSONResponse(
        {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": "00000000-0000-0000-0000-00000000c1a7",
        }
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def status(request: Request) -> Response:
    """What the sandbox enforces on this machine (and by which mechanism), and how full it is."""
    running = emulator_state(request.app).running
    sandbox = running.pool.status() if running is not None else None
    return JSONResponse({"status": "ok", "sandbox": sandbox})


async def readyz(request: Request) -> Response:
    """Ready when code can run: 200 with what the sandbox enforces (and by which mechanism, with
    its warnings about limits it could only approximate), else 503 saying why."""
    running = emulator_state(request.app).running
    if running is None:
        return JSONResponse({"status": "starting", "sandbox": None}, status_code=503)
    sandbox = running.pool.status()
    if sandbox.get("isolation", {}).get("mode") == "unavailable":
        return JSONResponse({"status": "no sandbox", "sandbox": sandbox}, status_code=503)
    return JSONResponse({"status": "ready", "sandbox": sandbox})


ROUTES: list[BaseRoute] = [
    Route("/health", health, methods=["GET"]),
    Route("/identity/token", identity_token, methods=["GET"]),
    Route("/status", status, methods=["GET"]),
    Route("/reset", reset, methods=["POST"]),
    Route("/clock", get_clock, methods=["GET"]),
    Route("/clock/advance", advance_clock, methods=["POST"]),
    Route("/faults", add_fault, methods=["POST"]),
    Route("/faults", list_faults, methods=["GET"]),
    Route("/faults", clear_faults, methods=["DELETE"]),
    Route("/faults/{fault_id}", delete_fault, methods=["DELETE"]),
    Route("/switches/{name}", switch_on, methods=["POST"]),
    Route("/switches/{name}", switch_off, methods=["DELETE"]),
]
