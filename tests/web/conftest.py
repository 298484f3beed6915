"""The upstream network backend is tested on both loops a gateway can be served on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    # cigate.gateway.app.SERVER_LOOP: what `cigate gateway serve` runs on.
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name == "test_netstream.py":
        return LOOPS
    return {"asyncio": LOOPS["asyncio"]}
