"""The service's request log: one line per request, ``METHOD PATH STATUS MS ms``.

:class:`RequestLog` (pure ASGI, the outermost middleware, so that it also sees the answers of
the Host/Origin/token checks, the body limits and the catch-all) logs each request on the
``anyseg.serve.requests`` logger at ``INFO`` when its response is finished, e.g.
``POST /api/images/0123abcd89ef4567/predict 200 23.4 ms``. The time runs from the request's
arrival to the end of its response.

Only the method and the path are logged: never the query string (it could carry a secret),
never a header (``Authorization`` holds the token). The path is written on one line with
anything that is not printable ASCII percent-encoded, so that a request cannot forge log
lines. A request that ends without a response (the client went away) logs the status ``-``;
an exception that escapes before any response logs ``500`` (what the server then sends).

``anyseg serve`` writes these lines to stderr (:func:`log_to_stderr`) unless it is given
``--quiet``; uvicorn's own access log is off, so that no line is printed twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

__all__ = ["LOG", "RequestLog", "log_line", "log_to_stderr", "printable_path"]

LOG = logging.getLogger("anyseg.serve.requests")
MAX_PATH = 300  # characters of a logged path
MAX_METHOD = 16
_SAFE = "/:@!$&'()*+,;=-._~%"  # kept as they are; everything else outside printable ASCII is %XX


def printable_path(path: str, limit: int = MAX_PATH) -> str:
    """``path`` on one line of printable ASCII (other characters percent-encoded), shortened to ``limit``."""
    line = quote(path, safe=_SAFE, errors="replace")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def log_line(method: str, path: str, status: int | str, ms: float) -> str:
    """The log line of one request: ``METHOD PATH STATUS MS ms``."""
    return f"{printable_path(method, MAX_METHOD)} {printable_path(path)} {status} {ms:.1f} ms"


class RequestLog:
    """ASGI middleware: one ``INFO`` line per HTTP request on ``logger`` (default :data:`LOG`)."""

    def __init__(self, app: Any, logger: logging.Logger | None = None):
        self.app = app
        self.logger = logger if logger is not None else LOG

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status: int | str = "-"

        async def noting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception:
            if status == "-":
                status = 500  # the server answers 500 to an exception before any response
            raise
        finally:
            ms = (time.perf_counter() - t0) * 1000.0
            self.logger.info("%s", log_line(scope.get("method", "?"), scope.get("path", ""), status, ms))


@contextmanager
def log_to_stderr(logger: logging.Logger | None = None) -> Iterator[logging.Handler]:
    """While the block runs, write ``logger``'s (default :data:`LOG`) ``INFO`` lines to stderr; yields the handler.

    The logger does not propagate meanwhile, so that a root handler does not print the lines
    twice; its handlers, level and propagation are restored afterwards.
    """
    logger = logger if logger is not None else LOG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
