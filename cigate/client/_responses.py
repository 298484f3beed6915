"""High level: run a code-interpreter request and keep every file it made.

The flow of DESIGN.md "Client run": resolve endpoint and credential, upload input files into a
container, call the Responses API with the ``code_interpreter`` tool (streaming by default), start
each download the moment its citation arrives while the stream goes on, then list the container
and fetch the files that were written but never cited. Progress goes to an observer, so the
library stays quiet and the CLI draws it. Each function has a sync twin for scripts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import openai

from cigate.client._config import ClientConfig, resolve_config
from cigate.client._download import Downloader, DownloadObserver, QuietDownloadObserver
from cigate.client._results import DownloadResult, Harvest, RunResult
from cigate.client._sync import run_sync
from cigate.exceptions import (
    BadInputError,
    CigateError,
    ConfigurationError,
    UpstreamUnavailableError,
)
from cigate.harvest import classify
from cigate.harvest.refs import (
    FileRef,
    RefCollector,
    find_files,
    rewrite_sandbox_links,
    to_jsonable,
)

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI

__all__ = [
    "RunObserver",
    "adownload",
    "afetch_response",
    "alist_files",
    "arun",
    "download",
    "fetch_response",
    "list_files",
    "run",
]

STEPS = 5
#: The ``include`` value that returns a call's logs and displayed images in ``outputs``.
DISPLAYED_OUTPUTS = "code_interpreter_call.outputs"
DEFAULT_INSTRUCTIONS = (
    "You are a helpful data analyst. Use the python tool for calculations and save every file "
    "you make under /mnt/data."
)


class RunObserver(DownloadObserver, Protocol):
    """Progress of a run: numbered steps, the code as it streams, downloads, warnings."""

    def step(self, number: int, total: int, text: str) -> None: ...
    def code_delta(self, item_id: str, delta: str) -> None: ...
    def code_done(self, item_id: str, code: str) -> None: ...
    def warning(self, text: str) -> None: ...


class QuietObserver(QuietDownloadObserver):
    """Observes nothing (the library default)."""

    def step(self, number: int, total: int, text: str) -> None:
        pass

    def code_delta(self, item_id: str, delta: str) -> None:
        pass

    def code_done(self, item_id: str, code: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass


def default_observer() -> RunObserver:
    """Live progress in a Jupyter notebook; silence anywhere else (the library default)."""
    from cigate.client._notebook import NotebookObserver, in_notebook

    return NotebookObserver() if in_notebook() else QuietObserver()


def prepare(
    config: ClientConfig | None,
    observer: RunObserver | None,
    model: str | None,
    files: Iterable[str | Path],
    *,
    model_required: bool,
    api: str = "",
) -> tuple[ClientConfig, RunObserver, str | None, list[Path]]:
    """What every run checks before it calls anything: settings, model, input files; step 1."""
    config = config or resolve_config()
    obs: RunObserver = observer or default_observer()
    model = model or config.model
    if not model and model_required:
        raise ConfigurationError(
            "no model (deployment) is set",
            hint="Pass --model DEPLOYMENT or set AOAI_DEPLOYMENT (or CIGATE_MODEL).",
        )
    inputs = [Path(f) for f in files]
    for path in inputs:
        if not path.is_file():
            raise BadInputError(f"input file not found: {path}")
    auth = "API key" if config.api_key else f"Microsoft Entra ID ({config.scope})"
    obs.step(1, STEPS, f"Endpoint {config.base_url} with {auth}{api}")
    for text in config.warnings:
        obs.warning(text)
    return config, obs, model, inputs


def local_paths(results: Iterable[DownloadResult]) -> dict[str, str]:
    """Local path of each saved file by its name (and by its /mnt/data path), for rewriting."""
    local: dict[str, str] = {}
    for r in results:
        if r.ok and r.path is not None:
            local.setdefault(r.ref.filename, str(r.path))
            if r.ref.path:
                local.setdefault(r.ref.path.removeprefix("/mnt/data/"), str(r.path))
    return local


@contextlib.asynccontextmanager
async def client_for(
    config: ClientConfig, client: AsyncOpenAI | None
) -> AsyncIterator[AsyncOpenAI]:
    """The caller's SDK client, or one built from ``config`` and closed afterwards."""
    if client is not None:
        yield client
        return
    own = config.async_openai_client()
    try:
        yield own
    finally:
        await own.close()


