"""``anyseg serve``: command-line entry of the annotation service (uvicorn).

Binding an address other than loopback needs an access token (``--token`` or, better, the
``ANYSEG_TOKEN`` environment variable, which other users of the machine cannot read from the
process list); see docs/SERVE.md for the security model.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from anyseg.runtime import RUNTIMES


#: an interactive click that waits longer is better refused at once (503 + Retry-After)
DEFAULT_MAX_WAIT_S = 10.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to an argparse ``subparsers`` object."""
    p = subparsers.add_parser("serve", help="web UI + JSON API for interactive annotation (FastAPI)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="promptable model: registry name or local model folder path (default auto: best present, "
                        "else classical)")
    p.add_argument("--weights", metavar="PATH", help="transformers weights folder for --model")
    p.add_argument("--db", default="sqlite:///anyseg.db", metavar="URL",
                   help="SQLAlchemy database URL (default sqlite:///anyseg.db; PostgreSQL: postgresql+psycopg://user@host/db, with pip install psycopg)")
    p.add_argument("--data-dir", metavar="DIR", help="where uploaded images are stored (default: anyseg-data next to the SQLite file)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--runtime", default="auto", choices=list(RUNTIMES),
                   help="inference runtime (default auto; see `anyseg segment --help`)")
    p.add_argument("--max-upload-mb", type=float, default=20, metavar="MB", help="largest upload (default 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N", help="largest image in pixels (default 40M)")
    p.add_argument("--cache-mb", type=float, default=2048, metavar="MB", help="embedding cache size (default 2048)")
    p.add_argument("--workers", type=int, default=1, help="model worker threads (default 1)")
    p.add_argument("--queue", type=int, default=8, metavar="N",
                   help="model jobs that may wait beyond the running ones; more get 503 (default 8)")
    p.add_argument("--timeout", type=float, default=60, metavar="S",
                   help="model job timeout in seconds -> 504, and the job is cancelled (default 60)")
    p.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT_S, metavar="S",
                   help="admit a model job only if it is expected to finish within S seconds (by the measured "
                        f"service times), else 503 with Retry-After (default {DEFAULT_MAX_WAIT_S:g}, at most --timeout)")
    p.add_argument("--max-json-mb", type=float, default=8, metavar="MB",
                   help="largest JSON request body (default 8; uploads have --max-upload-mb)")
    p.add_argument("--cors", "--cors-origin", dest="cors", action="append", default=None, metavar="ORIGIN",
                   help="allow cross-origin requests from ORIGIN (repeatable; default: CORS off)")
    p.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                   help="also answer to this Host name (repeatable; default: the loopback names and the bound "
                        "address); '*' turns the Host check off, which lets DNS rebinding reach the service")
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on every /api request (default: $ANYSEG_TOKEN; "
                        "required when --host is not a loopback address)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not log requests (default: one line per request on stderr: method, path, status, ms)")
    return p


