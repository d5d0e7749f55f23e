"""Latency and memory measurement."""

from __future__ import annotations

import time

import numpy as np
import pytest

from anyseg.errors import InputError
from anyseg.eval.perf import RSSMonitor, Timer, current_rss_mb, measure_latency, peak_rss_mb


def test_timer():
    with Timer() as t:
        time.sleep(0.02)
    assert 0.018 <= t.elapsed_s < 0.5
    calls = []
    with Timer(sync=lambda: calls.append(1)):
        pass
    assert calls == [1, 1]  # synchronized before starting and before stopping


def test_measure_latency_of_sleep():
    calls = []

    def work(x, scale=1.0):
        calls.append(x)
        time.sleep(x * scale)

    r = measure_latency(work, 0.05, warmup=2, repeat=4, scale=1.0)
    assert len(calls) == 6  # 2 warm-up + 4 timed
    assert set(r) == {"mean_s", "median_s", "p95_s", "min_s", "fps"}
    assert 0.049 <= r["min_s"] <= r["median_s"] <= r["p95_s"]
    assert 0.049 <= r["mean_s"] < 0.2
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
        time.sleep(0.1)
        del a  # freed before the block ends: only the sampling thread saw it
        time.sleep(0.05)
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
