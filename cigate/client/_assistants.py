"""Seed 004's flow: run a prompt through the Assistants API and keep every file it makes.

Upload the inputs (purpose ``assistants``), create an assistant with the code interpreter and
those files, a thread and a message, run it (streaming by default, else ``create_and_poll``),
and download every ``image_file`` block, ``file_path`` annotation and ``image`` step output
through the Files API (``/files/{id}/content``), with the same ``Downloader`` (safe names,
retries, atomic writes, checksums) and the same progress and table as the Responses path. Files
start downloading the moment their step or message completes; at the end the run's messages
are listed so nothing the stream missed is lost.

The Assistants API is deprecated in the SDK (it warns on every call) and retired on 2026-08-26,
but Foundry classic agents and many applications still use it; the warnings are silenced here
because the user chose this API on purpose (``--api assistants``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import openai

from cigate.client._config import ClientConfig
from cigate.client._download import Downloader
from cigate.client._responses import (
    DEFAULT_INSTRUCTIONS,
    RunObserver,
    client_for,
    local_paths,
    prepare,
)
from cigate.client._results import RunResult
from cigate.client._sync import run_sync
from cigate.exceptions import (
    CigateError,
    UpstreamUnavailableError,
)
from cigate.harvest import classify
from cigate.harvest.refs import RefCollector, rewrite_sandbox_links, to_jsonable

if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.beta.threads import Run

__all__ = ["arun_assistants", "run_assistants"]

STEPS = 5
#: Statuses a run never leaves (the SDK's ``runs_poll`` terminal set).
_TERMINAL = ("requires_action", "cancelled", "completed", "failed", "expired", "incomplete")
_T = TypeVar("_T")


def _call(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call a deprecated Assistants SDK method without its DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn(*args, **kwargs)


async def arun_assistants(
    prompt: str,
    *,
    files: Iterable[str | Path] = (),
    instructions: str | None = None,
    model: str | None = None,
    assistant_id: str | None = None,
    out: str | Path | None = None,
    stream: bool = True,
    config: ClientConfig | None = None,
    client: AsyncOpenAI | None = None,
    http_client: httpx2.AsyncClient | None = None,
    observer: RunObserver | None = None,
) -> RunResult:
    """Run ``prompt`` on an assistant with the code interpreter; download every file it makes.

    Without ``assistant_id`` a temporary assistant is created (and deleted afterwards); the
    thread is kept so the conversation can go on. ``result.response_id`` is the run id.
    Download failures are recorded in the result; failures of the run itself raise.
    """
    config, obs, model, inputs = prepare(
        config, observer, model, files, model_required=assistant_id is None, api=" (Assistants API)"
    )
    created: str | None = None
    async with client_for(config, client) as oai:
        try:
            async with Downloader(config, out, client=http_client, observer=obs) as downloader:
                file_ids = await _upload(oai, config, inputs, obs)
                try:
                    if assistant_id is None:
                        assistant = await _call(
                            oai.beta.assistants.create,
                            model=str(model),
                            name="cigate-run",
                            instructions=instructions or DEFAULT_INSTRUCTIONS,
                            tools=[{"type": "code_interpreter"}],
                            tool_resources={"code_interpreter": {"file_ids": file_ids}},
                        )
                        assistant_id = created = assistant.id
                        file_ids = []  # already the assistant's
                    attachments: Any = [
                        {"file_id": f, "tools": [{"type": "code_interpreter"}]} for f in file_ids
                    ]
                    thread = await _call(
                        oai.beta.threads.create,
                        messages=[{"role": "user", "content": prompt, "attachments": attachments}],
                    )
                except openai.OpenAIError as exc:
                    raise classify.from_sdk(
                        exc, what="create the assistant and thread", uses_entra=config.uses_entra
                    ) from exc
                obs.step(3, STEPS, f"Running thread {thread.id} on {model or assistant_id}")
                result = RunResult()
                collector = RefCollector()
                failure: CigateError | None = None
                async with anyio.create_task_group() as tg:

                    def start(obj: Any) -> None:
                        for ref in collector.feed(obj):
                            tg.start_soon(downloader.fetch, ref)

                    try:  # raised after the task group, which would wrap it in an ExceptionGroup
                        run = await _run(oai, config, thread.id, assistant_id, stream, obs, start)
                        obs.step(4, STEPS, "Listing the run's messages and steps")
                        messages = await _messages(oai, config, thread.id, run["id"])
                        steps = await _steps(oai, config, thread.id, run["id"])
                        start(messages)
                        start(steps)
                    except CigateError as exc:
                        failure = exc
                if failure is not None:
                    raise failure
                obs.step(5, STEPS, "Done")
                result.response_id = run["id"]
                result.results = list(downloader.done.values())
                _finish(result, run, messages, steps)
                return result
        finally:
            if created is not None:
                try:
                    await _call(oai.beta.assistants.delete, created)
                except openai.OpenAIError as exc:
                    obs.warning(f"could not delete the temporary assistant {created}: {exc}")


async def _upload(
    oai: AsyncOpenAI, config: ClientConfig, inputs: list[Path], obs: RunObserver
) -> list[str]:
    if not inputs:
        obs.step(2, STEPS, "No input files to upload")
        return []
    obs.step(2, STEPS, f"Uploading {len(inputs)} input file(s) with purpose 'assistants'")
    ids: list[str] = []
    try:
        for path in inputs:
            data = await anyio.Path(path).read_bytes()
            uploaded = await oai.files.create(file=(path.name, data), purpose="assistants")
            ids.append(uploaded.id)
    except openai.OpenAIError as exc:
        raise classify.from_sdk(
            exc, what="upload input files", uses_entra=config.uses_entra
        ) from exc
    return ids


async def _run(  # noqa: PLR0917 - private helper, called once
    oai: AsyncOpenAI,
    config: ClientConfig,
    thread_id: str,
    assistant_id: str,
    stream: bool,
    obs: RunObserver,
    start: Callable[[Any], None],
) -> dict[str, Any]:
    """Run the thread; feed completed steps and messages to ``start``; return the final run."""
    try:
        if not stream:
            return await _poll(oai, config, thread_id, assistant_id)
        final: dict[str, Any] = {}
        events = cast(
            "AsyncStream[Any]",
            await _call(
                oai.beta.threads.runs.create,
                thread_id=thread_id,
                assistant_id=assistant_id,
                stream=True,
            ),
        )
        async for event in events:
            name: str = event.event
            if name.startswith("thread.message.") and name != "thread.message.completed":
                continue  # text deltas: nothing to show or fetch (one event per token)
            data = to_jsonable(event.data)
            if name == "thread.run.step.delta" and isinstance(data, dict):
                for call in _tool_calls(data.get("delta", {}).get("step_details")):
                    piece = (call.get("code_interpreter") or {}).get("input")
                    if piece:
                        obs.code_delta(str(data["id"]), str(piece))
            elif name == "thread.run.step.completed" and isinstance(data, dict):
                for call in _tool_calls(data.get("step_details")):
                    code = (call.get("code_interpreter") or {}).get("input")
                    if code:
                        obs.code_done(str(data["id"]), str(code))
                start(data)
            elif name == "thread.message.completed":
                start(data)
            elif name.startswith("thread.run.") and name.count(".") == 2 and data:
                final = dict(data)
            elif name == "error":
                body = json.dumps({"error": data})
                raise classify.from_http(500, body, what="assistants run stream")
    except openai.OpenAIError as exc:
        raise classify.from_sdk(exc, what="run the thread", uses_entra=config.uses_entra) from exc
    if not final.get("id"):  # without the run there are no messages to list (was a KeyError)
        raise UpstreamUnavailableError("assistants run stream: it ended before the run's status")
    return final


async def _poll(
    oai: AsyncOpenAI, config: ClientConfig, thread_id: str, assistant_id: str
) -> dict[str, Any]:
    """Create the run and poll it until it ends, or cancel it past ``config.run_timeout``.

    Waits what the service's ``openai-poll-after-ms`` asks (else backs off from 50 ms to 1 s).
    Not the SDK's ``create_and_poll``: its inner calls warn after our filter is gone.
    """
    run = await _call(oai.beta.threads.runs.create, thread_id=thread_id, assistant_id=assistant_id)
    delay = 0.05
    with anyio.move_on_after(config.run_timeout):
        while run.status not in _TERMINAL:
            await anyio.sleep(delay)
            delay = min(1.0, delay * 1.5)
            run, asked = await _retrieve(oai, run.id, thread_id)
            if asked is not None:
                delay = asked
        return dict(to_jsonable(run))
    raise await _cancel_overdue(oai, run.id, thread_id, waited=config.run_timeout)


async def _retrieve(oai: AsyncOpenAI, run_id: str, thread_id: str) -> tuple[Run, float | None]:
    """The run, and the wait its ``openai-poll-after-ms`` header asks for (seconds)."""
    with warnings.catch_warnings():  # the raw wrapper calls the deprecated method when awaited
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = await oai.beta.threads.runs.with_raw_response.retrieve(run_id, thread_id=thread_id)
    header = raw.headers.get("openai-poll-after-ms", "")
    asked = min(int(header), 10_000) / 1000 if header.isdigit() else None
    return raw.parse(), asked


async def _cancel_overdue(
    oai: AsyncOpenAI, run_id: str, thread_id: str, *, waited: float
) -> UpstreamUnavailableError:
    """Cancel a run that outlived ``run_timeout`` (best effort); the error to raise."""
    with suppress(openai.OpenAIError):
        await _call(oai.beta.threads.runs.cancel, run_id, thread_id=thread_id)
    return UpstreamUnavailableError(
        f"assistants run {run_id} on thread {thread_id} did not end within {waited:g} s; "
        "it was cancelled",
        hint="Raise CIGATE_RUN_TIMEOUT if the code needs longer, or stream the run (the "
        "default) to watch it.",
    )


def _tool_calls(details: Any) -> list[dict[str, Any]]:
    if not isinstance(details, dict) or details.get("type") != "tool_calls":
        return []
    return [c for c in details.get("tool_calls") or [] if isinstance(c, dict)]


async def _messages(
    oai: AsyncOpenAI, config: ClientConfig, thread_id: str, run_id: str
) -> list[dict[str, Any]]:
    try:
        page = _call(oai.beta.threads.messages.list, thread_id, run_id=run_id, order="asc")
        return [to_jsonable(m) async for m in page]
    except openai.OpenAIError as exc:
        raise classify.from_sdk(
            exc, what="list the thread's messages", uses_entra=config.uses_entra
        ) from exc


async def _steps(
    oai: AsyncOpenAI, config: ClientConfig, thread_id: str, run_id: str
) -> list[dict[str, Any]]:
    try:
        page = _call(oai.beta.threads.runs.steps.list, run_id, thread_id=thread_id, order="asc")
        return [to_jsonable(s) async for s in page]
    except openai.OpenAIError as exc:
        raise classify.from_sdk(
            exc, what="list the run's steps", uses_entra=config.uses_entra
        ) from exc


def _finish(
    result: RunResult,
    run: dict[str, Any],
    messages: list[dict[str, Any]],
    steps: list[dict[str, Any]],
) -> None:
    result.status = run.get("status")
    for step in steps:
        for call in _tool_calls(step.get("step_details")):
            code = (call.get("code_interpreter") or {}).get("input")
            if code:
                result.code.append(str(code))
    texts = [
        str(block["text"].get("value", ""))
        for message in messages
        if message.get("role") == "assistant"
        for block in message.get("content") or []
        if block.get("type") == "text" and isinstance(block.get("text"), dict)
    ]
    result.text = "\n\n".join(texts)
    result.local_text = rewrite_sandbox_links(result.text, local_paths(result.results))
    if result.status not in ("completed", None):
        error = run.get("last_error") or {}
        message = error.get("message") or f"the run ended with status {result.status}"
        body = json.dumps({"error": {"message": message, "code": error.get("code")}})
        raise classify.from_http(500, body, what="assistants run")


def run_assistants(prompt: str, **kwargs: Any) -> RunResult:
    """Sync twin of :func:`arun_assistants` (works in Jupyter too)."""
    return run_sync(lambda: arun_assistants(prompt, **kwargs))
