"""Error bodies of every shape map to the right error class; retry delays honour the server."""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest

from cigate.exceptions import (
    AccessDeniedError,
    ApiVersionError,
    BadInputError,
    CigateError,
    ContainerExpiredError,
    FileNotFoundInContainerError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from cigate.harvest.classify import (
    from_http,
    from_transport,
    looks_like_error_body,
    retryable,
    saturated,
)
from cigate.harvest.retry import RetryPolicy, parse_retry_after

CHECKACCESS = (
    "ApiId openai-api-2025-03-01-preview OperationId get-container not supported for CheckAccess."
)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            '{"error":{"message":"Container is expired.","type":"invalid_request_error"}}',
            ContainerExpiredError,
        ),
        (
            404,
            '{"error":{"message":"Container with id \'cntr_1\' not found."}}',
            ContainerExpiredError,
        ),
        (
            404,
            '{"error":{"message":"File cfile_1 not found on container cntr_1."}}',
            FileNotFoundInContainerError,
        ),
        (404, "", FileNotFoundInContainerError),
        (404, '{"error":{"code":"404","message":"Resource not found"}}', ApiVersionError),
        (
            400,
            '{"error":{"code":"BadRequest","message":"API version not supported"}}',
            ApiVersionError,
        ),
        (
            401,
            '{"error":{"code":"401","message":"Access denied due to invalid subscription key"}}',
            AccessDeniedError,
        ),
        (403, CHECKACCESS, AccessDeniedError),
        (500, CHECKACCESS, AccessDeniedError),
        (429, '{"error":{"code":"429","message":"Rate limit"}}', RateLimitedError),
        (
            500,
            '{"error":{"message":"server had an error","type":"server_error"}}',
            UpstreamUnavailableError,
        ),
        (
            408,
            '{"error":{"code":"Timeout","message":"The operation was timeout."}}',
            UpstreamUnavailableError,
        ),
        (422, '{"error":{"message":"bad"}}', BadInputError),
    ],
    ids=[
        "container-expired-400",
        "container-gone-404",
        "file-not-found",
        "empty-404",
        "azure-resource-not-found",
        "api-version-not-supported",
        "azure-401",
        "checkaccess-text",
        "checkaccess-any-status",
        "rate-limited",
        "server-error",
        "azure-timeout",
        "other-4xx",
    ],
)
def test_every_error_shape_maps_to_one_class_with_a_hint(
    status: int, body: str, expected: type[CigateError]
) -> None:
    err = from_http(status, body, {"x-request-id": "req_1"}, what="download")
    assert type(err) is expected
    assert err.hint
    assert err.status == status
    assert err.request_id == "req_1"


def test_a_refused_token_hints_at_the_scope() -> None:
    err = from_http(401, "", {}, what="x", uses_entra=True)
    assert "cognitiveservices.azure.com/.default" in err.hint


def test_a_keyless_resource_hints_at_entra() -> None:
    err = from_http(
        403,
        '{"error":{"message":"Key based authentication is disabled for this resource."}}',
        {},
        what="x",
    )
    assert "Entra" in err.hint


def test_an_error_json_is_recognised_but_a_data_json_is_not() -> None:
    assert looks_like_error_body(b'{"error":{"message":"x"}}')
    assert not looks_like_error_body(b'{"rows": [1, 2]}')
    assert not looks_like_error_body(b"\x89PNG")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"x-ms-retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e999"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "Infinity", "retry-after": "3"}, 3.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "1e300"}, 86400.0),
        ({"retry-after-ms": "9" * 40}, 86400.0),
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, 86400.0),
    ],
    ids=[
        "ms",
        "x-ms",
        "seconds",
        "http-date-past",
        "garbage",
        "none",
        "ms-wins",
        "inf",
        "overflow",
        "nan",
        "ms-inf-falls-back",
        "negative",
        "huge-is-a-day",
        "huge-ms-is-a-day",
        "far-date-is-a-day",
    ],
)
def test_the_server_delay_is_read_from_any_of_three_headers(
    headers: dict[str, str], expected: float | None
) -> None:
    assert parse_retry_after(headers) == expected


def test_backoff_grows_is_capped_and_long_server_delays_stop_retrying() -> None:
    policy = RetryPolicy(attempts=5, backoff=1.0, backoff_max=4.0, max_wait=120)
    assert 0.75 <= policy.delay(1) <= 1.0
    assert 3.0 <= policy.delay(5) <= 4.0
    assert policy.delay(1, 0.3) == 0.3
    assert policy.should_retry(1)
    assert not policy.should_retry(5)
    assert not policy.should_retry(1, 86400)


