"""Unguessable ids shaped like the real service's (api-reference section 0).

Real ids carry a time-ordered prefix; ours use 128+ random bits so that ids are unguessable
(the gateway relies on that) while looking like production ids to clients that pattern-match.
"""

from __future__ import annotations

import secrets
import string

_BASE62 = string.digits + string.ascii_letters


def hex_id(prefix: str, hex_chars: int = 48) -> str:
    """``resp_``, ``msg_``, ``ci_``, ``cntr_`` style: prefix + lowercase hex."""
    return prefix + secrets.token_hex((hex_chars + 1) // 2)[:hex_chars]


def base62_id(prefix: str, chars: int = 22) -> str:
    """``assistant-…`` / ``file-…`` style: prefix + base62."""
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(chars))


def response_id() -> str:
    return hex_id("resp_", 50)


def message_id() -> str:
    return hex_id("msg_")


def code_call_id() -> str:
    return hex_id("ci_")


def function_call_id() -> str:
    return hex_id("fc_")


def call_id() -> str:
    """The ``call_id`` a function result answers (``call_`` + base62, as OpenAI's)."""
    return base62_id("call_", 24)


def chat_completion_id() -> str:
    return base62_id("chatcmpl-", 29)


def container_id() -> str:
    return hex_id("cntr_")


def container_file_id() -> str:
    return hex_id("cfile_", 32)


def file_id(*, azure: bool) -> str:
    """Files-API id: ``assistant-…`` on Azure paths, ``file-…`` on OpenAI-style paths."""
    return base62_id("assistant-") if azure else base62_id("file-")


def request_id() -> str:
    return secrets.token_hex(16)
