"""The retry loop of the harvest's one policy (tenacity runs it; the rules are the policy's)."""

from __future__ import annotations

import asyncio

import pytest

from cigate.exceptions import BadInputError, CigateError, RateLimitedError
from cigate.harvest.classify import retryable
from cigate.harvest.retry import RetryPolicy

FAST = RetryPolicy(attempts=3, backoff=0.001, backoff_max=0.002, max_wait=5)


def _run(policy: RetryPolicy, failures: list[BaseException]) -> tuple[object, list, int]:
    calls = 0
    retried: list[tuple[int, str]] = []

    async def op() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    async def on_retry(attempt: int, error: CigateError) -> None:
        retried.append((attempt, error.message))

    async def main() -> object:
        try:
            return await policy.call(op, retryable, on_retry=on_retry)
        except BaseException as exc:  # returned for the assertions
            return exc

    return asyncio.run(main()), retried, calls


def test_transient_failures_are_retried_and_reported_before_each_retry() -> None:
    errors = [RateLimitedError("busy 1", retry_after=0), RateLimitedError("busy 2", retry_after=0)]
    result, retried, calls = _run(FAST, errors)
    assert result == "ok"
    assert calls == 3
    assert retried == [(1, "busy 1"), (2, "busy 2")]


def test_the_last_error_is_raised_when_the_attempts_run_out() -> None:
    errors = [RateLimitedError(f"busy {i}", retry_after=0) for i in range(5)]
    result, retried, calls = _run(FAST, errors)
    assert isinstance(result, RateLimitedError)
    assert result.message == "busy 2"
    assert calls == 3
    assert [a for a, _ in retried] == [1, 2]


def test_an_error_that_is_not_retryable_is_raised_at_once() -> None:
    result, retried, calls = _run(FAST, [BadInputError("bad request", status=400)])
    assert isinstance(result, BadInputError)
    assert (calls, retried) == (1, [])


def test_a_server_delay_longer_than_allowed_stops_at_once_and_says_so() -> None:
    result, retried, calls = _run(FAST, [RateLimitedError("slow down", retry_after=3600)])
    assert isinstance(result, RateLimitedError)
    assert (calls, retried) == (1, [])
    assert "asks to wait 3600 s, longer than the 5 s allowed" in result.hint


@pytest.mark.parametrize("error", [ValueError("bug"), KeyError("k")], ids=["value", "key"])
def test_an_exception_that_is_no_cigate_error_passes_through_untouched(
    error: BaseException,
) -> None:
    result, retried, calls = _run(FAST, [error])
    assert result is error
    assert (calls, retried) == (1, [])
