"""``AssistantsBackend``: assistants, threads, messages, runs and steps, with their rules.

Everything that can be refused is refused before a run starts (unknown assistant, a thread that
already has an active run, unknown file ids), so a streaming create answers a plain HTTP error,
as the real service does. Runs are asyncio tasks owned by the backend, not by the request: a
client that stops polling or disconnects from the stream does not stop its run. A thread keeps
one container (one kernel) across runs, as one code-interpreter session per thread; if it
expired, the next run starts a fresh one (the real session lasts an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from cigate.clock import Clock
from cigate.engine.assistants.executor import GeneratedFiles, RunExecutor
from cigate.engine.assistants.objects import (
    Assistant,
    Message,
    Run,
    RunStep,
    Thread,
    code_interpreter_file_ids,
    new_id,
)
from cigate.engine.assistants.params import (
    PageQuery,
    RunParams,
    message_content,
    parse_assistant,
    parse_attachments,
    parse_metadata,
    parse_run,
    parse_tool_resources,
    require_object,
)
from cigate.engine.containers import Container, ContainerBackend
from cigate.engine.errors import ApiError, BadRequestError, NotFoundError
from cigate.engine.model import Conversation, Model, ScriptedModel
from cigate.engine.store import deployment_not_found

__all__ = ["AssistantsBackend", "FilesStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Record(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def filename(self) -> str: ...


class FilesStore(GeneratedFiles, Protocol):
    """The Files backend: look up what users attach, store what runs generate."""

    def get(self, file_id: str) -> _Record: ...
    def read_bytes(self, file_id: str) -> bytes: ...


def _not_found(kind: str, object_id: str, param: str | None = None) -> NotFoundError:
    """OpenAI's wording: ``No assistant found with id 'asst_…'.``"""
    return NotFoundError(f"No {kind} found with id '{object_id}'.", param=param)


