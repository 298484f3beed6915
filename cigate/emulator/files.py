"""The Files API (api-reference 4.1): route table, handlers, and ``FilesBackend``.

Files live on disk under ``<data_dir>/files/<id>``. Ids follow the path the upload came through:
``assistant-`` + 22 base62 on Azure paths, ``file-`` on OpenAI-style ``/v1`` paths. A ``cfile_``
(container file) id is not a Files id: on Azure paths any unknown id answers exactly
``404 {"error":{"code":"notFound","message":"The specified entity cannot be found."}}``.
``assistants_output`` files are made by the Assistants engine through ``FilesBackend.create``.

Upload names are checked as the service checks them (:mod:`cigate.engine.upload_names`: no
``.``/``..``, separators, control characters...) and then kept exactly; files the service makes
keep the name the code gave them. Names never reach the disk: a file is stored under its id.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cigate import ids
from cigate.clock import Clock
from cigate.emulator.bodies import upload_form
from cigate.emulator.errors import azure_entity_not_found
from cigate.emulator.state import backends
from cigate.engine.errors import BadRequestError, NotFoundError
from cigate.engine.pagination import page, parse_page_query
from cigate.engine.serving import open_stored, serve_open_file
from cigate.engine.upload_names import check_upload_name

#: Purposes a client may upload with (SDK ``FilePurpose``).
OPENAI_UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
#: Azure's upload purposes (AZSPEC); ``user_data`` is not supported there (AZDOC-RESP).
AZURE_UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "evals")
#: Every purpose a stored file may have, including ones only the service produces.
ALL_PURPOSES = (*OPENAI_UPLOAD_PURPOSES, "assistants_output", "batch_output", "fine-tune-results")
MIN_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS = 3600, 2_592_000


@dataclass
class FileRecord:
    """One stored file (``object: "file"``)."""

    id: str
    filename: str
    bytes: int
    purpose: str
    created_at: int
    path: Path
    expires_at: int | None = None
    status: str = "processed"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "expires_at": self.expires_at,
            "status_details": None,
        }


class FilesBackend:
    """Files-API state; raises ``NotFoundError`` / ``BadRequestError``."""

    def __init__(self, *, root: Path, clock: Clock) -> None:
        self.root = root
        self.clock = clock
        self._files: dict[str, FileRecord] = {}
        root.mkdir(parents=True, exist_ok=True)

    def create(
        self,
        filename: str,
        data: bytes,
        purpose: str,
        *,
        azure: bool,
        expires_after_seconds: int | None = None,
    ) -> FileRecord:
        """Store ``data``; ``azure`` picks the id style (``assistant-…`` vs ``file-…``)."""
        if purpose not in ALL_PURPOSES:
            raise BadRequestError(f"Invalid purpose '{purpose}'.", param="purpose")
        file_id = ids.file_id(azure=azure)
        path = self.root / file_id
        path.write_bytes(data)
        now = self.clock.now_int()
        record = FileRecord(
            id=file_id,
            filename=filename,
            bytes=len(data),
            purpose=purpose,
            created_at=now,
            path=path,
            expires_at=now + expires_after_seconds if expires_after_seconds else None,
        )
        self._files[file_id] = record
        return record

    def get(self, file_id: str) -> FileRecord:
        record = self._files.get(file_id)
        expires_at = record.expires_at if record is not None else None
        if record is not None and expires_at is not None and expires_at <= self.clock.now():
            self._remove(record)
            record = None
        if record is None:
            raise NotFoundError(f"No such File object: {file_id}", param="id")
        return record

    def read_bytes(self, file_id: str) -> bytes:
        return self.get(file_id).path.read_bytes()

    def list(self, *, purpose: str | None = None) -> list[FileRecord]:
        """Live files, oldest first, optionally of one purpose."""
        out = []
        for record in list(self._files.values()):
            with contextlib.suppress(NotFoundError):
                self.get(record.id)
                if purpose is None or record.purpose == purpose:
                    out.append(record)
        return out

    def delete(self, file_id: str) -> FileRecord:
        record = self.get(file_id)
        self._remove(record)
        return record

    def reset(self) -> None:
        self._files.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def _remove(self, record: FileRecord) -> None:
        self._files.pop(record.id, None)
        record.path.unlink(missing_ok=True)


# -- handlers: parse, call the backend, serialise ------------------------------------------


def _backend(request: Request) -> FilesBackend:
    return backends(request).files


def _lookup(request: Request, file_id: str) -> FileRecord:
    try:
        return _backend(request).get(file_id)
    except NotFoundError:
        if request.state.azure:
            raise azure_entity_not_found() from None
        raise


async def upload_file(request: Request) -> Response:
    azure: bool = request.state.azure
    async with upload_form(request) as form:
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequestError(
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        if not isinstance(purpose, str) or not purpose:
            raise BadRequestError(
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        _check_purpose(purpose, azure=azure)
        seconds = _expiry_seconds(
            form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
        )
        filename = check_upload_name(upload.filename)
        data = await upload.read()
    record = _backend(request).create(
        filename, data, purpose, azure=azure, expires_after_seconds=seconds
    )
    return JSONResponse(record.to_api())


def _check_purpose(purpose: str, *, azure: bool) -> None:
    allowed = AZURE_UPLOAD_PURPOSES if azure else OPENAI_UPLOAD_PURPOSES
    if purpose in allowed:
        return
    quoted = ", ".join(f"'{p}'" for p in allowed)
    if azure and purpose in OPENAI_UPLOAD_PURPOSES:
        raise BadRequestError(
            f"Invalid value for 'purpose': '{purpose}' is not supported on Azure OpenAI "
            f"(use 'assistants'). Supported values are: {quoted}.",
            param="purpose",
            code="invalid_value",
        )
    raise BadRequestError(f"'{purpose}' is not one of [{quoted}] - 'purpose'", param="purpose")


def _expiry_seconds(anchor: object, seconds: object) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise BadRequestError(
            f"Invalid value: '{anchor}'. Supported values are: 'created_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    try:
        value = int(str(seconds))
    except ValueError:
        raise BadRequestError(
            "Missing required parameter: 'expires_after.seconds'.",
            param="expires_after.seconds",
            code="missing_required_parameter",
        ) from None
    if not MIN_EXPIRY_SECONDS <= value <= MAX_EXPIRY_SECONDS:
        raise BadRequestError(
            f"Invalid 'expires_after.seconds': expected a value between {MIN_EXPIRY_SECONDS} "
            f"and {MAX_EXPIRY_SECONDS}, but got {value} instead.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return value


async def list_files(request: Request) -> Response:
    query = parse_page_query(request.query_params, default_limit=10_000, max_limit=10_000)
    records = _backend(request).list(purpose=request.query_params.get("purpose") or None)
    return JSONResponse(page(records, query, key=lambda r: r.id, render=FileRecord.to_api))


async def retrieve_file(request: Request) -> Response:
    return JSONResponse(_lookup(request, request.path_params["file_id"]).to_api())


async def delete_file(request: Request) -> Response:
    record = _lookup(request, request.path_params["file_id"])
    _backend(request).delete(record.id)
    return JSONResponse({"id": record.id, "object": "file", "deleted": True})


async def file_content_endpoint(request: Request) -> Response:
    record = _lookup(request, request.path_params["file_id"])
    opened = open_stored(record.path)
    if opened is None:  # removed between the lookup and the open (deleted, expired)
        if request.state.azure:
            raise azure_entity_not_found()
        raise NotFoundError(f"No such File object: {record.id}", param="id")
    return serve_open_file(request, opened, record.filename)


ROUTES: list[BaseRoute] = [
    Route("/files", upload_file, methods=["POST"], name="files.create"),
    Route("/files", list_files, methods=["GET"], name="files.list"),
    Route("/files/{file_id}", retrieve_file, methods=["GET"], name="files.retrieve"),
    Route("/files/{file_id}", delete_file, methods=["DELETE"], name="files.delete"),
    Route("/files/{file_id}/content", file_content_endpoint, methods=["GET"], name="files.content"),
]
