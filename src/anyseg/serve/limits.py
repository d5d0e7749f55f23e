"""Request-body limits of the service, enforced on the byte stream, and a strict JSON parser.

:class:`BodyLimit` (pure ASGI) counts the bytes of every request body as the app reads them,
with or without a ``Content-Length`` (chunked transfer): a declared length over the limit is
refused before anything is read, and a stream is cut at the first chunk past the limit, with
a JSON ``413``; nothing beyond that chunk is read. Any answer sent before the request's
body was read to its end (a refusal, a busy server) closes the connection, so that the
server does not read the rest either. Uploads (``POST /api/images``) get
``upload_limit`` bytes, every other route ``json_limit``.

:func:`parse_json` is what JSON routes parse bodies with (:class:`StrictJSONRoute`): it refuses
``NaN``, ``Infinity`` and numbers that overflow to infinity (``1e400``), and bodies nested
deeper than :data:`MAX_JSON_DEPTH` (checked on the raw bytes before parsing, so a deep
``[[[[...`` never reaches the recursive parser).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from anyseg.serve.errors import ApiError, error_response

__all__ = ["BodyLimit", "BodyTooLarge", "MAX_JSON_DEPTH", "StrictJSONRoute", "json_depth", "parse_json"]

#: deepest nesting of arrays and objects accepted in a JSON body
MAX_JSON_DEPTH = 32
UPLOAD_PATH = "/api/images"
CLOSE = {"Connection": "close"}  # a refusal sent before the body was read: the rest is never read
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class BodyTooLarge(ApiError):
    """A request body over its limit (413); raised from ``receive``, so the app stops reading."""

    def __init__(self, limit: int, what: str = "request body"):
        # the rest of the body is never read: the server closes the connection after answering
        super().__init__(413, f"{what} is over the limit of {limit} bytes")


def _declared_length(scope) -> int | None:
    """The Content-Length header as an int, ``None`` when absent; :class:`ApiError` 400 when malformed."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            if not value.isdigit() or len(value) > 18:
                raise ApiError(400, f"bad Content-Length header {value[:30].decode('latin-1')!r}: "
                                    "expected a number of bytes")
            return int(value)
    return None


class BodyLimit:
    """ASGI middleware: 413 for a body over ``upload_limit`` (uploads) or ``json_limit`` (other routes)."""

    def __init__(self, app: Any, json_limit: int, upload_limit: int):
        self.app = app
        self.json_limit = int(json_limit)
        self.upload_limit = int(upload_limit)

    def limit_for(self, scope) -> tuple[int, str]:
        """The byte limit of one request and what to call its body in messages."""
        if scope.get("method") == "POST" and scope.get("path", "").rstrip("/") == UPLOAD_PATH:
            return self.upload_limit, "upload"
        return self.json_limit, "request body"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, what = self.limit_for(scope)
        try:
            declared = _declared_length(scope)
        except ApiError as e:
            return await error_response(e.status_code, e.detail)(scope, receive, send)
        if declared is not None and declared > limit:
            return await error_response(413, f"{what} of {declared} bytes is over the limit of {limit} bytes",
                                        CLOSE)(scope, receive, send)
        seen = 0
        unread = bool(declared) or any(k == b"transfer-encoding" for k, _ in scope.get("headers", ()))

        async def counted():
            nonlocal seen, unread
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, what)
                unread = unread and message.get("more_body", False)
            return message

        async def closing_send(message):
            if message["type"] == "http.response.start" and unread:
                # answered before the body was read (refused, busy): close rather than read the rest
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, closing_send)
        except BodyTooLarge as e:  # raised outside a route (normally the route's handler answers)
            await error_response(e.status_code, e.detail)(scope, receive, closing_send)


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` in JSON bytes (brackets inside strings do not count)."""
    import numpy as np

    bare = _STRING.sub(b'""', data)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.isin(codes, (0x5B, 0x7B)).astype(np.int8) - np.isin(codes, (0x5D, 0x7D)).astype(np.int8)
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:30]} overflows to infinity: numbers must be finite")
    return value


def parse_json(data: bytes) -> Any:
    """Parse a JSON body strictly; :class:`json.JSONDecodeError` for NaN/Infinity, overflow or deep nesting."""
    data = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else str(data).encode("utf-8")
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise json.JSONDecodeError(f"nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH}", "", 0)
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as e:  # bad UTF-8, NaN, overflow, an int of too many digits
        raise json.JSONDecodeError(" ".join(str(e).split())[:200], "", 0) from None


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`parse_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An API route whose JSON bodies are parsed by :func:`parse_json`."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_handler(request: Request):
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
