"""Retry decisions and delays for downloads.

The SDK's own retries ignore ``x-ms-retry-after-ms`` and give up at once on long delays
(api-reference §5.3); downloads need their own policy: bounded attempts, exponential backoff
with jitter, and the server's delay honoured from any of the three headers Azure and OpenAI use.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or ``None``.

    Order: ``retry-after-ms`` (Azure OpenAI, OpenAI), ``x-ms-retry-after-ms`` (Azure gateways),
    then ``retry-after`` (seconds or an HTTP date). Negative or unparsable values are ignored.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = lower.get(name)
        if raw is not None:
            try:
                value = float(raw) / 1000.0
            except ValueError:
                continue
            if value >= 0:
                return value
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        current = time.time() if now is None else now
        return max(0.0, parsed.timestamp() - current)
    return value if value >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, how long between them, and how long we are willing to wait."""

    attempts: int = 4
    backoff: float = 0.5
    backoff_max: float = 8.0
    max_wait: float = 120.0

    def delay(self, attempt: int, server_delay: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if server_delay is not None:
            return server_delay
        base = min(self.backoff * 2.0 ** (attempt - 1), self.backoff_max)
        return base * (1 - 0.25 * random.random())

    def should_retry(self, attempt: int, server_delay: float | None = None) -> bool:
        """More attempts left, and the server does not ask for an unreasonable wait."""
        if attempt >= self.attempts:
            return False
        return server_delay is None or server_delay <= self.max_wait
