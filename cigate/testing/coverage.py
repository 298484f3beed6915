"""Generate ``docs/emulator-coverage.md``: which SDK operations the emulator implements.

Operations come from the installed ``openai`` SDK (each resource method's HTTP call, read from
its source); "implemented" comes from the emulator app's own route table, matched per URL prefix,
never from a hand-written list. ``python -m cigate.testing.coverage`` rewrites the page;
``--check`` exits 1 when the committed page differs (a test runs that).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, Match, Mount

#: SDK resources the emulator is about, as attribute paths on ``OpenAI()``.
RESOURCES = (
    "responses",
    "responses.input_items",
    "conversations",
    "conversations.items",
    "containers",
    "containers.files",
    "containers.files.content",
    "files",
    "beta.assistants",
    "beta.threads",
    "beta.threads.messages",
    "beta.threads.runs",
    "beta.threads.runs.steps",
)
PREFIXES = (("/openai/v1", "Azure v1"), ("/openai", "Azure dated"), ("/v1", "OpenAI-style"))
#: ``self._post("/x", ...)``, ``resource._get(path_template("/x/{id}"...``,
#: ``partial(self._post, "/x"``
_HTTP_CALL = re.compile(
    r"\._(get_api_list|get|post|delete|patch|put)[(,]\s*(?:path_template\(\s*)?f?\"([^\"]+)\""
)
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "emulator-coverage.md"


@dataclass(frozen=True)
class Operation:
    """One SDK method: ``client.<resource>.<name>`` and its HTTP call (or the calls it wraps)."""

    resource: str
    name: str
    method: str | None
    path: str | None
    uses: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"client.{self.resource}.{self.name}"


def sdk_operations() -> list[Operation]:
    import openai

    client = openai.OpenAI(api_key="coverage", base_url="http://coverage.invalid/v1")
    found: list[Operation] = []
    for dotted in RESOURCES:
        resource: Any = client
        for part in dotted.split("."):
            resource = getattr(resource, part)
        found.extend(_operations_of(dotted, type(resource)))
    return found


def _operations_of(dotted: str, cls: type) -> list[Operation]:
    ops: list[Operation] = []
    helpers: list[tuple[int, str, list[str]]] = []
    for name, attribute in vars(cls).items():
        if name.startswith("_") or not inspect.isfunction(attribute):
            continue
        sources = _reachable_sources(inspect.unwrap(attribute))  # unwrap deprecation decorators
        call = _HTTP_CALL.search(sources[0]) or _HTTP_CALL.search("\n".join(sources[1:]))
        if call is not None:
            verb = "GET" if call.group(1) == "get_api_list" else call.group(1).upper()
            ops.append(Operation(dotted, name, verb, call.group(2)))
        else:
            helpers.append((len(ops), name, sources))
            ops.append(Operation(dotted, name, None, None))
    direct = [op.name for op in ops if op.method is not None]
    for index, name, sources in helpers:
        text = "\n".join(sources)
        uses = tuple(d for d in direct if re.search(rf"\.{d}\s*[(,)]", text))
        ops[index] = Operation(dotted, name, None, None, uses)
    return ops


def _reachable_sources(func: Any, depth: int = 3) -> list[str]:
    """The helper's source plus that of module functions it calls (the SDK delegates)."""
    seen: set[Any] = set()
    out: list[str] = []
    frontier = [func]
    for _ in range(depth):
        following = []
        for current in frontier:
            if current in seen:
                continue
            seen.add(current)
            source = inspect.getsource(inspect.unwrap(current))
            out.append(source)
            for called in re.findall(r"\b(\w+)\(", source):
                target = current.__globals__.get(called)
                if inspect.isfunction(target) and target.__module__.startswith("openai"):
                    following.append(target)
        frontier = following
    return out


def _mounts(routes: list[BaseRoute]) -> dict[str, Mount]:
    return {r.path: r for r in routes if isinstance(r, Mount)}


def _served(mount: Mount, method: str, template: str) -> bool:
    concrete = re.sub(r"\{[^}]+\}", "x1", template)
    scope = {"type": "http", "method": method, "path": concrete, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in mount.routes)


def render() -> str:
    from cigate.emulator.app import create_app
    from cigate.emulator.settings import EmulatorSettings

    app = create_app(EmulatorSettings(api_keys=("coverage",), data_dir=Path(tempfile.gettempdir())))
    mounts = _mounts(list(app.routes))
    ops = sdk_operations()
    direct = {(o.resource, o.name): o for o in ops if o.method is not None}
    lines = [
        "# Emulator coverage",
        "",
        "<!-- Generated by `python -m cigate.testing.coverage`; do not edit by hand. -->",
        "",
        f"Operations of the `openai` SDK {version('openai')} and whether the emulator serves them,",
        "per URL prefix (from the app's route table). Helpers (no HTTP call of their own) are",
        "implemented when every operation they use is.",
        "",
        "| SDK operation | HTTP | " + " | ".join(f"{label} `{p}`" for p, label in PREFIXES) + " |",
        "| --- | --- | " + " | ".join("---" for _ in PREFIXES) + " |",
    ]
    totals = dict.fromkeys((p for p, _ in PREFIXES), 0)
    for op in ops:
        if op.method is not None and op.path is not None:
            http = f"`{op.method} {op.path}`"
            cells = [_served(mounts[p], op.method, op.path) for p, _ in PREFIXES]
        else:
            wrapped = [direct[(op.resource, u)] for u in op.uses]
            http = (
                "helper over " + ", ".join(f"`{w.name}`" for w in wrapped)
                if wrapped
                else "no HTTP operation of its own (websocket or local helper)"
            )
            cells = [
                bool(wrapped)
                and all(_served(mounts[p], w.method or "", w.path or "") for w in wrapped)
                for p, _ in PREFIXES
            ]
        for (prefix, _), ok in zip(PREFIXES, cells, strict=True):
            totals[prefix] += ok
        marks = " | ".join("yes" if ok else "—" for ok in cells)
        lines.append(f"| `{op.label}` | {http} | {marks} |")
    lines += [
        "",
        f"{len(ops)} SDK operations; implemented: "
        + ", ".join(f"{totals[p]} on `{p}`" for p, _ in PREFIXES)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    page = render()
    current = args.output.read_text() if args.output.is_file() else ""
    if args.check:
        if current != page:
            print(
                f"{args.output} is out of date: run python -m cigate.testing.coverage",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
