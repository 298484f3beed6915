"""Sizes, the per-container limits a spawn carries, and the report of what is enforced.

A limit the kernel cannot enforce with the preferred mechanism falls back to the next best one
and the report says which (``Enforcement``); nothing runs "silently" without a limit: the pool
logs one line per limit at start-up, and the emulator shows the same dictionary in
``GET /_emulator/status`` and in ``cigate emulator serve``'s start-up lines.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """``"2g"``, ``"512m"``, ``"1.5GiB"``, ``"4096"`` or an int -> bytes (binary units)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m, 2g)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def format_size(size: int) -> str:
    """Bytes as the shortest exact binary unit: ``1073741824`` -> ``"1 GiB"``."""
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size} bytes"


@dataclass(frozen=True)
class Limits:
    """What one container may use (from ``SandboxSettings``; memory per container)."""

    memory: int
    pids: int
    cpu: float
    disk: int
    disk_inodes: int
    tmp: int
    tmp_inodes: int
    shm: int
    nofile: int


@dataclass
class Enforcement:
    """Which mechanism enforces each limit on this machine (filled by the pool at start)."""

    isolation: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def set(self, name: str, value: Any, mechanism: str, *, weak: str | None = None) -> None:
        """Record one limit; ``weak`` says what the fallback does not cover (logged)."""
        entry: dict[str, Any] = {"value": value, "mechanism": mechanism}
        if weak:
            entry["note"] = weak
            self.warnings.append(f"{name}: {mechanism} ({weak})")
        self.limits[name] = entry

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable, one limit per line (start-up log, CLI)."""
        out = []
        iso = self.isolation
        if iso:
            out.append("isolation: " + ", ".join(f"{k}={v}" for k, v in iso.items()))
        for name, entry in self.limits.items():
            value = entry["value"]
            shown = format_size(value) if isinstance(value, int) and value >= 1 << 20 else value
            note = f" ({entry['note']})" if "note" in entry else ""
            out.append(f"{name}: {shown} by {entry['mechanism']}{note}")
        return out
