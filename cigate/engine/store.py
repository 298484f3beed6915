"""The Responses backend: creates runs, resolves their containers, stores responses and inputs.

Everything that can be refused is refused in ``create`` *before* the run starts, so a streaming
request gets a plain HTTP error (400 "Container is expired.", 404 unknown previous response)
rather than a stream that fails at once, as on the real service. Runs are asyncio tasks owned by
the backend, not by the HTTP request: a client that disconnects does not cut a cell short.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cigate import ids
from cigate.clock import Clock
from cigate.engine.agents import AgentStore, request_defaults
from cigate.engine.containers import Container, ContainerBackend
from cigate.engine.conversations import ConversationRecord, ConversationStore
from cigate.engine.errors import ApiError, BadRequestError, NotFoundError, container_not_found
from cigate.engine.functions import FunctionTool, function_tools
from cigate.engine.items import input_item_resource
from cigate.engine.model import Conversation, Model, ScriptedModel
from cigate.engine.request import CreateRequest, parse_create
from cigate.engine.runner import ResponseRun, RunPlan
from cigate.engine.upload_names import check_upload_name

__all__ = ["FileRecord", "FilesLookup", "ResponsesBackend", "StoredResponse"]

log = logging.getLogger(__name__)

AUTO_CONTAINER_NAME = "code-interpreter-auto"


class FileRecord(Protocol):
    """What the backend needs of a Files-API record."""

    @property
    def filename(self) -> str: ...


class FilesLookup(Protocol):
    """The Files API backend, as far as responses use it (``file_ids``, ``input_file``)."""

    def get(self, file_id: str) -> FileRecord: ...

    def read_bytes(self, file_id: str) -> bytes: ...


@dataclass
class StoredResponse:
    run: ResponseRun
    #: This request's input items as ``input_items`` lists them, oldest first.
    input_items: list[dict[str, Any]]

    def history(self) -> list[dict[str, Any]]:
        """The conversation up to and including this response: what a follow-up continues."""
        return [*self.run.plan.conversation.items, *self.run.output]


class ResponsesBackend:
    """Holds stored responses and the tasks that generate them."""

    def __init__(
        self,
        *,
        containers: ContainerBackend,
        files: FilesLookup | None,
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
        self._responses: dict[str, StoredResponse] = {}
        #: Foundry's agent versions and the Conversations API, which responses run with.
        self.agents = AgentStore(clock=clock)
        self.conversations = ConversationStore(clock=clock)
        #: Runs still generating, with their tasks (stored or not).
        self._active: dict[str, tuple[ResponseRun, asyncio.Task[None]]] = {}

    # -- create ------------------------------------------------------------------------------

    async def create(
        self, body: Any, *, owner: str | None = None, files: FilesLookup | None = None
    ) -> ResponseRun:
        """Validate, resolve the container, store, and start the run; return it at once.

        ``owner`` (the gateway's tenant) owns the auto container made here; a container of
        another owner, named or reused, is an unknown one (404). ``files`` answers this
        request's file ids instead of the backend's Files API (the gateway fetched them).
        """
        body, agent_echo = self._with_agent(body)
        req = parse_create(body)
        if agent_echo:
            req = dataclasses.replace(req, echo={**req.echo, **agent_echo})
        lookup = files if files is not None else self.files
        if self.deployments and req.model not in self.deployments:
            raise deployment_not_found()
        previous = self._previous(req.previous_response_id)
        thread = self._conversation(req)
        container = self._container(req, previous, thread, owner, lookup)
        if container is not None:
            self._copy_input_files(container, req, lookup)
        if previous is not None:
            history = previous.history()
        else:
            history = list(thread.items) if thread is not None else []
        conversation = Conversation(
            instructions=req.instructions,
            items=[*history, *req.input_items],
            latest_input=req.input_items,
            code_interpreter=container is not None,
            tool_choice=req.tool_mode,
            text_format=req.text_format,
            functions=_callable_functions(req),
            model=req.model,
        )
        plan = RunPlan(
            response_id=ids.response_id(),
            created_at=self.clock.now_int(),
            request=req,
            conversation=conversation,
            container=container,
            exec_timeout=min(self.exec_timeout, req.exec_timeout or math.inf),
        )
        run = ResponseRun(plan, model=self.model, containers=self.containers, clock=self.clock)
        if req.store:
            inputs = [input_item_resource(item, ids.message_id()) for item in req.input_items]
            self._responses[run.id] = StoredResponse(run, inputs)
        task = asyncio.create_task(run.run(), name=f"response {run.id}")
        self._active[run.id] = (run, task)
        task.add_done_callback(lambda _: self._active.pop(run.id, None))
        if thread is not None:
            self.conversations.append(thread, req.input_items)
            thread.container_id = run.container_id or thread.container_id
            task.add_done_callback(lambda _: self.conversations.append(thread, run.output))
        return run

    def _with_agent(self, body: Any) -> tuple[Any, dict[str, Any]]:
        """A Foundry agent's parameters filled into the body (``agent_reference``, or the
        preview's ``agent``): model, instructions, tools … come from the agent version unless
        the request sets them. Returns the body to parse and what the response echoes."""
        if not isinstance(body, dict):
            return body, {}
        key = next((k for k in ("agent_reference", "agent") if k in body), None)
        extras = {k: body[k] for k in ("structured_inputs",) if k in body}
        if key is None:
            return {k: v for k, v in body.items() if k not in extras}, extras
        version = self.agents.resolve(body[key], key)
        rest = {k: v for k, v in body.items() if k not in (key, *extras)}
        reference = {"type": "agent_reference", "name": version.name, "version": version.version}
        echo = {
            **extras,
            "agent_reference": reference,
            "agent": {"type": "agent_id", "name": version.name, "version": version.version},
        }
        return {**request_defaults(version), **rest}, echo

    def _conversation(self, req: CreateRequest) -> ConversationRecord | None:
        value = req.echo.get("conversation")
        if value is None:
            return None
        conversation_id = value["id"] if isinstance(value, dict) else value
        return self.conversations.get(conversation_id, param="conversation")

    def _previous(self, response_id: str | None) -> StoredResponse | None:
        if response_id is None:
            return None
        stored = self._responses.get(response_id)
        if stored is None:
            raise NotFoundError(
                f"Previous response with id '{response_id}' not found.",
                param="previous_response_id",
            )
        if not stored.run.finished.is_set():
            raise BadRequestError(
                f"Previous response with id '{response_id}' is still in progress.",
                param="previous_response_id",
            )
        return stored

    def _container(
        self,
        req: CreateRequest,
        previous: StoredResponse | None,
        thread: ConversationRecord | None,
        owner: str | None,
        files: FilesLookup | None,
    ) -> Container | None:
        tool = req.code_interpreter
        if tool is None or req.tool_mode == "none":
            return None
        if isinstance(tool.container, str):
            explicit = self.containers.get(tool.container)  # 404 unknown, 400 expired
            if explicit.owner != owner:
                raise container_not_found(tool.container)
            self.containers.touch(explicit)
            return explicit
        auto = tool.container
        last = previous.run.container_id if previous is not None else None
        if thread is not None:
            last = thread.container_id
        container = self._reusable(last)
        if container is not None and container.owner != owner:
            container = None  # never another owner's (the caller cannot name it either)
        if container is None:
            container = self.containers.create(
                name=AUTO_CONTAINER_NAME,
                memory_limit=auto.memory_limit,
                network_policy=auto.network_policy,
                owner=owner,
            )
        for file_id in auto.file_ids:
            self._copy_file(container, file_id, f"tools[{tool.index}].container.file_ids", files)
        return container

    def _reusable(self, cid: str | None) -> Container | None:
        """``auto`` reuses the container of the previous response (or of the conversation's
        last one), and fails if it expired."""
        if cid is None:
            return None
        try:
            container = self.containers.get(cid)  # expired: 400 "Container is expired."
        except NotFoundError:  # deleted since: start afresh, as a new auto container would
            return None
        self.containers.touch(container)
        return container

    def _copy_input_files(
        self, container: Container, req: CreateRequest, files: FilesLookup | None
    ) -> None:
        """ "Any files in the model input get automatically uploaded to the container" (Azure)."""
        for i, item in enumerate(req.input_items):
            content = item.get("content")
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                if part.get("type") != "input_file":
                    continue
                param = f"input[{i}].content[{j}]"
                if isinstance(part.get("file_id"), str):
                    self._copy_file(container, part["file_id"], f"{param}.file_id", files)
                elif isinstance(part.get("file_data"), str):
                    data = _decode_data_url(part["file_data"], f"{param}.file_data")
                    name = check_upload_name(
                        str(part.get("filename") or "file"), param=f"{param}.filename"
                    )
                    self.containers.add_file(container, name, data, source="user")

    def _copy_file(
        self, container: Container, file_id: str, param: str, files: FilesLookup | None
    ) -> None:
        if files is None:
            raise NotFoundError(f"File '{file_id}' not found.", param=param)
        try:
            record = files.get(file_id)
            data = files.read_bytes(file_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise NotFoundError(f"File '{file_id}' not found.", param=param) from exc
        self.containers.add_file(container, record.filename, data, source="user")

    # -- read, delete, list ------------------------------------------------------------------

    def get(self, response_id: str) -> ResponseRun:
        stored = self._responses.get(response_id)
        if stored is None:
            raise response_not_found(response_id)
        return stored.run

    async def delete(self, response_id: str) -> dict[str, Any]:
        """Azure's body: ``{"id", "object": "response", "deleted": true}``."""
        stored = self._responses.pop(response_id, None)
        if stored is None:
            raise response_not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def cancel(self, response_id: str) -> ResponseRun:
        run = self.get(response_id)
        if not run.plan.request.background:
            raise BadRequestError(
                "Only responses created with background mode enabled can be cancelled.",
                param="response_id",
            )
        _, task = self._active.get(run.id, (run, None))
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        run.abandon()
        return run

    def input_items(
        self, response_id: str, *, after: str | None = None, limit: int = 20, order: str = "desc"
    ) -> dict[str, Any]:
        """One page of the response's input items, in the list envelope of §3.3."""
        stored = self._responses.get(response_id)
        if stored is None:
            raise response_not_found(response_id)
        if order not in ("asc", "desc"):
            raise BadRequestError(
                f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                param="order",
                code="invalid_value",
            )
        if not 1 <= limit <= 100:
            edge = "below minimum" if limit < 1 else "above maximum"
            raise BadRequestError(
                f"Invalid 'limit': integer {edge} value. Expected a value "
                f"{'>= 1' if limit < 1 else '<= 100'}, but got {limit} instead.",
                param="limit",
                code="integer_below_min_value" if limit < 1 else "integer_above_max_value",
            )
        items = stored.input_items if order == "asc" else stored.input_items[::-1]
        start = 0
        if after is not None:
            positions = [i for i, item in enumerate(items) if item.get("id") == after]
            start = positions[0] + 1 if positions else len(items)
        page = items[start : start + limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(items),
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def reset(self) -> None:
        await self.close()
        self.agents.reset()
        self.conversations.reset()

    async def close(self) -> None:
        """Stop running responses (server stop, control-plane reset) and forget stored ones."""
        active = list(self._active.values())
        for _, task in active:
            task.cancel()
        for run, task in active:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            run.abandon()
        self._active.clear()
        self._responses.clear()


def _callable_functions(req: CreateRequest) -> tuple[FunctionTool, ...]:
    """The function tools ``tool_choice`` lets the model call (a named one alone when forced)."""
    choice = req.tool_choice
    if choice == "none":
        return ()
    tools = function_tools(req.tools)
    if isinstance(choice, dict) and choice.get("type") == "function":
        return tuple(t for t in tools if t.name == choice.get("name"))
    if isinstance(choice, dict) and choice.get("type") not in ("allowed_tools", None):
        return ()  # another tool is forced
    return tools


def response_not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.")


def deployment_not_found() -> ApiError:
    """Azure's answer for an unknown deployment name in ``model``."""
    return ApiError(
        404,
        "The API deployment for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again.",
        type=None,
        code="DeploymentNotFound",
    )


def _decode_data_url(value: str, param: str) -> bytes:
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(
            f"Invalid '{param}': expected a base64-encoded data URL.", param=param
        ) from exc
