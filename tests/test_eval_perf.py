"""Latency and memory measurement."""

from __future__ import annotations

import time

import numpy as np
import pytest

from anyseg.errors import InputError
from anyseg.eval.perf import RSSMonitor, Timer, current_rss_mb, measure_latency, peak_rss_mb


class _FakeClock:
    """perf_counter that advances only when told: timings are exact, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_timer(monkeypatch):
    with Timer() as t:
        time.sleep(0.02)
    assert t.elapsed_s >= 0.018  # a sleep lasts at least this long; no upper bound (shared CI machine)
    clock = _FakeClock()
    monkeypatch.setattr("anyseg.eval.perf.time.perf_counter", clock)
    with Timer() as t:
        clock.now += 0.25
    assert t.elapsed_s == pytest.approx(0.25)
    monkeypatch.undo()
    calls = []
    with Timer(sync=lambda: calls.append(1)):
        pass
    assert calls == [1, 1]  # synchronized before starting and before stopping


def test_measure_latency(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr("anyseg.eval.perf.time.perf_counter", clock)
    calls = []
    durations = iter([9.0, 9.0, 0.1, 0.2, 0.3, 0.4])  # 2 warm-up calls (not timed), then 4 timed

    def work(x, scale=1.0):
        calls.append(x)
        clock.now += next(durations) * scale

    r = measure_latency(work, 0.05, warmup=2, repeat=4, scale=1.0)
    monkeypatch.undo()
    assert len(calls) == 6
    assert set(r) == {"mean_s", "median_s", "p95_s", "min_s", "fps"}
    assert r["min_s"] == pytest.approx(0.1) and r["median_s"] == pytest.approx(0.25)
    assert r["mean_s"] == pytest.approx(0.25) and r["p95_s"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4], 95))
    assert r["fps"] == pytest.approx(1 / r["mean_s"])
    with pytest.raises(InputError):
        measure_latency(work, 0.0, repeat=0)
    with pytest.raises(InputError):
        measure_latency("not callable")


def test_peak_rss():
    assert peak_rss_mb() >= current_rss_mb() * 0.9 > 0


def test_rss_monitor_sees_a_200_mb_allocation():
    with RSSMonitor(interval_s=0.01) as mon:
        a = np.ones(200 * 1024 * 1024 // 8)  # 200 MiB, every page written
        deadline = time.monotonic() + 60  # a safety net only: wait for the sampler to see it, however loaded
        while mon.peak_mb - mon.baseline_mb < 180 and time.monotonic() < deadline:
            time.sleep(0.01)
        del a  # freed before the block ends: only the sampling thread saw it
    assert mon.baseline_mb > 0
    assert mon.delta_mb >= 180, (mon.baseline_mb, mon.peak_mb)
    assert mon.peak_mb - current_rss_mb() >= 150  # the memory was returned, the peak remains
    with RSSMonitor() as quiet:
        pass
    assert quiet.delta_mb < 50


def test_peak_rss_of_a_child_is_its_own(tmp_path):
    """ru_maxrss survives fork + exec; peak_rss_mb must not report the parent's peak for a child."""
    import subprocess
    import sys

    import numpy as np

    from anyseg.eval.perf import peak_rss_mb

    big = np.ones(300 * 2**20 // 8)  # ~300 MiB touched in this process
    assert peak_rss_mb() > 300
    del big
    code = "from anyseg.eval.perf import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out.strip()) < 200
