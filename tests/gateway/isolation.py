"""Attack cases generated from the gateway's route table, and the rule that says what leaked.

:func:`cases` walks the running app's routes: every path template is filled with tenant A's
real ids (consistent pairs: a container with its own file), every API prefix gets its
``api-version`` where the dated form needs one, POST-like verbs carry a body naming A's objects
(a container to run code in, a file to copy, an assistant to run), and each path is spelt the
canonical way and every way :func:`cigate.testing.spellings.spellings` knows. Only the app's
routes and A's ids go in, so a new route is attacked without anyone writing a case for it.

:func:`leak` is the judgement for one answer to tenant B: A's secret bytes, an id of A's that
B did not send, or any success on a request that names A's objects, is a leak.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.routing import Route

from cigate.testing.rawhttp import RawResponse
from cigate.testing.spellings import spellings

#: Every verb, HEAD included (Starlette serves it with GET).
VERBS = ("GET", "HEAD", "OPTIONS", "PATCH", "PUT", "POST", "DELETE")
#: Verbs tried with each non-canonical spelling: read, write or run, delete. Past a canonical
#: edge the verb no longer matters; before one, these are the three kinds of harm.
SPELLING_VERBS = ("GET", "POST", "DELETE")
LEGACY_QUERY = "api-version=2025-04-01-preview"
#: The Foundry project the project-upstream world is made in, and its classic api-version.
PROJECT_NAME = "proj"
PROJECT_QUERY = "api-version=v1"
#: Filled project prefixes (the classic surface second: it is a prefix of the v1 one).
PROJECT_V1 = f"/api/projects/{PROJECT_NAME}/openai/v1"
PROJECT = f"/api/projects/{PROJECT_NAME}"
MODEL = "gpt-4.1"
#: Code B tries to run in A's container.
PWN_CELL = "open('/mnt/data/pwned-by-b.txt', 'w').write('b was here')"


@dataclass(frozen=True)
class World:
    """Tenant A's objects (ids by role), A's secret, and B's own objects for detours."""

    a: dict[str, str]
    secret: bytes
    b: dict[str, str]
    link_expires: int
    link_signature: str
    #: Whether the gateway's upstream is the Foundry project :data:`PROJECT_NAME` (project
    #: paths are served, the dated ``/openai`` form goes to a surface the emulator has not)
    #: or the resource (every project path is refused by the gateway's ProjectGate).
    project_upstream: bool = False

    @property
    def a_ids(self) -> set[bytes]:
        return {v.encode() for v in self.a.values()}


@dataclass(frozen=True)
class Case:
    method: str
    target: bytes
    spelling: str
    route: str
    body: bytes = b""
    #: A canonical GET of an object of A's that exists: A itself must get a 2xx.
    owner_reads: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def _bindings(route: str, w: World) -> list[dict[str, str]]:
    """Values for a template's parameters, from A's objects (consistent combinations)."""
    a = w.a
    params = set(re.findall(r"{(\w+)(?::\w+)?}", route))
    if not params:
        return [{}]
    if "container_id" in params and "file_id" in params:
        return [
            {"container_id": a["container"], "file_id": a["container_file"]},
            {"container_id": a["auto_container"], "file_id": a["generated_file"]},
            # B's own container, A's file: the check passes, the pair must still fail.
            {"container_id": w.b["container"], "file_id": a["container_file"]},
            {"container_id": w.b["container"], "file_id": a["generated_file"]},
        ]
    if "container_id" in params:
        rests = [{"rest": "anything"}] if "rest" in params else [{}]
        return [
            {"container_id": c, **r} for c in (a["container"], a["auto_container"]) for r in rests
        ]
    if "link_id" in params:
        return [{"file_id": a["gateway_file"], "link_id": a["link"]}]
    if "file_id" in params:
        ids = (a["gateway_file"], a["generated_file"], a["files_api_file"])
        if route.startswith(("/openai", "/v1", "/api/")):
            ids = (a["files_api_file"], a["gateway_file"], a["generated_file"])
        rests = [{"rest": "x"}] if "rest" in params else [{}]
        return [{"file_id": f, **r} for f in ids for r in rests]
    if "response_id" in params:
        if "path" in params:
            return [{"response_id": a["response"], "path": "a-gen.txt"}]
        if "sub" in params:
            return [{"response_id": a["response"], "sub": "input_items"}]
        return [{"response_id": a["response"]}]
    if "agent_name" in params:
        rests = [{"rest": r} for r in ("versions/1", "x")] if "rest" in params else [{}]
        return [{"agent_name": a["agent"], **r} for r in rests]
    if "conversation_id" in params:
        if "rest" not in params:
            return [{"conversation_id": a["conversation"]}]
        subs = ["items", f"items/{a['conversation_item']}"]
        return [
            {"conversation_id": c, "rest": r}
            for c in (a["conversation"], w.b["conversation"])
            for r in subs
        ]
    if "assistant_id" in params:
        return [{"assistant_id": a["assistant"], **({"rest": "x"} if "rest" in params else {})}]
    if "thread_id" in params:
        if "rest" not in params:
            return [{"thread_id": a["thread"]}]
        subs = [
            "messages",
            f"messages/{a['message']}",
            "runs",
            f"runs/{a['run']}",
            f"runs/{a['run']}/steps",
            f"runs/{a['run']}/steps/{a['step']}",
        ]
        # A's thread, and B's own thread with A's messages, runs and steps.
        return [{"thread_id": t, "rest": s} for t in (a["thread"], w.b["thread"]) for s in subs]
    if params == {"rest"}:  # the catch-all: A's objects under other and look-alike families
        return [
            {"rest": f"vector_stores/{a['files_api_file']}/files"},
            {"rest": f"made_up/{a['container']}"},
            {"rest": f"chat/completions/{a['response']}"},
            {"rest": f"Containers/{a['container']}/files/{a['container_file']}/content"},
            {"rest": f"FILES/{a['files_api_file']}/content"},
            {"rest": f"containers/{a['container']}/files/{a['container_file']}/content"},
            {"rest": f"files/{a['files_api_file']}/content"},
            {"rest": f"responses/{a['response']}/input_items"},
            {"rest": f"threads/{a['thread']}/messages"},
            {"rest": f"assistants/{a['assistant']}"},
            {"rest": f"conversations/{a['conversation']}/items"},
            {"rest": f"agents/{a['agent']}/versions"},
        ]
    raise AssertionError(f"no ids for route {route}: add its parameters to _bindings")


