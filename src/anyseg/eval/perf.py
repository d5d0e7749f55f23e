"""Latency and memory measurement for benchmarks.

* :class:`Timer` / :func:`measure_latency`: wall-clock time with ``time.perf_counter``,
  after warm-up calls; pass ``sync`` (e.g. ``torch.cuda.synchronize``) to time GPU work,
  whose launches return before the work is done.
* :func:`peak_rss_mb`: the process's lifetime peak resident set (``getrusage``).
* :class:`RSSMonitor`: the peak resident set *of a section*, sampled from
  ``/proc/self/statm`` by a background thread, so that a benchmark can report the memory
  one step needed rather than the largest of everything the process did before.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

from anyseg.errors import InputError

__all__ = ["Timer", "measure_latency", "peak_rss_mb", "current_rss_mb", "RSSMonitor"]

_MB = 1024.0 * 1024.0


class Timer:
    """Context manager measuring wall-clock seconds: ``with Timer() as t: ...; t.elapsed_s``."""

    def __init__(self, sync: Callable[[], Any] | None = None) -> None:
        self.sync = sync
        self.elapsed_s = float("nan")
        self._start = 0.0

    def __enter__(self) -> "Timer":
        if self.sync is not None:
            self.sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.sync is not None:
            self.sync()
        self.elapsed_s = time.perf_counter() - self._start


def measure_latency(fn: Callable[..., Any], *args: Any, warmup: int = 1, repeat: int = 5,
                    sync: Callable[[], Any] | None = None, **kwargs: Any) -> dict[str, float]:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeat`` timed ones.

    Returns ``mean_s``, ``median_s``, ``p95_s`` (linear-interpolated 95th percentile,
    ``numpy.percentile``), ``min_s`` and ``fps`` (``1 / mean_s``).
    """
    if not callable(fn):
        raise InputError(f"measure_latency needs a callable; got {type(fn).__name__}")
    if int(warmup) < 0 or int(repeat) < 1:
        raise InputError(f"expected warmup >= 0 and repeat >= 1; got warmup={warmup}, repeat={repeat}")
    for _ in range(int(warmup)):
        fn(*args, **kwargs)
    times = np.empty(int(repeat), dtype=np.float64)
    for i in range(int(repeat)):
        with Timer(sync) as t:
            fn(*args, **kwargs)
        times[i] = t.elapsed_s
    mean = float(times.mean())
    return {
        "mean_s": mean,
        "median_s": float(np.median(times)),
        "p95_s": float(np.percentile(times, 95)),
        "min_s": float(times.min()),
        "fps": 1.0 / mean if mean > 0 else float("inf"),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process's own
    address space. Not ``ru_maxrss``: the kernel carries that across fork + exec, so a process
    started by a large parent (a benchmark's child, a worker) reports the parent's peak.
    Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024.0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_mb() -> float:
    """Current resident set size in MiB from ``/proc/self/statm`` (falls back to :func:`peak_rss_mb`)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / _MB
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()


class RSSMonitor:
    """Peak resident memory of a ``with`` block, sampled every ``interval_s`` seconds.

    ``baseline_mb`` is the RSS on entry, ``peak_mb`` the largest sample (the first taken on
    entry, the last on exit) and ``delta_mb = peak_mb - baseline_mb``. Allocations that live
    shorter than ``interval_s`` may be missed; pass a smaller interval for those.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        if not interval_s > 0:
            raise InputError(f"interval_s must be > 0; got {interval_s}")
        self.interval_s = float(interval_s)
        self.baseline_mb = float("nan")
        self.peak_mb = float("nan")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        rss = current_rss_mb()
        if not rss <= self.peak_mb:  # also replaces the initial NaN
            self.peak_mb = rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "RSSMonitor":
        self.baseline_mb = self.peak_mb = current_rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="anyseg-rss-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.baseline_mb