async def _upload(
    oai: AsyncOpenAI, config: ClientConfig, files: Sequence[Path], container: str | None
) -> str:
    """Create a container (unless given) and upload the input files into it."""
    try:
        if container is None:
            created = await oai.containers.create(name="cigate-run")
            container = created.id
        for path in files:
            data = await anyio.Path(path).read_bytes()
            await oai.containers.files.create(container, file=(path.name, data))
    except openai.OpenAIError as exc:
        raise classify.from_sdk(
            exc, what="upload input files", uses_entra=config.uses_entra
        ) from exc
    return container


async def arun(
    prompt: str,
    *,
    files: Iterable[str | Path] = (),
    instructions: str | None = None,
    model: str | None = None,
    container: str | None = None,
    out: str | Path | None = None,
    stream: bool = True,
    config: ClientConfig | None = None,
    client: AsyncOpenAI | None = None,
    http_client: httpx2.AsyncClient | None = None,
    observer: RunObserver | None = None,
    reconcile: bool = True,
    max_output_tokens: int | None = None,
    previous_response_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    agent: str | None = None,
) -> RunResult:
    """Run ``prompt`` with the code interpreter, download every file, return a RunResult.

    ``client`` is the SDK client to use (default: built from ``config``); ``http_client`` is
    the ``httpx2.AsyncClient`` downloads go through. ``previous_response_id`` continues a
    conversation (``result.response_id`` of an earlier run); ``options`` are further request
    fields passed as they are (``{"reasoning": {"effort": "high"}, "temperature": 0}``).
    Download failures are recorded in the result (``result.errors``); failures of the run
    itself raise a CigateError. A response that ends ``incomplete`` (``max_output_tokens``
    reached, content filter) keeps its files and gives a warning: ``result.status`` says so.
    ``agent`` runs a Foundry agent (its latest version) instead: the model, instructions and
    tools (with their container files) are the agent's, so none of those may be given.
    """
    if agent is not None:
        _check_agent_run(agent, files, instructions, model, container)
    config, obs, model, inputs = prepare(
        config, observer, model, files, model_required=agent is None
    )
    async with (
        client_for(config, client) as oai,
        Downloader(config, out, client=http_client, observer=obs) as downloader,
    ):
        if inputs:
            obs.step(2, STEPS, f"Uploading {len(inputs)} input file(s)")
            container = await _upload(oai, config, inputs, container)
        else:
            obs.step(2, STEPS, "No input files to upload")
        tool: dict[str, Any] = {
            "type": "code_interpreter",
            "container": container or {"type": "auto"},
        }
        request: dict[str, Any] = {
            **(options or {}),
            "model": model,
            "input": prompt,
            "tools": [tool],
            "instructions": instructions or DEFAULT_INSTRUCTIONS,
        }
        if agent is not None:  # the agent's own model, instructions and tools
            for key in ("model", "tools", "instructions"):
                del request[key]
            reference = {"type": "agent_reference", "name": agent}
            request["extra_body"] = {**request.get("extra_body", {}), "agent_reference": reference}
        # Figures the code only displays come back in the call's outputs: ask for them.
        include = [*request.get("include", ()), DISPLAYED_OUTPUTS]
        request["include"] = list(dict.fromkeys(include))
        if max_output_tokens is not None:
            request["max_output_tokens"] = max_output_tokens
        if previous_response_id is not None:
            request["previous_response_id"] = previous_response_id
        running = f"agent {agent}" if agent is not None else model
        obs.step(3, STEPS, f"Running the code interpreter on {running}")
        result = RunResult()
        collector = RefCollector()
        failure: CigateError | None = None
        final: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:

            def start(refs: list[FileRef]) -> None:
                for ref in refs:
                    tg.start_soon(downloader.fetch, ref)

            try:
                final = await _respond(
                    oai,
                    config=config,
                    request=request,
                    stream=stream,
                    collector=collector,
                    obs=obs,
                    start=start,
                )
            except CigateError as exc:
                # Raised below, after the task group: inside it, anyio wraps it in an
                # ExceptionGroup. Files already cited finish downloading meanwhile.
                failure = exc
            else:
                obs.step(4, STEPS, f"Downloading {len(collector.refs)} cited file(s)")
        if failure is not None:
            raise failure
        if not final:  # the files cited so far are saved; the answer is missing
            raise UpstreamUnavailableError(
                "responses.create: the stream ended before response.completed "
                f"({len(downloader.done)} file(s) cited so far were saved)"
            )
        if final.get("status") == "incomplete":
            obs.warning(_incomplete_warning(final))
        result.response_id = collector.response_id
        result.container_ids = list(collector.container_ids)
        if container and container not in result.container_ids:
            result.container_ids.insert(0, container)
        if reconcile:
            obs.step(5, STEPS, "Reconciling with the container's file list")
            await _reconcile(downloader, result.container_ids, obs)
        else:
            obs.step(5, STEPS, "Skipping reconciliation")
        await _save_displayed(downloader, final, obs)
        result.results = list(downloader.done.values())
    _finish(result, final)
    return result


