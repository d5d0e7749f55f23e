"""The service's bounded pool of model workers: admission by queue length and expected wait, cancellable jobs.

A job is admitted when fewer than ``workers + queue_size`` jobs are running or waiting *and*
its expected completion time is within ``max_wait_s`` (default: the request timeout). The
expected completion is the estimated work already admitted, divided among the workers, plus
the job's own estimate; estimates are running averages of the measured service time per job
kind (``predict``, ``upload``, ...). A job that is not admitted gets ``503`` at once, with a
``Retry-After`` computed from the queue's expected wait. So an accepted request waits at
most about ``(queue_size + workers) / workers`` service times, and never longer than
``max_wait_s`` by the estimates.

Every job runs under an :class:`anyseg.cancel.CancelToken` with the request's deadline. When
the request times out (``504``) or its client goes away, the token is cancelled: a job still
waiting never starts, and a running one stops at its next :func:`anyseg.cancel.check`
(GrabCut iterations, segment-everything batches, text phrases), which frees its worker for
the next request. Work between two checks (one model forward pass) cannot be interrupted: the
timeout is only as fine as the job's checkpoints, and the job keeps its slot until it stops,
so timeouts never let more work pile up than was admitted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anyseg.cancel import Cancelled, CancelToken
from anyseg.errors import InputError
from anyseg.serve.errors import ApiError

__all__ = ["Ticket", "WorkerPool"]

_ALPHA = 0.3  # weight of the newest sample in the service-time averages
_MAX_RETRY_AFTER = 3600


@dataclass
class Ticket:
    """One admitted job: its kind and the work (seconds) it was estimated to cost."""

    kind: str
    cost: float


class WorkerPool:
    """``workers`` threads; at most ``workers + queue_size`` admitted jobs, each expected to finish in time.

    Args:
        workers: worker threads.
        queue_size: jobs that may wait beyond the running ones.
        timeout_s: a request that waited this long for its job gets 504, and the job is cancelled.
        max_wait_s: admit a job only if it is expected to finish within this many seconds
            (default ``timeout_s``).
    """

    def __init__(self, workers: int, queue_size: int, timeout_s: float, max_wait_s: float | None = None):
        if workers < 1 or queue_size < 0:
            raise InputError(f"workers must be >= 1 and queue size >= 0; got {workers} and {queue_size}")
        if not timeout_s > 0 or (max_wait_s is not None and not max_wait_s > 0):
            raise InputError(f"the timeout and the maximum wait must be positive; got {timeout_s} and {max_wait_s}")
        self.workers = int(workers)
        self.capacity = int(workers) + int(queue_size)
        self.timeout_s = float(timeout_s)
        self.max_wait_s = float(max_wait_s if max_wait_s is not None else timeout_s)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers,
                                                               thread_name_prefix="anyseg-model")
        self._lock = threading.Lock()
        self._estimates: dict[str, float] = {}
        self._admitted_cost = 0.0
        self.pending = 0
        self.cancelled = 0  # jobs stopped by their token (timeouts, clients gone)

    # -- estimates ---------------------------------------------------------------------------------
    def estimate(self, kind: str) -> float:
        """The running average service time of ``kind`` jobs in seconds (0 until one has finished)."""
        with self._lock:
            return self._estimates.get(kind, 0.0)

    def record(self, kind: str, seconds: float) -> None:
        """Fold one measured service time into ``kind``'s average."""
        with self._lock:
            old = self._estimates.get(kind)
            self._estimates[kind] = float(seconds) if old is None else (1 - _ALPHA) * old + _ALPHA * float(seconds)

    def expected_wait(self, kind: str) -> float:
        """Seconds until a ``kind`` job admitted now is expected to finish."""
        with self._lock:
            return self._admitted_cost / self.workers + self._estimates.get(kind, 0.0)

    # -- admission ---------------------------------------------------------------------------------
    def _refusal(self, kind: str) -> ApiError | None:
        """Why a ``kind`` job cannot be admitted now (caller holds the lock), or ``None``."""
        own = self._estimates.get(kind, 0.0)
        finish = self._admitted_cost / self.workers + own
        if self.pending >= self.capacity:
            per_slot = self._admitted_cost / max(1, self.pending) / self.workers
            return self._busy(f"{self.capacity} model jobs are already running or queued", per_slot)
        if self.pending and finish > self.max_wait_s:
            return self._busy(f"the queue's expected wait is {finish:.1f} s, over the limit of "
                              f"{self.max_wait_s:g} s", finish - self.max_wait_s)
        return None

    @staticmethod
    def _busy(why: str, retry_after_s: float) -> ApiError:
        seconds = min(_MAX_RETRY_AFTER, max(1, math.ceil(retry_after_s)))
        return ApiError(503, f"server busy: {why}; retry in {seconds} s", headers={"Retry-After": str(seconds)})

    def check_admission(self, kind: str) -> None:
        """Raise the 503 :class:`ApiError` a ``kind`` job would get now (a cheap early check)."""
        with self._lock:
            refusal = self._refusal(kind)
        if refusal is not None:
            raise refusal

    def admit(self, kind: str) -> Ticket:
        """Reserve a slot for a ``kind`` job, or raise the 503 :class:`ApiError`."""
        with self._lock:
            refusal = self._refusal(kind)
            if refusal is not None:
                raise refusal
            ticket = Ticket(kind, self._estimates.get(kind, 0.0))
            self.pending += 1
            self._admitted_cost += ticket.cost
            return ticket

    def release(self, ticket: Ticket) -> None:
        """Free a ticket's slot (once its job has stopped)."""
        with self._lock:
            self.pending -= 1
            self._admitted_cost = max(0.0, self._admitted_cost - ticket.cost)

    # -- running -----------------------------------------------------------------------------------
    def _work(self, ticket: Ticket, token: CancelToken, fn: Callable[..., Any], args: tuple) -> Any:
        """The worker-thread side of a job: runs it in the token's scope and measures it."""
        t0 = time.perf_counter()
        try:
            result = token.run(fn, *args)
        except Cancelled:
            with self._lock:
                self.cancelled += 1
            raise
        self.record(ticket.kind, time.perf_counter() - t0)
        return result

    async def run(self, fn: Callable[..., Any], *args: Any, kind: str = "job") -> Any:
        """``fn(*args)`` in a worker; 503 when not admitted, 504 (and the job cancelled) on timeout."""
        ticket = self.admit(kind)
        token = CancelToken(self.timeout_s)
        try:
            fut = self._executor.submit(self._work, ticket, token, fn, args)
        except RuntimeError:  # shut down
            self.release(ticket)
            raise ApiError(503, "server is shutting down", headers={"Retry-After": "5"}) from None
        fut.add_done_callback(lambda f: (self.release(ticket), f.cancelled() or f.exception()))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), self.timeout_s)
        except (TimeoutError, Cancelled):  # the request's deadline, seen here or by the job itself
            token.cancel(f"the request timed out after {self.timeout_s:g} s")
            fut.cancel()  # succeeds while the job is still queued
            raise ApiError(504, f"the model job did not finish within {self.timeout_s:g} s; it was cancelled") from None
        except asyncio.CancelledError:  # the client went away
            token.cancel("the client went away")
            fut.cancel()
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
