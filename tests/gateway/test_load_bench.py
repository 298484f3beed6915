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
    """``bunched``: the share of events sent within 50 µs of the one before, and what
    independent streams at the same mean rate would give (a Poisson stream's gaps)."""
    bunched = _load_bench_module().bunched
    ms = 1_000_000
    even = [n * ms for n in range(1_000)]  # one event a millisecond, never two together
    close, independent = bunched(even)
    assert close == 0.0
    assert abs(independent - (1 - math.exp(-0.05))) < 1e-3
    # What epoll's millisecond timers did: ten events in each millisecond, 1 µs apart.
    bursts = [n * ms + k * 1_000 for n in range(100) for k in range(10)]
    close, independent = bunched(bursts)
    assert abs(close - 900 / 999) < 1e-9
    assert independent < 0.5 < close
    assert bunched([]) == (0.0, 0.0)
    assert bunched([5, 5, 5]) == (0.0, 0.0)


def test_the_upstream_keeps_time_to_the_microsecond_unless_told_otherwise() -> None:
    """The reference upstream runs on ``select(2)`` (microsecond waits); epoll's millisecond
    timers stay available by name. Past the descriptor limit of ``select`` the default is
    asyncio's loop (the report names it), and asking for ``select`` there is refused up front
    rather than crashing the upstream mid-run."""
    bench = _load_bench_module()
    assert bench.arguments([]).upstream_loop == "select"
    assert bench.arguments(["--concurrency", "401"]).upstream_loop == "asyncio"
    loop = bench.select_loop()
    try:
        assert isinstance(loop._selector, selectors.SelectSelector)
        assert loop.run_until_complete(asyncio.sleep(0.0001, result="ran")) == "ran"
    finally:
        loop.close()
    assert bench.arguments(["--concurrency", "400"]).concurrency == 400
    with pytest.raises(SystemExit):
        bench.arguments(["--concurrency", "401", "--upstream-loop", "select"])
    wide = bench.arguments(["--concurrency", "1000", "--upstream-loop", "asyncio"])
    assert (wide.concurrency, wide.upstream_loop) == (1000, "asyncio")