async def _respond(
    oai: AsyncOpenAI,
    *,
    config: ClientConfig,
    request: dict[str, Any],
    stream: bool,
    collector: RefCollector,
    obs: RunObserver,
    start: Any,
) -> dict[str, Any]:
    """Call the Responses API; feed every event to the collector; return the final response."""
    final: dict[str, Any] = {}
    try:
        if not stream:
            response = await oai.responses.create(**request)
            final = to_jsonable(response)
            for item in final.get("output") or []:
                if item.get("type") == "code_interpreter_call" and item.get("code"):
                    obs.code_done(str(item.get("id")), str(item["code"]))
            start(collector.feed(final))
            return final
        events = await oai.responses.create(**request, stream=True)
        async for event in events:
            kind = event.type
            if kind == "response.code_interpreter_call_code.delta":
                obs.code_delta(event.item_id, event.delta)
            elif kind == "response.code_interpreter_call_code.done":
                obs.code_done(event.item_id, event.code)
            elif kind in ("response.completed", "response.failed", "response.incomplete"):
                final = to_jsonable(event.response)
            elif kind == "error":
                body = {"error": {"message": event.message, "code": event.code}}
                raise classify.from_http(500, _json(body), what="response stream")
            if kind in ("response.created", "response.output_text.annotation.added") or (
                kind in ("response.output_item.done", "response.completed")
            ):
                start(collector.feed(event))
    except openai.OpenAIError as exc:
        raise classify.from_sdk(exc, what="responses.create", uses_entra=config.uses_entra) from exc
    return final


def _incomplete_warning(final: dict[str, Any]) -> str:
    reason = (final.get("incomplete_details") or {}).get("reason") or "no reason given"
    advice = {
        "max_output_tokens": "raise --max-output-tokens",
        "content_filter": "the content filter stopped the answer",
    }.get(reason, "retry or rephrase the prompt")
    return (
        f"the response ended incomplete ({reason}): its answer may be cut short and the code "
        f"may not have finished; every file it made is still saved ({advice})"
    )


def _finish(result: RunResult, final: dict[str, Any]) -> None:
    result.status = final.get("status")
    texts: list[str] = []
    for item in final.get("output") or []:
        if item.get("type") == "code_interpreter_call" and item.get("code"):
            result.code.append(str(item["code"]))
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    texts.append(str(part.get("text", "")))
    result.text = "".join(texts)
    result.local_text = rewrite_sandbox_links(result.text, local_paths(result.results))
    if final.get("status") == "failed":
        err = final.get("error") or {}
        body = {
            "error": {"message": err.get("message", "response failed"), "code": err.get("code")}
        }
        raise classify.from_http(500, _json(body), what="response")


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)


async def _reconcile(downloader: Downloader, container_ids: list[str], obs: RunObserver) -> None:
    """Fetch files the code wrote but the answer never cited (api-reference §1.7).

    Every file the code wrote (``source: assistant``) that this run has not fetched yet is
    fetched, including files of earlier responses in a reused container: they were made by the
    code interpreter and would be lost with the container otherwise. Uploads are skipped.
    """
    for cid in container_ids:
        try:
            records = await downloader.list_files(cid)
        except CigateError as exc:
            obs.warning(f"could not list {cid} to find uncited files: {exc.message}")
            continue
        extra = [
            FileRef(
                file_id=str(r["id"]),
                filename=Path(str(r.get("path") or r["id"])).name,
                container_id=cid,
                source="listing",
                path=str(r.get("path") or "") or None,
                bytes=r.get("bytes") if isinstance(r.get("bytes"), int) else None,
            )
            for r in records
            if r.get("source") != "user" and (cid, r.get("id")) not in downloader.done
        ]
        if extra:
            await downloader.fetch_all(extra)