def _exists(route: str, path: str, prefix: str, rest: str, w: World) -> bool:
    """Whether a canonical read names something of A's that exists for A: not a sub-path the
    upstream does not know, not a container on Azure's dated surface (which has none) nor a
    container or response on a project's classic surface (nor has it), not a listing of
    threads (the API has none), not the signed-link route (its credential is the signature,
    not a key), not the catch-all (what it sees is refused for everyone), not a project path
    when the upstream is no project, nor the dated form when it is one."""
    family = rest.split("/", maxsplit=1)[0]
    return (
        not path.endswith(("/anything", "/x"))
        and route != f"{prefix}/{{rest:path}}"
        and not (prefix == "/openai" and family == "containers")
        and not (prefix == PROJECT and family in ("containers", "responses"))
        and rest not in ("threads", "conversations")
        and route != "/links/{link_id}"
        and (w.project_upstream or not prefix.startswith("/api/"))
        and not (w.project_upstream and prefix == "/openai")
    )


def _fill(route: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m.group(1)], route)


def _body(method: str, api_rest: str, w: World) -> dict[str, Any] | None:
    """What B sends with a write: whatever would use A's objects on that path."""
    if method not in ("POST", "PUT", "PATCH"):
        return None
    a = w.a
    parts = api_rest.split("/")
    if parts == ["responses"]:
        return {
            "model": MODEL,
            "input": f"Run this.\n```python\n{PWN_CELL}\n```\n",
            "tools": [{"type": "code_interpreter", "container": a["container"]}],
            "previous_response_id": a["response"],
        }
    if parts == ["containers"]:
        return {"name": "b", "file_ids": [a["files_api_file"]]}
    if len(parts) == 3 and parts[0] == "containers" and parts[2] == "files":
        return {"file_id": a["files_api_file"]}
    if parts == ["assistants"]:
        return {
            "model": MODEL,
            "tools": [{"type": "code_interpreter"}],
            "tool_resources": {"code_interpreter": {"file_ids": [a["files_api_file"]]}},
        }
    if parts == ["threads"]:
        return {
            "messages": [
                {
                    "role": "user",
                    "content": "x",
                    "attachments": [
                        {"file_id": a["files_api_file"], "tools": [{"type": "code_interpreter"}]}
                    ],
                }
            ]
        }
    if parts == ["threads", "runs"]:
        return {"assistant_id": a["assistant"]}
    if parts[:1] == ["agents"] and parts[-1:] in (["agents"], ["versions"]):
        tool = {
            "type": "code_interpreter",
            "container": {"type": "auto", "file_ids": [a["files_api_file"]]},
        }
        definition = {"kind": "prompt", "model": MODEL, "tools": [tool]}
        return {"name": "agent-b", "definition": definition}
    if parts == ["conversations"] or (
        len(parts) == 3 and parts[0] == "conversations" and parts[2] == "items"
    ):
        part = {"type": "input_file", "file_id": a["files_api_file"]}
        return {"items": [{"type": "message", "role": "user", "content": [part]}]}
    if len(parts) == 3 and parts[0] == "threads" and parts[2] == "messages":
        return {"role": "user", "content": "pwned-by-b"}
    if len(parts) == 3 and parts[0] == "threads" and parts[2] == "runs":
        return {"assistant_id": w.b["assistant"]}
    if parts[:1] == ["files"] and parts[-1:] == ["links"]:
        return {"expires_in": 60}
    return {"name": "pwned-by-b", "metadata": {"pwned": "b"}}


