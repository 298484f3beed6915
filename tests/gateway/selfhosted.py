"""Fixtures' helpers for the self-hosted interpreter: a gateway in ``self`` mode over the emulator.

The emulator is only the upstream *model* here (its scripted function-calling model); every
test can check that its own code interpreter stayed unused (:func:`emulator_ran_no_code`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from cigate.gateway.interpreter.service import Interpreter
from cigate.gateway.settings import GatewaySettings
from cigate.testing.plugin import RunningEmulator
from tests.gateway.live import LiveGateway

T = TypeVar("T")

AUTO: list[Any] = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def self_settings(base: GatewaySettings, tmp: Path, **over: Any) -> GatewaySettings:
    """``base`` in ``self`` mode: one warm kernel, the containers under ``tmp``."""
    values: dict[str, Any] = {
        "code_interpreter": "self",
        "interpreter_dir": str(tmp / "interpreter"),
        "interpreter_pool_size": 1,
        "interpreter_exec_timeout": 60.0,
        **over,
    }
    return replace(base, **values)


def interpreter(gateway: LiveGateway) -> Interpreter:
    svc = gateway.handle.app.state.services  # type: ignore[attr-defined]
    assert svc.interpreter is not None
    result: Interpreter = svc.interpreter
    return result


def emulator_ran_no_code(emulator: RunningEmulator) -> bool:
    """The emulator made no container: its code interpreter was never used."""
    return emulator.backends.containers.list() == []


def on_gateway(gateway: LiveGateway, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the gateway's own event loop (its stores and containers live there)."""
    return asyncio.run_coroutine_threadsafe(coro, gateway.handle.loop).result(120)
