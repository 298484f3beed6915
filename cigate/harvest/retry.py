"""The one retry policy of every upstream call the harvest makes (downloads, listings, records).

The SDK's own retries ignore ``x-ms-retry-after-ms`` and give up at once on long delays
(api-reference §5.3); downloads need their own policy: bounded attempts, exponential backoff
with jitter, and the server's delay honoured from any of the three headers Azure and OpenAI use.
Whether a failure is worth another attempt is :func:`cigate.harvest.classify.retryable`'s
answer, passed in as ``retryable`` (this module knows no error classes). The loop itself is
tenacity's (:meth:`RetryPolicy.call`); the delays, the stop rule and the refusal of long
server delays are this policy's.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from cigate.exceptions import CigateError

__all__ = ["MAX_RETRY_AFTER", "RETRYABLE_STATUSES", "OnRetry", "RetryPolicy", "parse_retry_after"]

T = TypeVar("T")
#: Called before each retry with the attempts used so far and the error. A wait for one of
#: this process's own connections uses none (``RetryPolicy.call``'s ``unsent``), so the
#: number can be 0 and repeat.
OnRetry = Callable[[int, CigateError], Awaitable[None]]

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


#: The longest wait a server's header is read as, seconds (a day): longer than any retry waits
#: for (``--max-retry-wait``), and a number the gateway can write back in its own answer.
MAX_RETRY_AFTER = 86400.0


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait (at most :data:`MAX_RETRY_AFTER`), or ``None``.

    Order: ``retry-after-ms`` (Azure OpenAI, OpenAI), ``x-ms-retry-after-ms`` (Azure gateways),
    then ``retry-after`` (seconds or an HTTP date). Negative, unparsable or non-finite values
    (``inf``, ``1e999``) are ignored: a server's header must not become an endless wait or a
    header the gateway cannot write back. A finite but huge one (``1e300``, a date centuries
    ahead) is read as a day: it was written back as a 301-digit ``Retry-After``.
    """
    value = _server_delay(headers, now)
    return None if value is None else min(value, MAX_RETRY_AFTER)


def _server_delay(headers: Mapping[str, str], now: float | None) -> float | None:
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = lower.get(name)
        if raw is not None:
            try:
                value = float(raw) / 1000.0
            except ValueError:
                continue
            if 0 <= value < math.inf:
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
    return value if 0 <= value < math.inf else None


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

    async def call(
        self,
        op: Callable[[], Awaitable[T]],
        retryable: Callable[[CigateError], bool],
        *,
        on_retry: OnRetry | None = None,
        unsent: Callable[[CigateError], bool] | None = None,
    ) -> T:
        """Run ``op`` until it succeeds, fails for good, or the attempts run out.

        A failure ``unsent`` says never reached the upstream (every connection of this
        process's pool was in use) is tried again without using up an attempt: waiting for
        our own connections is no try of the service. Such failures take at most
        :attr:`max_wait` seconds of the call in all (their own time, not the real tries');
        past that, each counts as an attempt again. ``on_retry`` is told the attempts used.
        The last :class:`~cigate.exceptions.CigateError` is raised; when the server asked
        for a longer wait than :attr:`max_wait`, its hint says so.
        """
        not_sent = 0  # failures that used no attempt
        waited = 0.0  # seconds those took
        tried_at = 0.0  # when the current attempt began

        async def attempt() -> T:
            nonlocal tried_at
            tried_at = time.monotonic()
            return await op()

        def used(state: RetryCallState) -> int:
            return state.attempt_number - not_sent

        def worth_retrying(error: BaseException) -> bool:
            return isinstance(error, CigateError) and retryable(error)

        def after(state: RetryCallState) -> None:
            """Once per failure that is retried, before ``wait`` and ``stop`` ask ``used``."""
            nonlocal not_sent, waited
            if unsent is not None and waited < self.max_wait and unsent(_error(state)):
                not_sent += 1
                waited += time.monotonic() - tried_at

        def wait(state: RetryCallState) -> float:
            return self.delay(max(1, used(state)), _error(state).retry_after)

        def stop(state: RetryCallState) -> bool:
            return not self.should_retry(used(state), _error(state).retry_after)

        async def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None:
                await on_retry(used(state), _error(state))

        retrying = AsyncRetrying(
            retry=retry_if_exception(worth_retrying),
            after=after,
            stop=stop,
            wait=wait,
            before_sleep=before_sleep,
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except CigateError as error:
            delay = error.retry_after
            if delay is not None and delay > self.max_wait:
                error.hint = (
                    f"The service asks to wait {delay:.0f} s, longer than the "
                    f"{self.max_wait:.0f} s allowed (--max-retry-wait); {error.hint}"
                )
            raise


def _error(state: RetryCallState) -> CigateError:
    """The error of the attempt that just failed (only CigateErrors are retried)."""
    assert state.outcome is not None
    error = state.outcome.exception()
    assert isinstance(error, CigateError)
    return error
