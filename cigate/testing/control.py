"""``EmulatorControl``: the control plane (``/_emulator/...``) from Python.

Give it an ``httpx2.Client`` whose ``base_url`` is the emulator's root (what the pytest fixture's
``emulator.http_client()`` returns). The control plane needs no API key.
"""

from __future__ import annotations

from typing import Any

import httpx2


class EmulatorControl:
    """Reset state, move the clock, script faults."""

    def __init__(self, http_client: httpx2.Client) -> None:
        self.http = http_client

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, f"/_emulator/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Every backend's state, every fault and the clock back to the start."""
        self._call("POST", "reset")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's clock forward and reap containers that expired."""
        result: dict[str, Any] = self._call("POST", "clock/advance", {"seconds": seconds})
        return result

    def clock(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "clock")
        return result

    def add_fault(self, **rule: Any) -> str:
        """Install a fault rule (see docs/emulator.md); returns its id."""
        fault_id: str = self._call("POST", "faults", rule)["id"]
        return fault_id

    def faults(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", "faults")["data"]
        return data

    def remove_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"faults/{fault_id}")

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def switch(self, name: str) -> list[str]:
        """Turn on a ready-made Azure failure (``download-404-empty``, ``download-500``,
        ``checkaccess``, ``list-timeout``); returns the ids of the rules it installed."""
        return [rule["id"] for rule in self._call("POST", f"switches/{name}")["data"]]

    def switch_off(self, name: str) -> None:
        self._call("DELETE", f"switches/{name}")
