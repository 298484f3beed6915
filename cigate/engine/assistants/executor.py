"""One Assistants run, executed: the model decides, the thread's container runs, events record it.

The same ``Model`` seam and ``ContainerBackend.run_code`` as the Responses engine, with the
Assistants shapes around them: each code cell is a ``tool_calls`` run step whose
``code_interpreter`` carries ``input`` and ``outputs`` (logs, and ``image`` outputs that point at
Files-API files); the reply is a ``message_creation`` step plus an assistant message. Every file
the code writes under ``/mnt/data`` becomes a Files-API file (purpose ``assistants_output``,
``assistant-…`` on Azure paths) the moment its cell finishes, so it outlives the container: that
durability is the one reason users still want the Assistants API. Images (displayed figures and
saved image files) become ``image_file`` blocks; every ``sandbox:/mnt/data/…`` link in the reply
that names a generated file gets a ``file_path`` annotation whose offsets cover exactly the URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

from cigate.clock import Clock
from cigate.engine.assistants.objects import (
    Message,
    Run,
    RunStep,
    Thread,
    new_id,
    text_block,
    usage,
)
from cigate.engine.assistants.stream import RunEventLog
from cigate.engine.containers import Container, ContainerBackend, ContainerFile
from cigate.engine.errors import ApiError
from cigate.engine.items import find_citations, split_code, split_text
from cigate.engine.model import Conversation, Model, Reply, RunCode, ToolResult
from cigate.engine.runner import MAX_TOOL_CALLS

__all__ = ["GeneratedFiles", "RunExecutor"]

log = logging.getLogger(__name__)

OUTPUT_PURPOSE = "assistants_output"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
_MIME_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif"}


class StoredFile(Protocol):
    @property
    def id(self) -> str: ...


class GeneratedFiles(Protocol):
    """The Files backend as far as runs use it: storing what the code made."""

    def create(self, filename: str, data: bytes, purpose: str, *, azure: bool) -> StoredFile: ...


@dataclass
class _Generated:
    """A container file turned into a Files-API file by this run."""

    container_file: ContainerFile
    file_id: str
    image: bool


class RunExecutor:
    """Drives one run from ``queued`` to a terminal status; ``log`` holds its events."""

    def __init__(
        self,
        *,
        run: Run,
        thread: Thread,
        conversation: Conversation,
        model: Model,
        containers: ContainerBackend,
        files: GeneratedFiles,
        clock: Clock,
        exec_timeout: float,
        container: Callable[[], Container],
    ) -> None:
        self.run_ = run
        self.thread = thread
        self.conversation = conversation
        self.model = model
        self.containers = containers
        self.files = files
        self.clock = clock
        self.exec_timeout = exec_timeout
        self._container = container
        self.log = RunEventLog()
        self.finished = asyncio.Event()
        self._step: RunStep | None = None
        self._message: Message | None = None
        #: Displayed figures, as Files ids, in order.
        self._figures: list[str] = []
        #: Container file id -> what it became (the latest version wins).
        self._generated: dict[str, _Generated] = {}
        self._output_chars = 0
        self.log.emit("thread.run.created", run.to_api())
        self.log.emit("thread.run.queued", run.to_api())

    # -- the run -----------------------------------------------------------------------------

    async def execute(self) -> None:
        """Run to the end; never raises except on cancellation."""
        run = self.run_
        try:
            run.status = "in_progress"
            run.started_at = self.clock.now_int()
            self.log.emit("thread.run.in_progress", run.to_api())
            await self._steps()
            run.usage = usage(_conversation_chars(self.conversation), self._output_chars)
            run.status = "completed"
            run.completed_at = self.clock.now_int()
            self.log.emit("thread.run.completed", run.to_api())
        except asyncio.CancelledError:
            self._end("cancelled", None)
            raise
        except ApiError as exc:
            code = "rate_limit_exceeded" if exc.status == 429 else "server_error"
            self._end("failed", {"code": code, "message": exc.message})
        except Exception as exc:  # the run fails, the server goes on
            log.exception("run %s failed", run.id)
            self._end("failed", {"code": "server_error", "message": f"The run failed: {exc}"})
        finally:
            if not self.log.closed:
                self.log.close()
            self.finished.set()

    async def _steps(self) -> None:
        conversation = self.conversation
        results: list[ToolResult] = []
        while True:
            if len(results) >= MAX_TOOL_CALLS:
                conversation = dataclasses.replace(conversation, code_interpreter=False)
            step = await self.model.next_step(conversation, results)
            if isinstance(step, RunCode):
                if not conversation.code_interpreter:
                    raise RuntimeError("the model asked to run code without a code interpreter")
                results.append(await self._tool_step(self._container(), step.code))
            elif isinstance(step, Reply):
                self._message_step(step.text)
                return
            else:
                raise TypeError(f"unknown model step {step!r}")

    # -- a code cell: one tool_calls step ----------------------------------------------------

    async def _tool_step(self, container: Container, code: str) -> ToolResult:
        step = self._new_step("tool_calls", {"type": "tool_calls", "tool_calls": []})
        call_id = new_id("call")
        kind = "code_interpreter"
        first = {"input": "", "outputs": []}
        self._step_delta(step, {"id": call_id, "type": kind, "code_interpreter": first})
        for piece in split_code(code):
            self._step_delta(step, {"type": kind, "code_interpreter": {"input": piece}})
        call: dict[str, Any] = {
            "id": call_id,
            "type": "code_interpreter",
            "code_interpreter": {"input": code, "outputs": []},
        }
        step.step_details = {"type": "tool_calls", "tool_calls": [call]}
        coderun = await self.containers.run_code(container, code, timeout=self.exec_timeout)
        outputs = self._outputs(container, call_id, coderun.result, coderun.changed)
        call["code_interpreter"]["outputs"] = outputs
        if outputs:
            indexed = [{"index": i, **o} for i, o in enumerate(outputs)]
            self._step_delta(
                step, {"type": "code_interpreter", "code_interpreter": {"outputs": indexed}}
            )
        self._output_chars += len(code)
        self._complete_step(step, usage(len(code), len(coderun.result.logs)))
        return ToolResult(code=code, result=coderun.result, changed=tuple(coderun.changed))

    def _outputs(
        self, container: Container, call_id: str, result: Any, changed: list[ContainerFile]
    ) -> list[dict[str, Any]]:
        outputs: list[dict[str, Any]] = []
        if result.logs:
            outputs.append({"type": "logs", "logs": result.logs})
        for number, image in enumerate(result.images):
            suffix = _MIME_SUFFIX.get(image.mime_type, ".png")
            name = f"{call_id}_image_{number}{suffix}"
            record = self.files.create(name, image.data, OUTPUT_PURPOSE, azure=self.run_.azure)
            self._figures.append(record.id)
            outputs.append({"type": "image", "image": {"file_id": record.id}})
        for cfile in changed:
            try:
                data = self.containers.read_file(container, cfile)
            except ApiError:  # no longer a regular file: nothing to copy
                continue
            record = self.files.create(cfile.filename, data, OUTPUT_PURPOSE, azure=self.run_.azure)
            image = PurePosixPath(cfile.relpath).suffix.lower() in IMAGE_SUFFIXES
            self._generated[cfile.id] = _Generated(cfile, record.id, image)
        return outputs

    # -- the reply: one message_creation step and an assistant message -----------------------

    def _message_step(self, text: str) -> None:
        run = self.run_
        now = self.clock.now_int()
        message = Message(
            id=new_id("message"),
            thread_id=self.thread.id,
            created_at=now,
            role="assistant",
            content=[],
            status="in_progress",
            assistant_id=run.assistant_id,
            run_id=run.id,
        )
        self._message = message
        details = {"type": "message_creation", "message_creation": {"message_id": message.id}}
        step = self._new_step("message_creation", details)
        self.thread.messages.append(message)
        self.log.emit("thread.message.created", message.to_api())
        self.log.emit("thread.message.in_progress", message.to_api())
        images = [*self._figures, *(g.file_id for g in self._generated.values() if g.image)]
        for file_id in images:
            block = {"type": "image_file", "image_file": {"file_id": file_id}}
            message.content.append(block)
            self._message_delta(message, {"index": len(message.content) - 1, **block})
        index = len(message.content)
        message.content.append(text_block(""))
        for number, piece in enumerate(split_text(text)):
            body: dict[str, Any] = {"value": piece}
            if number == 0:
                body["annotations"] = []
            message.content[index]["text"]["value"] += piece
            self._message_delta(message, {"index": index, "type": "text", "text": body})
        annotations = self._annotations(text)
        if annotations:
            message.content[index]["text"]["annotations"] = annotations
            indexed = [{"index": i, **a} for i, a in enumerate(annotations)]
            self._message_delta(
                message, {"index": index, "type": "text", "text": {"annotations": indexed}}
            )
        message.status = "completed"
        message.completed_at = self.clock.now_int()
        self._message = None
        self.log.emit("thread.message.completed", message.to_api())
        self._output_chars += len(text)
        self._complete_step(step, usage(_conversation_chars(self.conversation), len(text)))

    def _annotations(self, text: str) -> list[dict[str, Any]]:
        """A ``file_path`` annotation per ``sandbox:`` URL naming a file this run generated."""
        if not self._generated:
            return []
        container_id = next(iter(self._generated.values())).container_file.container_id
        files = [g.container_file for g in self._generated.values()]
        out = []
        for citation in find_citations(text, container_id, files):
            start, end = citation["start_index"], citation["end_index"]
            out.append(
                {
                    "type": "file_path",
                    "text": text[start:end],
                    "start_index": start,
                    "end_index": end,
                    "file_path": {"file_id": self._generated[citation["file_id"]].file_id},
                }
            )
        return out

    # -- steps, deltas, endings --------------------------------------------------------------

    def _new_step(self, kind: str, details: dict[str, Any]) -> RunStep:
        run = self.run_
        step = RunStep(
            id=new_id("step"),
            run_id=run.id,
            thread_id=run.thread_id,
            assistant_id=run.assistant_id,
            created_at=self.clock.now_int(),
            type=kind,
            step_details=details,
        )
        run.steps.append(step)
        self._step = step
        self.log.emit("thread.run.step.created", step.to_api())
        self.log.emit("thread.run.step.in_progress", step.to_api())
        return step

    def _step_delta(self, step: RunStep, tool_call: dict[str, Any]) -> None:
        details = {"type": "tool_calls", "tool_calls": [{"index": 0, **tool_call}]}
        self.log.emit(
            "thread.run.step.delta",
            {"id": step.id, "object": "thread.run.step.delta", "delta": {"step_details": details}},
        )

    def _message_delta(self, message: Message, block: dict[str, Any]) -> None:
        self.log.emit(
            "thread.message.delta",
            {
                "id": message.id,
                "object": "thread.message.delta",
                "delta": {"role": "assistant", "content": [block]},
            },
        )

    def _complete_step(self, step: RunStep, step_usage: dict[str, int]) -> None:
        step.status = "completed"
        step.completed_at = self.clock.now_int()
        step.usage = step_usage
        self._step = None
        self.log.emit("thread.run.step.completed", step.to_api())

    def _end(self, status: str, error: dict[str, str] | None) -> None:
        """Cancel or fail the run and whatever step or message was in flight."""
        run = self.run_
        now = self.clock.now_int()
        step, message = self._step, self._message
        if status == "cancelled":
            run.status, run.cancelled_at = "cancelled", now
        else:
            run.status, run.failed_at, run.last_error = "failed", now, error
        if step is not None:
            step.status = status
            if status == "cancelled":
                step.cancelled_at = now
            else:
                step.failed_at, step.last_error = now, error
        if message is not None:
            message.status, message.incomplete_at = "incomplete", now
            message.incomplete_reason = "run_cancelled" if status == "cancelled" else "run_failed"
        if self.log.closed:
            return
        if step is not None:
            self.log.emit(f"thread.run.step.{status}", step.to_api())
        if message is not None:
            self.log.emit("thread.message.incomplete", message.to_api())
        self.log.emit(f"thread.run.{status}", run.to_api())

    def abandon(self) -> None:
        """Mark a run cancelled whose task never ran (cancelled before it started)."""
        if not self.finished.is_set():
            if not self.run_.terminal:
                self._end("cancelled", None)
            if not self.log.closed:
                self.log.close()
            self.finished.set()


def _conversation_chars(conversation: Conversation) -> int:
    total = len(conversation.instructions or "")
    for item in conversation.items:
        content = item.get("content")
        total += len(content) if isinstance(content, str) else 0
    return total
