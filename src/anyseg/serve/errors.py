"""The service's error format: every error is a JSON ``{"detail": "one line"}`` with a 4xx/5xx status.

:class:`ApiError` is what routes raise; :func:`install_handlers` maps it, the project's
:class:`~anyseg.errors.AnysegError` (400; a cancelled job 504) and request validation errors
(422, with the offending values left out or shortened so that the body stays small and valid
JSON, never ``NaN``) to JSON; :class:`CatchAll` turns any other exception into a JSON 500
``internal error: <ExceptionType>`` (the traceback goes to the ``anyseg.serve`` log) instead
of a plain-text answer and a dropped connection.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["ApiError", "CatchAll", "error_response", "install_handlers", "json_safe", "one_line"]

LOG = logging.getLogger("anyseg.serve")
_MAX_DETAIL = 500  # characters of a detail line
_MAX_INPUT = 80  # characters of an offending value echoed in a 422


def one_line(text: object, limit: int = _MAX_DETAIL) -> str:
    """``text`` on one line (runs of white space, newlines included, become one space), shortened."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ApiError(HTTPException):
    """An HTTP error with a one-line message (and optional headers)."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(status, one_line(detail), dict(headers) if headers else None)

    @property
    def status(self) -> int:
        return self.status_code


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with non-finite floats as strings, other objects as ``str``: always valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if depth > 8:
        return "..."
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return one_line(value, _MAX_INPUT)


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None, **extra: Any):
    """A JSON error response ``{"detail": detail, **extra}`` (imports starlette lazily)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"detail": one_line(detail), **extra}, status_code=status,
                        headers=dict(headers) if headers else None)


def _short_input(value: Any) -> Any:
    """An offending value worth echoing (a short scalar), else ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str):
        return one_line(value, _MAX_INPUT)
    return None


def _validation_items(errors: list[dict]) -> list[dict]:
    items = []
    for err in errors[:20]:
        item = {"loc": [json_safe(p) for p in err.get("loc", ())], "msg": one_line(err.get("msg", "")),
                "type": str(err.get("type", ""))}
        short = _short_input(err.get("input"))
        if short is not None:
            item["input"] = short
        ctx = err.get("ctx")
        if isinstance(ctx, Mapping):
            item["ctx"] = {str(k): one_line(v, _MAX_INPUT) for k, v in ctx.items()}
        items.append(item)
    return items


def validation_detail(errors: list[dict]) -> str:
    """One line for the first validation error: ``body.points: List should have at most ...``."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid request"))
    ctx = first.get("ctx")
    if first.get("type") == "json_invalid" and isinstance(ctx, Mapping) and ctx.get("error"):
        msg = f"{msg}: {ctx['error']}"
    return one_line(f"{where}: {msg}" if where else msg)


def install_handlers(app: Any) -> None:
    """Register the JSON error handlers on a FastAPI ``app``."""
    from fastapi.exceptions import RequestValidationError

    from anyseg.cancel import Cancelled
    from anyseg.errors import AnysegError

    @app.exception_handler(HTTPException)
    async def _http_error(_request, e: HTTPException):
        return error_response(e.status_code, str(e.detail), e.headers)

    @app.exception_handler(Cancelled)
    async def _cancelled(_request, e: Cancelled):
        return error_response(504, f"the job was stopped before it finished: {e}")

    @app.exception_handler(AnysegError)
    async def _anyseg_error(_request, e: AnysegError):
        return error_response(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, e: RequestValidationError):
        errs = list(e.errors())
        items = json.loads(json.dumps(_validation_items(errs), allow_nan=False, default=str))
        return error_response(422, validation_detail(errs), errors=items)


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a JSON 500 (traceback logged), not a dropped connection."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:  # noqa: BLE001 - the point of this middleware
            LOG.error("unhandled error in %s %s", scope.get("method"), scope.get("path"), exc_info=e)
            if started:
                raise
            await error_response(500, f"internal error: {type(e).__name__}")(scope, receive, send)