def _api_rest(path: str) -> tuple[str, str]:
    """(prefix, rest) of a filled path ("" prefix for the gateway's own routes)."""
    for prefix in (PROJECT_V1, PROJECT, "/openai/v1", "/v1", "/openai"):
        if path.startswith(prefix + "/"):
            return prefix, path[len(prefix) + 1 :]
    return "", path.lstrip("/")


def cases(routes: list[Any], w: World, *, every: int = 1) -> Iterator[Case]:
    """Every route x binding x spelling x verb, each (method, target, body) once.

    Canonical spellings are tried with every verb, the others with :data:`SPELLING_VERBS`.
    ``every`` > 1 keeps every ``every``-th non-canonical case (a sample; canonical ones stay).
    """
    seen: set[tuple[str, bytes, bytes]] = set()
    index = 0
    detours = [
        (w.b["container"], w.a["container"]),
        (w.b["container"], w.a["auto_container"]),
        (w.b["thread"], w.a["thread"]),
        (w.b["assistant"], w.a["assistant"]),
        (w.b["conversation"], w.a["conversation"]),
    ]
    for route in routes:
        # The operator's endpoints hold no tenant data (/metrics: test_observability.py).
        if not isinstance(route, Route) or route.path in ("/healthz", "/readyz", "/metrics"):
            continue
        template = route.path.replace("{project}", PROJECT_NAME)
        for values in _bindings(template, w):
            path = _fill(template, values)
            prefix, rest = _api_rest(path)
            query = {"/openai": LEGACY_QUERY, PROJECT: PROJECT_QUERY}.get(prefix, "")
            if route.path == "/links/{link_id}":
                queries = [
                    "",
                    f"expires={w.link_expires}&signature={'0' * 64}",
                    f"expires={w.link_expires + 1}&signature={w.link_signature}",
                ]
            elif route.path == "/files":  # the listing: cursors and filters naming A's
                queries = [
                    "",
                    f"after={w.a['gateway_file']}",
                    f"after={w.a['generated_file']}",
                    f"response_id={w.a['response']}",
                    f"container_id={w.a['auto_container']}",
                    f"container_id={w.a['container']}&order=asc",
                ]
            else:
                queries = [query]
            at = tuple(range(1, prefix.count("/") + 1)) if prefix else (1,)
            routed = set(route.methods or ()) | (
                {"HEAD"} if "GET" in (route.methods or ()) else set()
            )
            for q in queries:
                for spelling in spellings(
                    path, at=tuple(sorted(set(at))), query=q, detours=detours
                ):
                    verbs = VERBS if spelling.canonical else SPELLING_VERBS
                    for method in verbs:
                        body = _body(method, rest if prefix else path.lstrip("/"), w)
                        raw = json.dumps(body).encode() if body is not None else b""
                        key = (method, spelling.target, raw)
                        if key in seen:
                            continue
                        seen.add(key)
                        index += 1
                        if not spelling.canonical and index % every:
                            continue
                        yield Case(
                            method=method,
                            target=spelling.target,
                            spelling=spelling.name,
                            route=route.path,
                            body=raw,
                            owner_reads=spelling.canonical
                            and method in ("GET", "HEAD")
                            and method in routed
                            and not any(v in path for v in w.b.values())
                            and _exists(template, path, prefix, rest, w),
                            headers={"content-type": "application/json"} if raw else {},
                        )


def names_theirs(case: Case, w: World) -> set[bytes]:
    """A's ids that B's request itself names (in its target, escaped or not, or its body)."""
    decoded = unquote_to_bytes(case.target)
    return {i for i in w.a_ids if i in case.target or i in decoded or i in case.body}


def leak(case: Case, answer: RawResponse, w: World) -> str | None:
    """Why ``answer`` to B leaks something of A's, or None."""
    if w.secret in answer.body:
        return "A's secret bytes"
    learned = {i for i in w.a_ids if i in answer.body} - names_theirs(case, w)
    if learned:
        return f"A's ids {sorted(learned)}"
    if 200 <= answer.status < 300 and names_theirs(case, w):
        return f"{answer.status} on a request naming A's objects"
    return None