class AssistantsBackend:
    """All Assistants state of one emulator; raises ``ApiError``s the app renders."""

    def __init__(
        self,
        *,
        containers: ContainerBackend,
        files: FilesStore,
        clock: Clock,
        exec_timeout: float,
        model: Model | None = None,
        deployments: Sequence[str] = (),
    ) -> None:
        self.containers = containers
        self.files = files
        self.clock = clock
        self.exec_timeout = exec_timeout
        self.model: Model = model or ScriptedModel()
        self.deployments = tuple(deployments)
        self._assistants: dict[str, Assistant] = {}
        self._threads: dict[str, Thread] = {}
        self._executors: dict[str, RunExecutor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- assistants --------------------------------------------------------------------------

    def create_assistant(self, body: Any) -> Assistant:
        fields = parse_assistant(require_object(body), create=True)
        self._check_model(fields["model"])
        self._check_files(code_interpreter_file_ids(fields.get("tool_resources")), "tool_resources")
        assistant = Assistant(id=new_id("assistant"), created_at=self.clock.now_int(), **fields)
        self._assistants[assistant.id] = assistant
        return assistant

    def get_assistant(self, assistant_id: str, *, param: str | None = None) -> Assistant:
        assistant = self._assistants.get(assistant_id)
        if assistant is None:
            raise _not_found("assistant", assistant_id, param)
        return assistant

    def modify_assistant(self, assistant_id: str, body: Any) -> Assistant:
        assistant = self.get_assistant(assistant_id)
        fields = parse_assistant(require_object(body), create=False)
        if "model" in fields:
            self._check_model(fields["model"])
        self._check_files(code_interpreter_file_ids(fields.get("tool_resources")), "tool_resources")
        for name, value in fields.items():
            setattr(assistant, name, value)
        return assistant

    def delete_assistant(self, assistant_id: str) -> dict[str, Any]:
        self.get_assistant(assistant_id)
        del self._assistants[assistant_id]
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}

    def list_assistants(self, query: PageQuery) -> dict[str, Any]:
        return page(list(self._assistants.values()), query, render=Assistant.to_api)

    # -- threads -----------------------------------------------------------------------------

    def create_thread(self, body: Any) -> Thread:
        body = require_object(body or {})
        resources = parse_tool_resources(body.get("tool_resources"))
        self._check_files(code_interpreter_file_ids(resources), "tool_resources")
        thread = Thread(
            id=new_id("thread"),
            created_at=self.clock.now_int(),
            tool_resources=resources,
            metadata=parse_metadata(body.get("metadata")),
        )
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise BadRequestError(
                "Invalid type for 'messages': expected an array.", param="messages"
            )
        parsed = [self._new_message(thread, m, f"messages[{i}]") for i, m in enumerate(messages)]
        thread.messages.extend(parsed)
        self._threads[thread.id] = thread
        return thread

    def list_threads(self, query: PageQuery) -> dict[str, Any]:
        """Foundry's classic agents list threads (``threads.list``); OpenAI's API cannot."""
        return page(list(self._threads.values()), query, render=Thread.to_api)

    def get_thread(self, thread_id: str) -> Thread:
        thread = self._threads.get(thread_id)
        if thread is None:
            raise _not_found("thread", thread_id)
        return thread

    def modify_thread(self, thread_id: str, body: Any) -> Thread:
        thread = self.get_thread(thread_id)
        body = require_object(body)
        if "metadata" in body:
            thread.metadata = parse_metadata(body["metadata"])
        if "tool_resources" in body:
            resources = parse_tool_resources(body["tool_resources"])
            self._check_files(code_interpreter_file_ids(resources), "tool_resources")
            thread.tool_resources = resources
        return thread

    async def delete_thread(self, thread_id: str) -> dict[str, Any]:
        thread = self.get_thread(thread_id)
        for run in thread.runs:
            await self._stop(run.id)
        del self._threads[thread_id]
        if thread.container_id is not None:
            with contextlib.suppress(ApiError):
                await self.containers.delete(thread.container_id)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    # -- messages ----------------------------------------------------------------------------

    def create_message(self, thread_id: str, body: Any) -> Message:
        thread = self.get_thread(thread_id)
        active = thread.active_run()
        if active is not None:
            raise BadRequestError(
                f"Can't add messages to {thread_id} while a run {active.id} is active."
            )
        message = self._new_message(thread, body, None)
        thread.messages.append(message)
        return message

    def get_message(self, thread_id: str, message_id: str) -> Message:
        message = self.get_thread(thread_id).message(message_id)
        if message is None:
            raise _not_found("message", message_id)
        return message

    def modify_message(self, thread_id: str, message_id: str, body: Any) -> Message:
        message = self.get_message(thread_id, message_id)
        body = require_object(body)
        if "metadata" in body:
            message.metadata = parse_metadata(body["metadata"])
        return message

    def delete_message(self, thread_id: str, message_id: str) -> dict[str, Any]:
        thread = self.get_thread(thread_id)
        message = self.get_message(thread_id, message_id)
        thread.messages.remove(message)
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}

    def list_messages(
        self, thread_id: str, query: PageQuery, *, run_id: str | None = None
    ) -> dict[str, Any]:
        messages = self.get_thread(thread_id).messages
        if run_id:
            messages = [m for m in messages if m.run_id == run_id]
        return page(messages, query, render=Message.to_api)

    def _new_message(self, thread: Thread, body: Any, param: str | None) -> Message:
        body = require_object(body)
        prefix = f"{param}." if param else ""
        role = body.get("role")
        if role not in ("user", "assistant"):
            raise BadRequestError(
                f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
                param=f"{prefix}role",
                code="invalid_value",
            )
        attachments = parse_attachments(body.get("attachments"), f"{prefix}attachments")
        self._check_files([a["file_id"] for a in attachments], f"{prefix}attachments")
        return Message(
            id=new_id("message"),
            thread_id=thread.id,
            created_at=self.clock.now_int(),
            role=str(role),
            content=message_content(body.get("content"), f"{prefix}content"),
            attachments=attachments,
            metadata=parse_metadata(body.get("metadata")),
            completed_at=None,
        )

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, thread_id: str, body: Any, *, azure: bool) -> RunExecutor:
        """Validate, record and start a run; return its executor (whose log a stream follows)."""
        thread = self.get_thread(thread_id)
        params = parse_run(require_object(body))
        assistant = self.get_assistant(params.assistant_id, param="assistant_id")
        active = thread.active_run()
        if active is not None:
            raise BadRequestError(f"Thread {thread_id} already has an active run {active.id}.")
        if params.model is not None:
            self._check_model(params.model)
        extra = [
            self._new_message(thread, m, f"additional_messages[{i}]")
            for i, m in enumerate(params.additional_messages)
        ]
        thread.messages.extend(extra)
        return self._start(thread, assistant, params, azure=azure)

    def create_thread_and_run(self, body: Any, *, azure: bool) -> RunExecutor:
        body = require_object(body)
        params = parse_run(body)
        assistant = self.get_assistant(params.assistant_id, param="assistant_id")
        thread = self.create_thread(body.get("thread") or {})
        return self._start(thread, assistant, params, azure=azure)

    def _start(
        self, thread: Thread, assistant: Assistant, params: RunParams, *, azure: bool
    ) -> RunExecutor:
        instructions = params.instructions
        if instructions is None:
            instructions = assistant.instructions
        if params.additional_instructions:
            instructions = f"{instructions or ''}\n\n{params.additional_instructions}".strip()
        tools = assistant.tools if params.tools is None else params.tools
        run = Run(
            id=new_id("run"),
            thread_id=thread.id,
            assistant_id=assistant.id,
            created_at=self.clock.now_int(),
            model=params.model or assistant.model,
            instructions=instructions or "",
            tools=[dict(t) for t in tools],
            azure=azure,
            params=params.echo,
            metadata=params.metadata,
        )
        thread.runs.append(run)
        code_interpreter = any(t.get("type") == "code_interpreter" for t in tools)
        tool_choice = params.echo.get("tool_choice")
        executor = RunExecutor(
            run=run,
            thread=thread,
            conversation=_conversation(thread, run.instructions, code_interpreter, tool_choice),
            model=self.model,
            containers=self.containers,
            files=self.files,
            clock=self.clock,
            exec_timeout=self.exec_timeout,
            container=lambda: self._thread_container(thread, assistant),
        )
        self._executors[run.id] = executor
        task = asyncio.create_task(executor.execute(), name=f"run {run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run.id, None))
        return executor

    def _thread_container(self, thread: Thread, assistant: Assistant) -> Container:
        """The thread's live container (a new one if it expired), with every input file in it."""
        container: Container | None = None
        if thread.container_id is not None:
            with contextlib.suppress(ApiError):
                container = self.containers.get(thread.container_id)
        if container is None:
            container = self.containers.create(name=f"assistants-{thread.id}")
            thread.container_id = container.id
            thread.copied_file_ids = set()
        self.containers.touch(container)
        wanted = [
            *code_interpreter_file_ids(assistant.tool_resources),
            *code_interpreter_file_ids(thread.tool_resources),
            *(a["file_id"] for m in thread.messages for a in m.attachments if _for_code(a)),
        ]
        for file_id in wanted:
            if file_id in thread.copied_file_ids:
                continue
            with contextlib.suppress(ApiError):  # deleted since it was attached: skipped
                record = self.files.get(file_id)
                data = self.files.read_bytes(file_id)
                self.containers.add_file(container, record.filename, data, source="user")
                thread.copied_file_ids.add(file_id)
        return container

    def get_run(self, thread_id: str, run_id: str) -> Run:
        run = self.get_thread(thread_id).run(run_id)
        if run is None:
            raise _not_found("run", run_id)
        return run

    def modify_run(self, thread_id: str, run_id: str, body: Any) -> Run:
        run = self.get_run(thread_id, run_id)
        body = require_object(body)
        if "metadata" in body:
            run.metadata = parse_metadata(body["metadata"])
        return run

    def list_runs(self, thread_id: str, query: PageQuery) -> dict[str, Any]:
        return page(self.get_thread(thread_id).runs, query, render=Run.to_api)

    async def cancel_run(self, thread_id: str, run_id: str) -> Run:
        run = self.get_run(thread_id, run_id)
        if run.terminal:
            raise BadRequestError(f"Cannot cancel run with status '{run.status}'.")
        await self._stop(run_id)
        return run

    async def _stop(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        executor = self._executors.get(run_id)
        if executor is not None:
            executor.abandon()

    # -- steps -------------------------------------------------------------------------------

    def list_steps(self, thread_id: str, run_id: str, query: PageQuery) -> dict[str, Any]:
        return page(self.get_run(thread_id, run_id).steps, query, render=RunStep.to_api)

    def get_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep:
        for step in self.get_run(thread_id, run_id).steps:
            if step.id == step_id:
                return step
        raise _not_found("run step", step_id)

    # -- checks and lifecycle ----------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if self.deployments and model not in self.deployments:
            raise deployment_not_found()

    def _check_files(self, file_ids: Sequence[str], param: str) -> None:
        missing = []
        for file_id in file_ids:
            try:
                self.files.get(file_id)
            except ApiError:
                missing.append(file_id)
        if missing:
            raise BadRequestError(f"Files with ids {missing!r} were not found.", param=param)

    async def reset(self) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every running run (server stop, control-plane reset) and forget everything."""
        for run_id in list(self._tasks):
            await self._stop(run_id)
        self._executors.clear()
        self._threads.clear()
        self._assistants.clear()


def _for_code(attachment: dict[str, Any]) -> bool:
    tools = attachment.get("tools") or []
    return any(t.get("type") == "code_interpreter" for t in tools)


def _conversation(
    thread: Thread, instructions: str, code_interpreter: bool, tool_choice: Any
) -> Conversation:
    """What the model sees: every message so far; the latest user message is this turn's input."""
    items = [{"type": "message", "role": m.role, "content": m.text()} for m in thread.messages]
    latest = [item for item in items if item["role"] == "user"][-1:]
    mode = tool_choice if isinstance(tool_choice, str) else "auto"
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "code_interpreter":
        mode = "required"
    return Conversation(
        instructions=instructions or None,
        items=items,
        latest_input=latest,
        code_interpreter=code_interpreter,
        tool_choice=mode,
    )


def page(
    items: Sequence[T], query: PageQuery, *, render: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    """The list envelope with ``order`` (default desc), ``after``, ``before`` and ``limit``.

    A cursor naming no item gives an empty page: ids are random, there is no position to resume.
    """
    rendered = [render(item) for item in items]
    ordered = rendered if query.order == "asc" else rendered[::-1]
    ids = [item["id"] for item in ordered]
    if query.after is not None:
        ordered = ordered[ids.index(query.after) + 1 :] if query.after in ids else []
    if query.before is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[: ids.index(query.before)] if query.before in ids else []
        chunk = ordered[-query.limit :]
    else:
        chunk = ordered[: query.limit]
    return {
        "object": "list",
        "data": chunk,
        "first_id": chunk[0]["id"] if chunk else None,
        "last_id": chunk[-1]["id"] if chunk else None,
        "has_more": len(ordered) > len(chunk),
    }
