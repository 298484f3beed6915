"""FileRef and discovery: which files did a run produce, and where do they live?

Files surface in several places (api-reference §1.6–1.7, §4.3): ``container_file_citation``
annotations of the Responses API (streamed as ``response.output_text.annotation.added`` and
repeated in later events), ``file_path`` annotations and ``image_file`` blocks of Assistants
messages, and the container's file list. Discovery walks any of these shapes — an SDK object,
a stream of events as they arrive, or raw JSON — and yields each file exactly once (an image can
be cited twice). Walking generically keeps it working when new item types appear.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote

__all__ = ["FileRef", "RefCollector", "find_files", "rewrite_sandbox_links", "to_jsonable"]

#: Where a file was found; ``displayed`` is a figure the code only displayed (``plt.show()``),
#: taken from the ``code_interpreter_call``'s ``outputs`` because no file carried it.
RefSource = Literal["citation", "listing", "assistants", "displayed"]


@dataclass(frozen=True)
class FileRef:
    """One file to fetch: a container file (``cfile_…``) or a Files-API file (``assistant-…``)."""

    file_id: str
    filename: str
    container_id: str | None = None
    source: RefSource = "citation"
    response_id: str | None = None
    #: Path inside the container (``/mnt/data/…``) when known from a listing.
    path: str | None = field(default=None, compare=False)
    #: Size from the container's file record, when known.
    bytes: int | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.container_id, self.file_id)

    @property
    def is_container_file(self) -> bool:
        """``cfile_`` ids live in a container; never send them to ``/files``."""
        return self.container_id is not None and not self.file_id.startswith(
            ("assistant-", "file-")
        )


def to_jsonable(obj: Any) -> Any:
    """SDK models, JSON text and plain data -> plain JSON-like data."""
    if isinstance(obj, bytes | bytearray):
        obj = obj.decode("utf-8")
    if isinstance(obj, str):
        return json.loads(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", warnings=False)
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, list | tuple):
        return [to_jsonable(x) for x in obj]
    data = getattr(obj, "data", None)  # SDK pages (e.g. messages.list())
    if isinstance(data, list):
        return [to_jsonable(x) for x in data]
    return obj


def _better_name(current: str, new: str, file_id: str) -> bool:
    """Prefer the model's name over an auto-generated ``cfile_….png``."""
    return current.startswith(file_id) and not new.startswith(file_id)


class RefCollector:
    """Feed it events (or whole objects) as they arrive; it returns only new FileRefs."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        #: Every container seen (citations and code_interpreter_call items), in order.
        self.container_ids: list[str] = []
        self._refs: dict[tuple[str | None, str], FileRef] = {}

    @property
    def refs(self) -> list[FileRef]:
        return list(self._refs.values())

    def feed(self, obj: Any) -> list[FileRef]:
        """Discover refs in one event / response / message; return those not seen before."""
        data = to_jsonable(obj)
        found: list[FileRef] = []
        for ref in self._walk(data):
            existing = self._refs.get(ref.key)
            if existing is None:
                self._refs[ref.key] = ref
                found.append(ref)
            elif _better_name(existing.filename, ref.filename, ref.file_id):
                self._refs[ref.key] = ref
        return found

    def _container(self, container_id: object) -> None:
        if isinstance(container_id, str) and container_id not in self.container_ids:
            self.container_ids.append(container_id)

    def _walk(self, node: Any) -> Iterator[FileRef]:
        if isinstance(node, list):
            for item in node:
                yield from self._walk(item)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if node.get("object") == "response" and isinstance(node.get("id"), str):
            self.response_id = self.response_id or node["id"]
        if kind == "container_file_citation" and node.get("file_id"):
            self._container(node.get("container_id"))
            yield FileRef(
                file_id=str(node["file_id"]),
                filename=str(node.get("filename") or node["file_id"]),
                container_id=node.get("container_id"),
                source="citation",
                response_id=self.response_id,
            )
        elif kind == "code_interpreter_call":
            self._container(node.get("container_id"))
        elif kind == "file_path" and isinstance(node.get("file_path"), dict):
            yield self._assistants_ref(node["file_path"].get("file_id"), node.get("text"))
        elif kind == "image_file" and isinstance(node.get("image_file"), dict):
            yield self._assistants_ref(node["image_file"].get("file_id"), None)
        elif kind == "image" and isinstance(node.get("image"), dict):
            yield self._assistants_ref(node["image"].get("file_id"), None)
        for key, value in node.items():
            if isinstance(value, dict | list) and key not in ("file_path", "image_file", "image"):
                yield from self._walk(value)

    def _assistants_ref(self, file_id: object, text: object) -> FileRef:
        fid = str(file_id)
        name = PurePosixPath(str(text)).name if isinstance(text, str) and text else fid
        return FileRef(file_id=fid, filename=name, source="assistants")


def find_files(obj: Any) -> list[FileRef]:
    """Every file cited by a Response, a list of stream events, Assistants messages or JSON.

    ``obj`` may be an SDK object, a ``dict``, JSON text, or an iterable of any of these (a
    recorded stream). Order is first appearance; duplicates are dropped.
    """
    collector = RefCollector()
    if isinstance(obj, str | bytes | bytearray | dict) or hasattr(obj, "model_dump"):
        collector.feed(obj)
    elif isinstance(obj, Iterable):
        for item in obj:
            collector.feed(item)
    else:
        collector.feed(obj)
    return collector.refs


_SANDBOX_LINK = re.compile(r"sandbox:/mnt/data/([^)\s\]]+)")


def rewrite_sandbox_links(text: str, local_paths: dict[str, str]) -> str:
    """Replace ``sandbox:/mnt/data/NAME`` with the local path NAME was saved to.

    ``local_paths`` maps container file names (the cited basename or path) to local paths;
    paths with spaces or parentheses get markdown's ``<…>`` form so the link still works.
    """

    def replace(match: re.Match[str]) -> str:
        raw = match.group(1)
        name = unquote(raw)
        local = local_paths.get(name) or local_paths.get(PurePosixPath(name).name)
        if local is None:
            return match.group(0)
        if any(c in local for c in " ()<>"):
            return f"<{local}>"
        return local

    return _SANDBOX_LINK.sub(replace, text)