@pytest.mark.parametrize(
    "message",
    [
        "The code interpreter failed: the kernel process died while running code",
        "kernel did not become ready in time",
        "sandbox isolation 'bwrap' requested but bubblewrap is not usable",
    ],
    ids=["code-interpreter-failed", "kernel-not-ready", "sandbox-unusable"],
)
def test_a_500_saying_the_code_interpreter_failed_gets_a_code_interpreter_hint(
    message: str,
) -> None:
    body = json.dumps({"error": {"message": message, "code": "server_error"}})
    err = from_http(500, body, what="response")
    assert isinstance(err, UpstreamUnavailableError)
    assert "code interpreter itself failed" in err.hint
    assert "persistent 500s" not in err.hint


@pytest.mark.parametrize(
    ("exc", "says", "never_says"),
    [
        (httpx2.ConnectError("refused"), "No connection could be made", "--timeout"),
        (httpx2.ReadTimeout("slow"), "--timeout", "HARVEST_CONNECTIONS"),
        # Waiting for one of this process's own connections: nothing was sent, so a longer
        # --timeout (the hint it had) changes nothing.
        (httpx2.PoolTimeout("busy"), "HARVEST_CONNECTIONS", "--timeout"),
    ],
    ids=["connect", "read-timeout", "pool-timeout"],
)
def test_a_transport_failure_gets_the_hint_of_its_cause(
    exc: Exception, says: str, never_says: str
) -> None:
    error = from_transport(exc, what="download a.csv")
    assert isinstance(error, UpstreamUnavailableError)
    assert says in error.hint
    assert never_says not in error.hint
    # This process's own limit answers like the gateway's forwarding one: 503, in a second.
    pool = isinstance(exc, httpx2.PoolTimeout)
    assert (error.status == 503, error.retry_after) == ((True, 1.0) if pool else (False, None))


def _raised_from(cause: Exception, status: int = 503) -> UpstreamUnavailableError:
    """An error as the fetch chain raises it: mapped from ``cause`` (``raise … from``)."""
    try:
        raise UpstreamUnavailableError("attempt failed", status=status) from cause
    except UpstreamUnavailableError as error:
        return error


async def test_waiting_for_this_process_s_own_connections_uses_up_no_attempt() -> None:
    """A ``PoolTimeout`` (every connection of this process's pool in use) sent nothing: the
    retry tries again without counting it, and ``on_retry`` hears the attempts really used.
    A failure of the upstream still counts."""
    policy = RetryPolicy(attempts=2, backoff=0.001, backoff_max=0.001, max_wait=120)
    failures = [
        _raised_from(httpx2.PoolTimeout("busy")),
        _raised_from(httpx2.PoolTimeout("busy")),
        _raised_from(httpx2.ReadTimeout("slow")),  # the upstream's: one of the two attempts
        _raised_from(httpx2.PoolTimeout("busy")),
    ]
    heard: list[int] = []

    async def op() -> str:
        if failures:
            raise failures.pop(0)
        return "stored"

    async def on_retry(attempt: int, error: CigateError) -> None:
        heard.append(attempt)

    assert await policy.call(op, retryable, on_retry=on_retry, unsent=saturated) == "stored"
    assert heard == [0, 0, 1, 1]

    # Without ``unsent`` every failure is an attempt: two are all there are.
    failures[:] = [_raised_from(httpx2.PoolTimeout("busy")) for _ in range(3)]
    with pytest.raises(UpstreamUnavailableError):
        await policy.call(op, retryable)
    assert len(failures) == 1


async def test_the_waits_have_a_budget_of_their_own_apart_from_the_real_tries() -> None:
    """``max_wait`` bounds the time spent in failures that sent nothing, not the call's: a
    long real try followed by a wait for a connection is still tried again (a budget from
    the call's start ended it). Past the budget, each wait counts as an attempt."""
    policy = RetryPolicy(attempts=4, backoff=0.001, backoff_max=0.001, max_wait=0.05)
    calls = 0

    async def long_try_then_a_wait() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.1)  # longer than max_wait, and the upstream's failure
            raise _raised_from(httpx2.ReadError("cut off"))
        if calls == 2:
            raise _raised_from(httpx2.PoolTimeout("busy"))
        return "stored"

    assert await policy.call(long_try_then_a_wait, retryable, unsent=saturated) == "stored"
    assert calls == 3

    short = RetryPolicy(attempts=2, backoff=0.001, backoff_max=0.001, max_wait=0.05)
    calls = 0

    async def always_busy() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.1)  # one wait spends the whole budget
        raise _raised_from(httpx2.PoolTimeout("busy"))

    with pytest.raises(UpstreamUnavailableError):
        await short.call(always_busy, retryable, unsent=saturated)
    assert calls == 3  # the first wait was free, the next two were the two attempts


def test_only_a_pool_timeout_is_this_process_s_own_limit() -> None:
    assert saturated(httpx2.PoolTimeout("busy"))
    assert saturated(_raised_from(httpx2.PoolTimeout("busy")))
    for cause in (httpx2.ConnectTimeout("x"), httpx2.ReadTimeout("x"), httpx2.ConnectError("x")):
        assert not saturated(_raised_from(cause))
    assert not saturated(UpstreamUnavailableError("503 from the upstream", status=503))
