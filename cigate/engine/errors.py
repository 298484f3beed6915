"""Typed API errors raised by engine backends and rendered by whichever app hosts them.

The message, type and code strings copy the real service's (api-reference sections 3.4, 5) so
that clients matching on them (``"Container is expired."``) behave as in production.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the API answers with: HTTP status + OpenAI error envelope fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = "invalid_request_error",  # shadows the builtin: the wire field's name
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        """The OpenAI envelope: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class NotFoundError(ApiError):
    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(404, message, code=None, param=param)


class BadRequestError(ApiError):
    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, code=code, param=param)


def container_not_found(container_id: str) -> NotFoundError:
    return NotFoundError(f"Container with id '{container_id}' not found.", param="container_id")


def container_expired() -> BadRequestError:
    return BadRequestError("Container is expired.", param="container_id")


def container_file_not_found(container_id: str, file_id: str) -> NotFoundError:
    return NotFoundError(f"File {file_id} not found on container {container_id}.")