async def _save_displayed(downloader: Downloader, final: dict[str, Any], obs: RunObserver) -> None:
    """Save figures the code displayed but no file carries (``plt.show()`` without savefig).

    The service auto-saves most displayed figures as container files (then they were fetched
    already, and are skipped here by their sha256); any other ``image`` output is saved as
    ``figure-N.EXT``, with ``source="displayed"`` saying where it came from.
    """
    saved = {r.sha256 for r in downloader.done.values() if r.ok}
    number = 0
    for item in final.get("output") or []:
        if item.get("type") != "code_interpreter_call":
            continue
        for index, output in enumerate(item.get("outputs") or []):
            if not isinstance(output, dict) or output.get("type") != "image":
                continue
            decoded = _data_url(str(output.get("url") or ""))
            if decoded is None:
                obs.warning(f"a displayed figure of {item.get('id')} is not inline data: not saved")
                continue
            mime, data = decoded
            if hashlib.sha256(data).hexdigest() in saved:
                continue
            number += 1
            ref = FileRef(
                file_id=f"{item.get('id')}#outputs/{index}",
                filename=f"figure-{number}.{_IMAGE_EXTENSIONS.get(mime, 'bin')}",
                container_id=item.get("container_id"),
                source="displayed",
                response_id=final.get("id"),
            )
            result = await downloader.save_bytes(ref, data, mime)
            saved.add(result.sha256)
            obs.warning(
                f"{ref.filename}: a figure the code displayed without saving it as a file "
                f"(from {item.get('id')}'s outputs)"
            )


_IMAGE_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _data_url(url: str) -> tuple[str, bytes] | None:
    """``(mime type, bytes)`` of a base64 ``data:`` URL, else None."""
    head, comma, payload = url.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        return head[5:-7] or "application/octet-stream", base64.b64decode(payload, validate=True)
    except ValueError:
        return None


def _check_agent_run(
    agent: str,
    files: Iterable[str | Path],
    instructions: str | None,
    model: str | None,
    container: str | None,
) -> None:
    """An agent brings its own model, instructions, tools and container files."""
    if not agent:
        raise BadInputError("agent must be a Foundry agent's name")
    given = [
        flag
        for flag, value in (
            ("files", list(files)),
            ("instructions", instructions),
            ("model", model),
            ("container", container),
        )
        if value
    ]
    if given:
        raise BadInputError(
            f"a Foundry agent brings its own model, instructions, tools and files; "
            f"drop {', '.join(given)} (or add them to the agent's definition)"
        )


def run(prompt: str, **kwargs: Any) -> RunResult:
    """Sync twin of :func:`arun` (works in Jupyter too)."""
    return run_sync(lambda: arun(prompt, **kwargs))


async def adownload(
    source: Any,
    *,
    out: str | Path | None = None,
    config: ClientConfig | None = None,
    http_client: httpx2.AsyncClient | None = None,
    observer: DownloadObserver | None = None,
) -> Harvest:
    """Download FileRefs — or every file cited by a Response / events / JSON (``source``)."""
    config = config or resolve_config()
    items = list(source) if isinstance(source, list | tuple) else None
    refs = items if items and all(isinstance(x, FileRef) for x in items) else find_files(source)
    async with Downloader(config, out, client=http_client, observer=observer) as downloader:
        return await downloader.fetch_all(refs)


def download(source: Any, **kwargs: Any) -> Harvest:
    """Sync twin of :func:`adownload`."""
    return run_sync(lambda: adownload(source, **kwargs))


async def alist_files(
    container_id: str,
    *,
    config: ClientConfig | None = None,
    http_client: httpx2.AsyncClient | None = None,
) -> list[dict[str, Any]]:
    """The container's file records (``cigate ls``)."""
    config = config or resolve_config()
    async with Downloader(config, ".", client=http_client) as downloader:
        return await downloader.list_files(container_id)


def list_files(container_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Sync twin of :func:`alist_files`."""
    return run_sync(lambda: alist_files(container_id, **kwargs))


async def afetch_response(
    response_id: str,
    *,
    out: str | Path | None = None,
    config: ClientConfig | None = None,
    client: AsyncOpenAI | None = None,
    http_client: httpx2.AsyncClient | None = None,
    observer: DownloadObserver | None = None,
) -> Harvest:
    """Retrieve a stored response and download every file it cites."""
    config = config or resolve_config()
    try:
        async with client_for(config, client) as oai:
            response = await oai.responses.retrieve(response_id)
    except openai.NotFoundError as exc:
        raise BadInputError(
            f"response {response_id} not found",
            hint="Stored responses are kept for 30 days, only on the resource that created "
            "them, and only when the request did not set store=false.",
            status=404,
        ) from exc
    except openai.OpenAIError as exc:
        raise classify.from_sdk(
            exc, what=f"retrieve response {response_id}", uses_entra=config.uses_entra
        ) from exc
    return await adownload(
        response, out=out, config=config, http_client=http_client, observer=observer
    )


def fetch_response(response_id: str, **kwargs: Any) -> Harvest:
    """Sync twin of :func:`afetch_response`."""
    return run_sync(lambda: afetch_response(response_id, **kwargs))
