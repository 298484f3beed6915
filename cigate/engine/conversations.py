"""The Conversations API: durable item lists that responses read from and append to.

``responses.create(conversation=…)`` runs with the conversation's items before its input, then
appends the input and every output item, as the service does (foundry-wire 3.3, 3.5). A
conversation also keeps the container its last response used, so an ``auto`` code interpreter
goes on in the same sandbox ("each conversation has its own session").

Shapes and messages follow the OpenAPI description: ``ConversationResource``, the
``ConversationItemList`` envelope (``order`` defaults to ``desc``), and ``DELETE …/items/{id}``
answering with the conversation itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cigate import ids
from cigate.clock import Clock
from cigate.engine.errors import BadRequestError, NotFoundError
from cigate.engine.items import input_item_resource
from cigate.engine.request import parse_input_items

__all__ = ["ConversationRecord", "ConversationStore"]

MAX_ITEMS_PER_CALL = 20
#: Item types a client may add (what a response could have produced or read).
ITEM_TYPES = (
    "message",
    "code_interpreter_call",
    "function_call",
    "function_call_output",
    "reasoning",
)


@dataclass
class ConversationRecord:
    id: str
    created_at: int
    metadata: dict[str, str]
    items: list[dict[str, Any]] = field(default_factory=list)
    #: The container of the last response run in this conversation.
    container_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    ok = isinstance(value, dict) and len(value) <= 16
    ok = ok and all(
        isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
        for k, v in value.items()
    )
    if not ok:
        raise BadRequestError(
            "Invalid 'metadata': at most 16 pairs of strings (keys up to 64, values up to 512).",
            param="metadata",
            code="invalid_value",
        )
    return dict(value)


def _new_items(value: Any, param: str) -> list[dict[str, Any]]:
    """Input items as the conversation stores them (checked as ``input`` is, then given ids)."""
    if isinstance(value, list) and len(value) > MAX_ITEMS_PER_CALL:
        raise BadRequestError(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{MAX_ITEMS_PER_CALL}, but got an array with length {len(value)} instead.",
            param=param,
            code="array_above_max_length",
        )
    if not isinstance(value, list):
        raise BadRequestError(
            f"Invalid type for '{param}': expected an array.", param=param, code="invalid_type"
        )
    items = parse_input_items(value, param)
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind not in ITEM_TYPES:
            raise BadRequestError(
                f"Invalid value: '{kind}'. Supported values are: "
                + ", ".join(f"'{k}'" for k in ITEM_TYPES)
                + ".",
                param=f"{param}[{i}].type",
                code="invalid_value",
            )
    return [stored_item(item) for item in items]


def _unique(added: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``added``, refused if an id repeats one already there (or one before it)."""
    known = {item["id"] for item in existing}
    for i, item in enumerate(added):
        if item["id"] in known:
            raise BadRequestError(
                f"Item with id '{item['id']}' already exists in this conversation.",
                param=f"items[{i}].id",
                code="invalid_value",
            )
        known.add(item["id"])
    return added


def stored_item(item: dict[str, Any]) -> dict[str, Any]:
    """An input or output item as a conversation lists it (``ConversationItem``)."""
    kind = item.get("type", "message")
    item_id = item.get("id") if isinstance(item.get("id"), str) else None
    if kind == "message":
        return input_item_resource({**item, "type": "message"}, item_id or ids.message_id())
    return {**item, "id": item_id or ids.message_id()}


class ConversationStore:
    """Every conversation, in memory (``POST /_emulator/reset`` clears them)."""

    def __init__(self, *, clock: Clock) -> None:
        self.clock = clock
        self._conversations: dict[str, ConversationRecord] = {}

    def reset(self) -> None:
        self._conversations.clear()

    def create(self, body: dict[str, Any]) -> ConversationRecord:
        items = _unique(_new_items(body.get("items") or [], "items"), [])
        record = ConversationRecord(
            id=ids.hex_id("conv_", 48),
            created_at=self.clock.now_int(),
            metadata=_metadata(body.get("metadata")),
            items=items,
        )
        self._conversations[record.id] = record
        return record

    def get(self, conversation_id: str, param: str | None = None) -> ConversationRecord:
        record = self._conversations.get(conversation_id)
        if record is None:
            raise NotFoundError(f"Conversation with id '{conversation_id}' not found.", param=param)
        return record

    def update(self, conversation_id: str, body: dict[str, Any]) -> ConversationRecord:
        record = self.get(conversation_id)
        if "metadata" not in body:
            raise BadRequestError(
                "Missing required parameter: 'metadata'.",
                param="metadata",
                code="missing_required_parameter",
            )
        record.metadata = _metadata(body["metadata"])
        return record

    def delete(self, conversation_id: str) -> dict[str, Any]:
        self.get(conversation_id)
        del self._conversations[conversation_id]
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    def add_items(self, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self.get(conversation_id)
        if "items" not in body:
            raise BadRequestError(
                "Missing required parameter: 'items'.",
                param="items",
                code="missing_required_parameter",
            )
        added = _unique(_new_items(body["items"], "items"), record.items)
        record.items.extend(added)
        return {
            "object": "list",
            "data": added,
            "first_id": added[0]["id"] if added else None,
            "last_id": added[-1]["id"] if added else None,
            "has_more": False,
        }

    def append(self, record: ConversationRecord, items: list[dict[str, Any]]) -> None:
        """What a response adds: its input, then its output. An item passed back with an id the
        conversation already holds gets a new one, so every id names one item."""
        known = {item["id"] for item in record.items}
        for item in items:
            stored = stored_item(item)
            if stored["id"] in known:
                stored = stored_item({k: v for k, v in item.items() if k != "id"})
            known.add(stored["id"])
            record.items.append(stored)

    def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any]:
        for item in self.get(conversation_id).items:
            if item["id"] == item_id:
                return item
        raise NotFoundError(f"Item with id '{item_id}' not found.", param="item_id")

    def delete_item(self, conversation_id: str, item_id: str) -> ConversationRecord:
        record = self.get(conversation_id)
        item = self.get_item(conversation_id, item_id)
        record.items.remove(item)
        return record

    def list_items(
        self, conversation_id: str, *, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        """One page of items (the handler validated ``limit`` and ``order``)."""
        record = self.get(conversation_id)
        ordered = record.items if order == "asc" else record.items[::-1]
        if after is not None:
            positions = [i for i, item in enumerate(ordered) if item["id"] == after]
            ordered = ordered[positions[0] + 1 :] if positions else []
        data = ordered[:limit]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(ordered) > len(data),
        }
