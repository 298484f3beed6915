"""The load benchmark (``bench/load.py --quick``) runs end to end and loses no file.

Timings are the benchmark's business, never asserted here (the machine is shared).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
import os
import re
import select
import selectors
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cigate.gateway.app import QUIET_GC_THRESHOLDS
from cigate.gateway.settings import GatewaySettings
from tests.gateway.harness import GatewayHarness

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"


def test_the_quick_load_bench_streams_on_all_three_paths_and_loses_no_file() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cited = re.search(r"^files: (\d+) cited through the gateway, (\d+) lost$", run.stdout, re.M)
    assert cited is not None, run.stdout
    assert (int(cited[1]), int(cited[2])) == (20, 0)
    assert re.search(r"^gateway +20 streams, 200 events", run.stdout, re.M), run.stdout
    assert re.search(r"^direct +20 streams, 200 events", run.stdout, re.M), run.stdout
    # The reference relay carried whole streams too, and its share is reported.
    assert re.search(r"^relay +20 streams, 200 events", run.stdout, re.M), run.stdout
    assert re.search(r"^reference: a bare byte relay adds p50 -?[\d.]+ ms", run.stdout, re.M)
    # The gateway had CPUs of its own where there are two to split (``--cpus split``).
    split = len(os.sched_getaffinity(0)) >= 2
    expected = r"^CPUs: gateway and relay on \[" if split else r"^CPUs: all processes share"
    assert re.search(expected, run.stdout, re.M), run.stdout
    assert run.stdout.splitlines()[-1].startswith("load: added per-event latency")
    # The reference upstream's timers, named on the verdict's line, and how bunched it sent.
    assert ", upstream on select -> " in run.stdout.splitlines()[-1]
    assert re.search(
        r"^upstream's timing \(gateway phases\): \d+% of the events were sent within 50 µs",
        run.stdout,
        re.M,
    ), run.stdout


def test_the_bench_pins_every_thread_of_a_process_to_its_half_of_the_cpus() -> None:
    """The halves are disjoint and cover this process's CPUs; ``pin`` moves a running
    process's threads (a gateway's loop, its database and blob threads) there."""
    bench = _load_bench_module()
    cpus = set(os.sched_getaffinity(0))
    halves = bench.split_cpus()
    if len(cpus) < 2:
        assert halves is None
        return
    load, server = halves
    assert load
    assert server
    assert not load & server
    assert load | server == cpus
    two_threads = "import threading,time; threading.Thread(target=time.sleep,args=(60,)).start()"
    child = subprocess.Popen(
        [sys.executable, "-c", f"{two_threads}; print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"up\n"
        bench.pin(child.pid, server)
        threads = os.listdir(f"/proc/{child.pid}/task")
        assert len(threads) == 2
        assert all(os.sched_getaffinity(int(tid)) == server for tid in threads)
    finally:
        child.kill()
        child.communicate()


def test_a_served_gateway_hides_its_start_up_heap_from_the_garbage_collector(
    tmp_path: Path,
) -> None:
    """``quiet_gc`` (what ``cigate gateway serve`` asks for): once started, the app's heap is
    frozen and collections run less often, so no pause walks every module and table while
    streams wait (full collections of 16–72 ms under ``bench/load.py`` before)."""
    settings = GatewaySettings(
        upstream="http://127.0.0.1:9",
        upstream_auth="none",
        database=f"sqlite:///{tmp_path / 'gw.db'}",
        blobs=str(tmp_path / "blobs"),
    )
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        with GatewayHarness(settings):
            assert gc.get_freeze_count() == frozen  # an app built for tests: nothing changed
            assert gc.get_threshold() == before
        with GatewayHarness(settings, quiet_gc=True) as served:
            assert served.client.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > frozen + 10_000  # modules, tables, settings, app
            assert gc.get_threshold() == QUIET_GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _load_bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cigate_bench_load", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def test_streams_start_in_order_over_the_ramp_and_never_more_than_the_concurrency() -> None:
    """The bench's phases: later streams wait for a slot a ramped one opened and another
    stream ended, instead of all starting at once with the first (the defaults' 400 streams
    at concurrency 200 began with a burst of 200: the ramp only delayed the first 200)."""
    ramped = _load_bench_module().ramped
    loop = asyncio.get_running_loop()
    began = loop.time()
    started: list[tuple[int, float, int]] = []  # (n, when, runs open then)
    open_now = 0

    async def run(n: int) -> int:
        nonlocal open_now
        open_now += 1
        started.append((n, loop.time() - began, open_now))
        await asyncio.sleep(0.05)
        open_now -= 1
        return n * n

    assert await ramped(9, 3, 0.3, run) == [n * n for n in range(9)]
    assert [n for n, _, _ in started] == list(range(9))
    # A slot opens every 0.1 s (never earlier: sleeps do not end early), three in all.
    for n, when, running in started:
        assert running <= min(3, 1 + int((when + 0.005) / 0.1)), (n, when, running)
    assert max(running for _, _, running in started) == 3


def test_the_report_tells_bunched_upstream_timers_from_independent_streams() -> None:
    """``bunched``: the share of events sent within 50 µs of the one before, what independent
    streams at the same rate would give (a Poisson stream's gaps, the rate taken per 100 ms),
    and the burst an event was sent in, on average."""
    bunched = _load_bench_module().bunched
    ms = 1_000_000
    even = [n * ms for n in range(1_000)]  # one event a millisecond, never two together
    timing = bunched(even)
    assert timing.close == 0.0
    assert abs(timing.independent - (1 - math.exp(-0.05))) < 1e-3
    assert timing.burst == 1.0
    # What epoll's millisecond timers did: ten events in each millisecond, 1 µs apart.
    bursts = [n * ms + k * 1_000 for n in range(100) for k in range(10)]
    timing = bunched(bursts)
    assert abs(timing.close - 900 / 999) < 1e-9
    assert abs(timing.independent - (1 - math.exp(-0.5))) < 1e-3  # 10 events a ms
    assert timing.burst == 10.0
    # Two phases 10 s apart (the other paths ran between): the rate is each phase's own,
    # not the events over the whole span.
    spread = [n * ms // 10 for n in range(1_000)]  # 10 events a ms, evenly
    timing = bunched(spread + [t + 10_000 * ms for t in spread])
    assert timing.close == 0.0
    assert abs(timing.independent - (1 - math.exp(-0.5))) < 1e-2
    assert bunched([]).burst == 0.0
    assert bunched([5]).close == 0.0


class _Timeouts:
    """An epoll object that records the timeout each wait hands to the kernel."""

    def __init__(self, epoll: select.epoll, seen: list[float]) -> None:
        self._epoll, self.seen = epoll, seen

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        self.seen.append(timeout)
        return self._epoll.poll(timeout, maxevents)

    def __getattr__(self, name: str) -> object:
        return getattr(self._epoll, name)


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's; the bench's premise")
def test_the_upstream_loop_waits_for_its_timers_in_microseconds_where_epoll_waits_whole_ms() -> (
    None
):
    """Why the reference upstream runs on ``select(2)``: asyncio's epoll selector rounds
    every wait up to whole milliseconds (all timers due within one fire together), the
    upstream's loop hands the kernel the time left as it is. No timing is asserted: only the
    timeouts the loops pass to the system call."""
    seen_epoll: list[float] = []
    epoll_selector = selectors.EpollSelector()
    epoll_selector._selector = _Timeouts(epoll_selector._selector, seen_epoll)  # type: ignore[assignment]
    _run_sleeps(asyncio.SelectorEventLoop(epoll_selector))
    positive = [t for t in seen_epoll if t > 0]
    assert positive, seen_epoll
    assert all(abs(t * 1000 - round(t * 1000)) < 1e-9 for t in positive), positive

    seen_select: list[float] = []
    loop = _load_bench_module().select_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    assert isinstance(selector, selectors.SelectSelector)

    def recorded(r: list[int], w: list[int], x: list[int], timeout: float | None = None) -> object:
        if timeout is not None:
            seen_select.append(timeout)
        return select.select(r, w, x, timeout)

    selector._select = recorded
    _run_sleeps(loop)
    positive = [t for t in seen_select if t > 0]
    assert positive, seen_select
    assert all(t <= 0.02 for t in positive), positive
    assert any(abs(t * 1000 - round(t * 1000)) > 1e-6 for t in positive), positive


def _run_sleeps(loop: asyncio.AbstractEventLoop) -> None:
    """Five timers of 20 ms on ``loop``, then close it."""

    async def sleeps() -> None:
        for _ in range(5):
            await asyncio.sleep(0.02)

    try:
        loop.run_until_complete(sleeps())
    finally:
        loop.close()


def test_the_upstream_loop_is_select_up_to_its_descriptor_limit_and_named_otherwise() -> None:
    """The reference upstream runs on ``select(2)`` (microsecond waits); epoll's millisecond
    timers stay available by name. Past the descriptor limit of ``select`` the default is
    asyncio's loop (the report names it), and asking for ``select`` there is refused up front
    rather than crashing the upstream mid-run."""
    bench = _load_bench_module()
    assert bench.arguments([]).upstream_loop == "select"
    assert bench.arguments(["--concurrency", "401"]).upstream_loop == "asyncio"
    assert bench.arguments(["--concurrency", "400"]).concurrency == 400
    with pytest.raises(SystemExit):
        bench.arguments(["--concurrency", "401", "--upstream-loop", "select"])
    wide = bench.arguments(["--concurrency", "1000", "--upstream-loop", "asyncio"])
    assert (wide.concurrency, wide.upstream_loop) == (1000, "asyncio")
