"""Emulator settings: one frozen object, read once from options and ``CIGATE_EMULATOR_*``."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cigate.sandbox.limits import parse_size

#: ``EmulatorSettings`` fields passed on to ``SandboxSettings`` when set.
SANDBOX_FIELDS = (
    "memory_cap",
    "pids_max",
    "cpu_limit",
    "disk_quota",
    "tmp_size",
    "max_containers",
    "sandbox_uid",
)


@dataclass(frozen=True)
class EmulatorSettings:
    """Everything ``create_app`` needs; ``from_env`` fills it from the environment."""

    #: Keys accepted in ``api-key`` or ``Authorization: Bearer``; empty means one is generated.
    api_keys: tuple[str, ...] = ()
    #: Where containers' directories and uploaded files live.
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cigate-emu-")))
    #: Idle minutes before a container expires (the real service: 20).
    idle_minutes: int = 20
    #: Kernels kept warm in the pool.
    pool_size: int = 2
    #: "auto" (bubblewrap when available), "bwrap" or "none".
    isolation: str = "auto"
    #: Seconds one code cell may run before it is interrupted.
    exec_timeout: float = 60.0
    #: Seconds between sweeps that stop kernels of expired containers.
    reaper_interval: float = 5.0
    #: Deployment names accepted as ``model``; empty accepts any.
    deployments: tuple[str, ...] = ()
    #: Largest request body that is not a multipart upload (bytes): the gateway's JSON cap.
    max_json_body: int = 64 * 1024 * 1024
    #: Largest multipart upload request (bytes; OpenAI's per-file limit is 512 MB).
    max_upload_body: int = 512 * 1024 * 1024
    #: Sandbox limits (bytes, counts, cores); None keeps ``SandboxSettings``' default.
    #: The most memory a container gets, whatever ``memory_limit`` tier it asks for.
    memory_cap: int | None = None
    #: Processes and threads per container.
    pids_max: int | None = None
    #: CPU cores per container.
    cpu_limit: float | None = None
    #: Bytes of a container's /mnt/data.
    disk_quota: int | None = None
    #: Bytes of a container's /tmp.
    tmp_size: int | None = None
    #: Live containers (with a kernel) on this host; idle ones expire early at the cap.
    max_containers: int | None = None
    #: Host uid of sandboxed code when the emulator runs as root.
    sandbox_uid: int | None = None

    def __post_init__(self) -> None:
        if self.max_json_body < 1 or self.max_upload_body < 1:
            raise ValueError("max_json_body and max_upload_body must be at least 1 byte")
        if not self.api_keys:
            object.__setattr__(self, "api_keys", ("emu-" + secrets.token_urlsafe(24),))

    @property
    def api_key(self) -> str:
        """The first accepted key (the one printed at start-up)."""
        return self.api_keys[0]

    def sandbox_overrides(self) -> dict[str, Any]:
        """The sandbox limits set here (the rest keep ``SandboxSettings``' defaults)."""
        return {n: getattr(self, n) for n in SANDBOX_FIELDS if getattr(self, n) is not None}

    @classmethod
    def from_env(cls, **overrides: object) -> EmulatorSettings:
        """Settings from ``CIGATE_EMULATOR_*`` variables; explicit ``overrides`` win."""
        env = os.environ
        values: dict[str, object] = {}
        if key := env.get("CIGATE_EMULATOR_API_KEY"):
            values["api_keys"] = tuple(k.strip() for k in key.split(",") if k.strip())
        if data := env.get("CIGATE_EMULATOR_DATA_DIR"):
            values["data_dir"] = Path(data)
        for name, conv in (
            ("idle_minutes", int),
            ("pool_size", int),
            ("isolation", str),
            ("exec_timeout", float),
            ("max_json_body", int),
            ("max_upload_body", int),
            ("memory_cap", parse_size),
            ("pids_max", int),
            ("cpu_limit", float),
            ("disk_quota", parse_size),
            ("tmp_size", parse_size),
            ("max_containers", int),
            ("sandbox_uid", int),
        ):
            raw = env.get(f"CIGATE_EMULATOR_{name.upper()}")
            if raw:
                values[name] = conv(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
