"""The layout tells the architecture, and the dependency direction of DESIGN.md holds.

``cli`` -> (``gateway``, ``emulator``, ``client``) -> (``engine``, ``harvest``, ``storage``,
``web``) -> (``sandbox``, ``exceptions``, ``clock``, ``ids``). The emulator and the gateway
never import each other (they meet in tests); the client and the gateway share ``harvest``,
never each other's modules. Checked on the source, so a new import that breaks it fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cigate"

#: part -> the parts of cigate it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "gateway": {"client", "emulator", "cli", "testing"},
    "emulator": {"client", "gateway", "cli", "testing"},
    "client": {"gateway", "emulator", "engine", "storage", "sandbox", "cli", "testing"},
    "harvest": {"client", "gateway", "emulator", "engine", "storage", "sandbox", "cli", "web"},
    "web": {"client", "gateway", "emulator", "engine", "storage", "sandbox", "cli"},
    "engine": {"client", "gateway", "emulator", "storage", "cli", "testing"},
    "storage": {"client", "gateway", "emulator", "engine", "sandbox", "cli", "harvest"},
    "sandbox": {"client", "gateway", "emulator", "engine", "storage", "cli", "harvest", "web"},
}


def imported_parts(path: Path) -> set[str]:
    """The top-level parts of cigate a module imports (``cigate.X...`` -> ``X``)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "cigate":
                names += [f"cigate.{alias.name}" for alias in node.names]
        parts |= {n.split(".")[1] for n in names if n.startswith("cigate.")}
    return parts


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_part_imports_only_what_is_below_it(part: str) -> None:
    broken = {
        str(path.relative_to(PACKAGE.parent)): sorted(imported_parts(path) & FORBIDDEN[part])
        for path in (PACKAGE / part).rglob("*.py")
    }
    assert {k: v for k, v in broken.items() if v} == {}


def test_every_part_of_the_design_is_one_folder() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == {
        "cli", "client", "emulator", "engine", "gateway", "harvest", "sandbox", "storage",
        "testing", "web",
    }  # fmt: skip
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "clock.py", "exceptions.py", "ids.py"]
