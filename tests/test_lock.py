"""The locks pin, with hashes, every package make installs, and still satisfy pyproject.toml.

``requirements/dev.txt`` (tests, benchmarks, docs), ``requirements/demo.txt`` (``make demo``)
and ``requirements/gateway.txt`` (the gateway image) are produced by ``make lock`` (uv);
pyproject.toml keeps ranges for library users. Editing a range or adding a dependency without
re-locking fails here, not in CI on a fresh machine.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DISTRIBUTION = canonicalize_name(PYPROJECT["project"]["name"])
#: The interpreters and machines a fresh clone may meet (the lock is universal).
ENVIRONMENTS = [
    {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    for version in ("3.11", "3.12", "3.13")
    for machine in ("x86_64", "aarch64")
]
ENV_IDS = [f"py{e['python_version']}-{e['platform_machine']}" for e in ENVIRONMENTS]


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: int


def read_lock(path: Path) -> list[Pin]:
    """The pins of a requirements file written by ``uv pip compile --generate-hashes``."""
    pins: list[Pin] = []
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        first, *rest = entry.split("\n")
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first.rstrip(" \\"))
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{path.name}: {first} is not an exact pin"
        hashes = sum(line.strip().startswith("--hash=sha256:") for line in rest)
        name = canonicalize_name(requirement.name)
        pins.append(Pin(name, Version(spec.version), requirement.marker, hashes))
    return pins


def pins_for(pins: list[Pin], name: str, env: dict[str, str]) -> list[Pin]:
    return [p for p in pins if p.name == name and (p.marker is None or p.marker.evaluate(env))]


def requirements(*extras: str) -> list[Requirement]:
    """The runtime requirements plus those of ``extras``, self-references expanded."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    out = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == DISTRIBUTION:
                todo += sorted(requirement.extras)
            else:
                out.append(requirement)
    return out


def build_requirements() -> list[Requirement]:
    lines = (ROOT / "requirements" / "build.in").read_text().splitlines()
    return [Requirement(x) for x in lines if x.strip() and not x.startswith("#")]


LOCKS = {
    "dev.txt": [*requirements("dev"), *build_requirements()],
    "demo.txt": [*requirements("emulator"), *build_requirements()],
    "gateway.txt": [*requirements("postgres", "azure"), *build_requirements()],
}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_is_exact_and_carries_hashes(lock: str) -> None:
    pins = read_lock(ROOT / "requirements" / lock)
    assert len(pins) > 20
    assert [p.name for p in pins if p.hashes == 0] == []


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=ENV_IDS)
@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_satisfies_every_range_in_pyproject(lock: str, env: dict[str, str]) -> None:
    pins = read_lock(ROOT / "requirements" / lock)
    problems = []
    for requirement in LOCKS[lock]:
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        found = pins_for(pins, canonicalize_name(requirement.name), env)
        if len(found) != 1:
            problems.append(f"{requirement}: {len(found)} pins")
        elif found[0].version not in requirement.specifier:
            problems.append(f"{requirement}: locked {found[0].version}")
    assert problems == [], "run `make lock`: " + "; ".join(problems)


@pytest.mark.parametrize("lock", ["demo.txt", "gateway.txt"], ids=["demo", "gateway-image"])
def test_the_demo_and_gateway_locks_are_the_dev_locks_versions(lock: str) -> None:
    # By name and version: a dev-only package can widen a shared dependency's marker in the dev
    # lock (jupyter-kernel-gateway: cffi, ptyprocess) without changing its version.
    dev = {(p.name, p.version) for p in read_lock(ROOT / "requirements/dev.txt")}
    subset = read_lock(ROOT / "requirements" / lock)
    assert [p.name for p in subset if (p.name, p.version) not in dev] == []


def test_the_makefile_installs_only_from_the_locks_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [line.strip() for line in makefile.splitlines() if "$(PIP_INSTALL)" in line]
    assert installs, "the Makefile no longer installs through $(PIP_INSTALL)"
    for line in installs:
        assert "--require-hashes -r $(LOCK_" in line or "--no-deps" in line, line
    assert "pip install --upgrade" not in (ROOT / "scripts" / "make-venv.sh").read_text()
