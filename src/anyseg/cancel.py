"""Cooperative cancellation: long model work stops at its next checkpoint once cancelled.

The service gives every model job a :class:`CancelToken` with the request's deadline; when
the request times out the token is cancelled, and the job raises :class:`Cancelled` at its
next :func:`check`, which frees the worker thread for the next request. Loops whose work
grows with the input (GrabCut iterations, segment-everything batches, video frames, text
phrases) call :func:`check` between steps, so a job outlives its deadline by at most one
step. Outside a :func:`scope` (the CLI, the Python API) :func:`check` does nothing.

Tokens travel in a :mod:`contextvars` variable, so they follow the code that runs in a
scope and never leak into other threads' work: a pool that runs a job in a worker thread
opens the scope inside the job (see :meth:`CancelToken.run`).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from typing import Any, Callable, Iterator

from anyseg.errors import AnysegError

__all__ = ["Cancelled", "CancelToken", "check", "scope", "current"]


class Cancelled(AnysegError):
    """The job was cancelled (its request timed out or was abandoned) and stopped early."""


class CancelToken:
    """A cancellation flag with an optional deadline (seconds of ``time.monotonic``)."""

    def __init__(self, timeout_s: float | None = None):
        self._event = threading.Event()
        self.deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
        self.reason = "the job was cancelled"

    def cancel(self, reason: str | None = None) -> None:
        if reason:
            self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "the job ran past its deadline"
            self._event.set()
            return True
        return False

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled(self.reason)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` inside this token's scope (for use as a pool job)."""
        with scope(self):
            self.check()
            return fn(*args, **kwargs)


_current: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar("anyseg_cancel_token", default=None)


def current() -> CancelToken | None:
    """The token of the running scope, or ``None`` outside any scope."""
    return _current.get()


@contextlib.contextmanager
def scope(token: CancelToken | None) -> Iterator[CancelToken | None]:
    """Run the block with ``token`` as the current token (``None`` clears it)."""
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


def check() -> None:
    """Raise :class:`Cancelled` if the current scope's token is cancelled; else nothing."""
    token = _current.get()
    if token is not None:
        token.check()
