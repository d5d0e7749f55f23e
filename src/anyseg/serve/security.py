"""Browser-facing safety of the service: Host allow-list, cross-origin refusal, optional token.

:class:`Guard` (pure ASGI) checks, in this order, before any route runs or any body is read:

1. **Host** (DNS rebinding): the ``Host`` header, port ignored, must be one of
   ``allowed_hosts`` (default: the loopback names ``127.0.0.1``, ``localhost``, ``::1``;
   ``anyseg serve`` adds the address it binds and ``--allow-host`` names); ``*`` turns the
   check off. Otherwise ``400``.
2. **Origin** (CSRF): a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is
   not this server's own origin (scheme, host and port of ``Host``) and not one of the
   ``cors_origins`` gets ``403``; so does one without ``Origin`` whose ``Sec-Fetch-Site`` is
   ``cross-site`` or ``same-site``. Requests from non-browser clients (no ``Origin``, no
   ``Sec-Fetch-Site``) pass.
3. **Token**: with a ``token``, every ``/api/*`` request needs ``Authorization: Bearer
   <token>`` (compared in constant time), else ``401``. The UI (``/``, ``/static``) loads
   without it and asks for the token on its first ``401``.

Every response also says that no other site may frame it (``X-Frame-Options: DENY``,
``Content-Security-Policy: frame-ancestors 'none'``: no clickjacking of the UI) and that its
content type is not to be sniffed.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from anyseg.errors import InputError
from anyseg.serve.errors import error_response

__all__ = ["LOOPBACK_HOSTS", "Guard", "allowed_hosts_for", "host_of", "is_loopback", "normalise_host"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_WILDCARD_BINDS = ("0.0.0.0", "::", "")
SECURITY_HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"))


def normalise_host(host: str) -> str:
    """A host name or address as compared: lower case, no brackets, no trailing dot."""
    return host.strip().lower().strip("[]").rstrip(".")


def host_of(value: str) -> tuple[str, int | None]:
    """``(host, port)`` of a ``Host`` header value (``[::1]:8000``, ``example.com``, ...); port ``None`` if absent."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[1:end if end > 0 else None], value[end + 1:] if end > 0 else ""
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:  # a bare name, or a bare IPv6 address
        host, port = value, ""
    return normalise_host(host), int(port) if port.isdigit() and len(port) <= 5 else None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (loopback addresses, ``localhost``)."""
    name = normalise_host(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def allowed_hosts_for(bind: str, extra: list[str] | None = None) -> list[str]:
    """The Host names a server bound to ``bind`` answers to: loopback names, the bind address, ``extra``.

    A wildcard bind (``0.0.0.0``, ``::``) adds this machine's host name, its fully qualified
    name and their addresses; other names (a DNS name, another interface's address) must be
    given in ``extra`` (``--allow-host``).
    """
    hosts = list(LOOPBACK_HOSTS)
    bind_name = normalise_host(bind)
    if bind_name in _WILDCARD_BINDS:
        names = {socket.gethostname(), socket.getfqdn()}
        for name in sorted(names):
            hosts.append(name)
            try:
                hosts.extend(i[4][0] for i in socket.getaddrinfo(name, None))
            except (socket.gaierror, UnicodeError):
                pass
    else:
        hosts.append(bind_name)
    hosts.extend(extra or ())
    return list(dict.fromkeys(normalise_host(h) if h != "*" else h for h in hosts))


def _origin_key(scheme: str, host: str, port: int | None) -> tuple[str, str, int | None]:
    return scheme, normalise_host(host), port if port is not None else _DEFAULT_PORTS.get(scheme)


class Guard:
    """ASGI middleware: Host allow-list (400), cross-origin state changes (403), bearer token (401)."""

    def __init__(self, app: Any, allowed_hosts: list[str] | None = None, token: str | None = None,
                 cors_origins: list[str] | None = None):
        if token is not None and (not isinstance(token, str) or not token.strip() or token != token.strip()):
            raise InputError("the access token must be a non-empty string without surrounding spaces")
        self.app = app
        hosts = list(LOOPBACK_HOSTS) if allowed_hosts is None else list(allowed_hosts)
        self.any_host = "*" in hosts
        self.hosts = frozenset(normalise_host(h) for h in hosts if h != "*")
        self.token = token.encode("utf-8") if token else None
        self.cors = frozenset(o.rstrip("/").lower() for o in (cors_origins or ()))

    @staticmethod
    def _headers(scope) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}

    def check_host(self, headers: dict[str, str]) -> str | None:
        """Why the ``Host`` is refused, or ``None``."""
        if self.any_host:
            return None
        value = headers.get("host")
        if not value:
            return "missing Host header"
        host, _ = host_of(value)
        if host in self.hosts:
            return None
        shown = ", ".join(sorted(self.hosts))
        return f"host not allowed: {value[:80]!r} (this server answers to {shown}; add names with --allow-host)"

    def check_origin(self, scope, headers: dict[str, str]) -> str | None:
        """Why a state-changing request is refused as cross-origin, or ``None``."""
        if scope.get("method") not in STATE_CHANGING:
            return None
        origin = headers.get("origin")
        if origin is not None:
            if origin.rstrip("/").lower() in self.cors:
                return None
            own = _origin_key(scope.get("scheme", "http"), *host_of(headers.get("host", "")))
            parts = urlsplit(origin.strip())
            try:
                theirs = _origin_key(parts.scheme.lower(), parts.hostname or "", parts.port)
            except ValueError:
                theirs = None
            if theirs == own and parts.hostname:
                return None
            return (f"cross-origin request refused: Origin {origin[:80]!r} is not this server's origin "
                    "(allow a trusted origin with --cors ORIGIN)")
        site = headers.get("sec-fetch-site", "").lower()
        if site in ("cross-site", "same-site"):
            return f"cross-origin request refused: Sec-Fetch-Site is {site!r} and no Origin was sent"
        return None

    def check_token(self, scope, headers: dict[str, str]) -> str | None:
        """Why an ``/api`` request is unauthorised, or ``None``."""
        if self.token is None:
            return None
        path = scope.get("path", "")
        if not (path == "/api" or path.startswith("/api/")):
            return None
        scheme, _, value = headers.get("authorization", "").partition(" ")
        given = value.strip().encode("latin-1")  # the header's own bytes
        if scheme.lower() == "bearer" and hmac.compare_digest(given, self.token):
            return None
        return ("missing or wrong access token: send 'Authorization: Bearer <token>' with the token given to "
                "anyseg serve (--token or ANYSEG_TOKEN)")

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = self._headers(scope)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        refusal = self.refusal(scope, headers)
        if refusal is None:
            return await self.app(scope, receive, send_with_headers)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        status, why, extra = refusal
        return await error_response(status, why, extra)(scope, receive, send_with_headers)

    def refusal(self, scope, headers: dict[str, str]) -> tuple[int, str, dict | None] | None:
        """``(status, why, headers)`` of the first check a request fails, or ``None``."""
        why = self.check_host(headers)
        if why is not None:
            return 400, why, None
        why = self.check_origin(scope, headers)
        if why is not None:
            return 403, why, None
        why = self.check_token(scope, headers)
        if why is not None:
            return 401, why, {"WWW-Authenticate": "Bearer"}
        return None
