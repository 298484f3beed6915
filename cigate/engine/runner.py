"""One response being generated: the model decides, the container runs, events record it all.

``ResponseRun.run`` is the only place that turns model steps into output items and SSE events, in
the exact order of api-reference §2.2. Each event is emitted the moment its work happens (the
``interpreting`` event goes out *before* the cell runs), so a stream is live while code executes.
Streaming and non-streaming requests share this path: the former follows the event log, the
latter waits for the end; a stored response is simply the run's final state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from cigate import ids
from cigate.clock import Clock
from cigate.engine.containers import Container, ContainerBackend
from cigate.engine.errors import ApiError
from cigate.engine.events import EventLog
from cigate.engine.items import (
    CHARS_PER_TOKEN,
    MessageStatus,
    code_call_item,
    execution_outputs,
    find_citations,
    function_call_item,
    message_item,
    output_text_part,
    split_code,
    split_text,
    tokens,
    usage,
    with_outputs,
)
from cigate.engine.model import (
    CallFunction,
    Conversation,
    Model,
    Reply,
    RunCode,
    ToolResult,
    message_text,
)
from cigate.engine.request import CreateRequest

__all__ = ["MAX_TOOL_CALLS", "ResponseRun", "RunPlan"]

log = logging.getLogger(__name__)

#: Hard cap on code calls per response, whatever the model asks (a runaway real model).
MAX_TOOL_CALLS = 32


@dataclass(frozen=True)
class RunPlan:
    """Everything resolved before the run starts (errors here are plain HTTP errors)."""

    response_id: str
    created_at: int
    request: CreateRequest
    conversation: Conversation
    container: Container | None
    exec_timeout: float


class ResponseRun:
    """The live state of one response; ``response()`` renders it as the API object."""

    def __init__(
        self, plan: RunPlan, *, model: Model, containers: ContainerBackend, clock: Clock
    ) -> None:
        self.plan = plan
        self.id = plan.response_id
        self.model = model
        self.containers = containers
        self.clock = clock
        self.status = "queued" if plan.request.background else "in_progress"
        #: Finished output items; code calls keep their outputs, ``include`` decides to show them.
        self.output: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        #: The ApiError behind a failure, so a non-streaming create can answer with its status.
        self.failure: ApiError | None = None
        self.usage: dict[str, Any] | None = None
        self.completed_at: int | None = None
        #: ``{"reason": "max_output_tokens"}`` when the output budget ran out.
        self.incomplete_details: dict[str, str] | None = None
        self.events = EventLog()
        self.finished = asyncio.Event()
        self._in_flight: dict[str, Any] | None = None

    @property
    def container_id(self) -> str | None:
        return self.plan.container.id if self.plan.container is not None else None

    # -- rendering ---------------------------------------------------------------------------

    def response(self, *, include_outputs: bool | None = None) -> dict[str, Any]:
        """The response object now (``include_outputs`` defaults to the create request's)."""
        req = self.plan.request
        show = req.include_outputs if include_outputs is None else include_outputs
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.plan.created_at,
            "status": self.status,
            "background": req.background,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": None,
            "max_output_tokens": None,
            "max_tool_calls": None,
            "model": req.model,
            "output": [with_outputs(item, show) for item in self.output],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": req.store,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "metadata": {},
        }
        # The recorded stream (VF) sends ``usage: null`` and ``user: null`` while running; the
        # spec of record types both as objects/strings, and the SDK reads absent as None, so
        # they are left out until they have a value.
        if self.usage is not None:
            body["usage"] = self.usage
        body.update(req.echo)  # everything the request set is echoed as sent
        if isinstance(req.echo.get("text"), dict):  # ... with the service's defaults filled in
            body["text"] = {"format": {"type": "text"}, "verbosity": "medium", **req.echo["text"]}
        if isinstance(body.get("conversation"), str):  # a conversation id echoes as {"id": ...}
            body["conversation"] = {"id": body["conversation"]}
        return body

    def abandon(self) -> None:
        """Mark a run cancelled whose task may never have started (cancel, server stop)."""
        if not self.finished.is_set():
            self.status = "cancelled"
            if not self.events.closed:
                self.events.close()
            self.finished.set()

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Generate the response to the end; never raises except on cancellation."""
        try:
            self.status = "in_progress"
            snapshot = self.response()
            self.events.emit("response.created", response=snapshot)
            self.events.emit("response.in_progress", response=self.response())
            finished = await self._steps()
            self._finish_usage()
            if finished:
                self.status = "completed"
                self.completed_at = self.clock.now_int()
                self.events.emit("response.completed", response=self.response())
            else:
                self.status = "incomplete"
                self.incomplete_details = {"reason": "max_output_tokens"}
                self.events.emit("response.incomplete", response=self.response())
        except asyncio.CancelledError:
            self.status = "cancelled"
            raise
        except ApiError as exc:
            self._fail(exc)
        except Exception as exc:  # the response fails, the server goes on
            log.exception("response %s failed", self.id)
            self._fail(ApiError(500, f"The code interpreter failed: {exc}", type="server_error"))
        finally:
            if not self.events.closed:
                self.events.close()
            self.finished.set()

    async def _steps(self) -> bool:
        """Run the model's steps; ``False`` when ``max_output_tokens`` cut the output short."""
        conversation = self.plan.conversation
        limit = min(self.plan.request.max_tool_calls or MAX_TOOL_CALLS, MAX_TOOL_CALLS)
        budget = self.plan.request.max_output_tokens
        results: list[ToolResult] = []
        while True:
            if len(results) >= limit:
                conversation = dataclasses.replace(conversation, code_interpreter=False)
            step = await self.model.next_step(conversation, results)
            left = None if budget is None else budget - self._output_tokens()
            if left is not None and left <= 0:
                return False  # the budget went on code: nothing more is generated
            if isinstance(step, RunCode):
                if self.plan.container is None or not conversation.code_interpreter:
                    raise RuntimeError("the model asked to run code without a code interpreter")
                results.append(await self._code_call(self.plan.container, step.code))
                continue
            if isinstance(step, CallFunction):
                self._function_call(step)  # the client runs it and continues the conversation
                return True
            if isinstance(step, Reply):
                if left is not None and tokens(len(step.text)) > left:
                    # Cut where the budget ends, as a real model stops mid-sentence.
                    self._message(step.text[: left * CHARS_PER_TOKEN], status="incomplete")
                    return False
                self._message(step.text)
                return True
            raise TypeError(f"unknown model step {step!r}")

    def _output_chars(self) -> int:
        """Characters output so far (code written, text answered)."""
        chars = 0
        for item in self.output:
            if item["type"] == "code_interpreter_call":
                chars += len(item["code"] or "")
            elif item["type"] == "function_call":
                chars += len(item["arguments"])
            else:
                chars += sum(len(p.get("text", "")) for p in item["content"])
        return chars

    def _output_tokens(self) -> int:
        """Output tokens spent so far (none before any output)."""
        chars = self._output_chars()
        return tokens(chars) if chars else 0

    async def _code_call(self, container: Container, code: str) -> ToolResult:
        index = len(self.output)
        item_id = ids.code_call_id()
        at = {"output_index": index, "item_id": item_id}
        added = code_call_item(
            item_id=item_id, container_id=container.id, code="", status="in_progress", outputs=[]
        )
        self._in_flight = added
        self.events.emit("response.output_item.added", output_index=index, item=added)
        self.events.emit("response.code_interpreter_call.in_progress", **at)
        for delta in split_code(code):
            self.events.emit("response.code_interpreter_call_code.delta", **at, delta=delta)
        self.events.emit("response.code_interpreter_call_code.done", **at, code=code)
        self._in_flight = {**added, "code": code, "status": "interpreting"}
        self.events.emit("response.code_interpreter_call.interpreting", **at)
        run = await self.containers.run_code(
            container, code, timeout=self.plan.exec_timeout, save_figures=True
        )
        self.events.emit("response.code_interpreter_call.completed", **at)
        item = code_call_item(
            item_id=item_id,
            container_id=container.id,
            code=code,
            # A cell cut off by its deadline did not finish: "incomplete" (docs/emulator-responses).
            status="incomplete" if run.result.timed_out else "completed",
            outputs=execution_outputs(run.result),
        )
        self.output.append(item)
        self._in_flight = None
        done = with_outputs(item, self.plan.request.include_outputs)
        self.events.emit("response.output_item.done", output_index=index, item=done)
        return ToolResult(code=code, result=run.result, changed=run.changed)

    def _function_call(self, step: CallFunction) -> None:
        """A ``function_call`` item with its argument deltas, as the service streams one."""
        index = len(self.output)
        item_id = ids.function_call_id()
        at = {"item_id": item_id, "output_index": index}
        added = function_call_item(
            item_id=item_id,
            call_id=ids.call_id(),
            name=step.name,
            arguments="",
            status="in_progress",
        )
        self.events.emit("response.output_item.added", output_index=index, item=added)
        for delta in split_text(step.arguments):
            self.events.emit("response.function_call_arguments.delta", **at, delta=delta)
        self.events.emit(  # the spec of record requires ``name``; SDK 3.60 ignores it
            "response.function_call_arguments.done", **at, name=step.name, arguments=step.arguments
        )
        item = {**added, "arguments": step.arguments, "status": "completed"}
        self.output.append(item)
        self.events.emit("response.output_item.done", output_index=index, item=item)

    def _message(self, text: str, status: MessageStatus = "completed") -> None:
        index = len(self.output)
        item_id = ids.message_id()
        at = {"item_id": item_id, "output_index": index, "content_index": 0}
        self.events.emit(
            "response.output_item.added",
            output_index=index,
            item=message_item(item_id=item_id, status="in_progress", content=[]),
        )
        self.events.emit("response.content_part.added", **at, part=output_text_part("", []))
        for delta in split_text(text):
            self.events.emit("response.output_text.delta", **at, delta=delta, logprobs=[])
        container = self.plan.container
        annotations = (
            find_citations(text, container.id, list(container.files.values()))
            if container is not None
            else []
        )
        # After the last delta and before output_text.done, as the real stream (§2.2, §7.5).
        for number, annotation in enumerate(annotations):
            self.events.emit(
                "response.output_text.annotation.added",
                **at,
                annotation_index=number,
                annotation=annotation,
            )
        self.events.emit("response.output_text.done", **at, text=text, logprobs=[])
        part = output_text_part(text, annotations)
        self.events.emit("response.content_part.done", **at, part=part)
        item = message_item(item_id=item_id, status=status, content=[part])
        self.output.append(item)
        self.events.emit("response.output_item.done", output_index=index, item=item)

    def _finish_usage(self) -> None:
        conversation = self.plan.conversation
        input_chars = len(conversation.instructions or "") + sum(
            len(message_text(item)) for item in conversation.items
        )
        self.usage = usage(input_chars, self._output_chars())

    def _fail(self, exc: ApiError) -> None:
        """End with ``response.failed`` carrying the error; unfinished items end as failed."""
        if self._in_flight is not None:
            self.output.append({**self._in_flight, "status": "failed"})
            self._in_flight = None
        self.failure = exc
        self.status = "failed"
        # ResponseError.code is an enum: an expired container mid-run is a server_error there.
        code = "rate_limit_exceeded" if exc.status == 429 else "server_error"
        self.error = {"code": code, "message": exc.message}
        if not self.events.closed:
            self.events.emit("response.failed", response=self.response())