def _err(msg: str, code: int = 2) -> int:
    print(f"anyseg: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return code


def _check_port(host: str, port: int) -> str | None:
    """A one-line reason why ``host:port`` cannot be bound, or ``None``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve --host {host!r}: {e.strerror}"
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is already in use (pick another with --port, or stop the other server)"
        return f"cannot bind {host}:{port}: {e.strerror or e}"
    finally:
        s.close()
    return None


#: shortest access token accepted
MIN_TOKEN_LENGTH = 16


def _token(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(token, None)`` from ``--token`` or ``ANYSEG_TOKEN`` (``None`` if neither), or ``(None, why not)``."""
    token = getattr(args, "token", None) or os.environ.get("ANYSEG_TOKEN") or None
    if token is None:
        return None, None
    if token != token.strip() or any(c.isspace() or not c.isprintable() for c in token):
        return None, "the access token must be printable text without spaces"
    if len(token) < MIN_TOKEN_LENGTH:
        return None, (f"the access token has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                      "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return token, None


def _check_settings(args: argparse.Namespace) -> str | None:
    """A one-line reason why the settings cannot be used, or ``None``."""
    if not 0 < args.port < 65536:
        return f"--port must be in 1..65535; got {args.port}"
    for name in ("max_upload_mb", "cache_mb", "timeout", "max_json_mb", "max_wait"):
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            return f"--{name.replace('_', '-')} must be positive; got {value}"
    if args.workers < 1 or args.queue < 0 or args.max_pixels < 1:
        return "--workers and --max-pixels must be >= 1 and --queue >= 0"
    return None


def _security(args: argparse.Namespace) -> tuple[dict, str | None]:
    """The ``create_app`` keywords for hosts and the token, or a one-line reason to refuse to start."""
    from anyseg.serve.security import allowed_hosts_for, is_loopback

    token, why = _token(args)
    if why:
        return {}, why
    if token is None and not is_loopback(args.host):
        return {}, (f"--host {args.host} exposes the service to the network: give an access token with "
                    "ANYSEG_TOKEN=... or --token (clients send 'Authorization: Bearer <token>'), or bind 127.0.0.1")
    return {"token": token, "allowed_hosts": allowed_hosts_for(args.host, getattr(args, "allow_host", None))}, None


def run(args: argparse.Namespace) -> int:
    """Start the service; returns the exit code (2 with a one-line error for bad settings)."""
    reason = _check_settings(args)
    if reason:
        return _err(reason)
    try:
        import uvicorn

        from anyseg.serve.app import create_app
    except ImportError as e:
        return _err(f"the service needs fastapi and uvicorn (pip install fastapi uvicorn sqlalchemy python-multipart): {e}")
    from anyseg.errors import AnysegError

    security, reason = _security(args)
    if reason:
        return _err(reason)
    reason = _check_port(args.host, args.port)
    if reason:
        return _err(reason)
    if args.device is not None:
        from anyseg.errors import InputError
        from anyseg.models.sam import check_device

        try:
            args.device = check_device(args.device)
        except InputError as e:
            return _err(str(e))

    try:
        app = create_app(
            model=args.model, weights=args.weights, db_url=args.db, device=args.device,
            max_upload_bytes=int(args.max_upload_mb * 1_000_000), max_pixels=args.max_pixels,
            cache_bytes=int(args.cache_mb * (1 << 20)), workers=args.workers, queue_size=args.queue,
            request_timeout_s=args.timeout, cors_origins=args.cors, data_dir=getattr(args, "data_dir", None),
            runtime=getattr(args, "runtime", "auto"), max_json_bytes=int(getattr(args, "max_json_mb", 8) * 1_000_000),
            max_wait_s=min(args.timeout, getattr(args, "max_wait", None) or DEFAULT_MAX_WAIT_S),
            log_requests=not getattr(args, "quiet", False), **security,
        )
    except AnysegError as e:
        return _err(str(e))
    except OSError as e:
        return _err(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""), 1)
    if security["token"] is not None:
        print("anyseg: notice: /api requests need 'Authorization: Bearer <token>' (the web UI asks for it once)",
              file=sys.stderr)
    print(f"anyseg: serving {app.state.anyseg.predictor.name} [{getattr(app.state.anyseg.predictor, 'runtime', 'torch')}] on http://{args.host}:{args.port}/", file=sys.stderr)
    return _serve(app, args, uvicorn.run)


def _serve(app, args: argparse.Namespace, run_server) -> int:
    """Run ``app`` with ``run_server`` (``uvicorn.run``; its access log off: the app logs requests); the exit code."""
    from anyseg.serve.reqlog import log_to_stderr

    try:
        with log_to_stderr():
            run_server(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    except SystemExit as e:  # uvicorn exits when it cannot start (e.g. the port was taken meanwhile)
        return _err(f"the server could not start on {args.host}:{args.port}") if e.code else 0
    return 0
