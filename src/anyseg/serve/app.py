"""``anyseg serve``: a FastAPI app for interactive annotation (upload, click-to-mask, projects, export).

Model work (decoding an upload, embedding, decoding masks, segment-everything, text) runs
off the event loop in a bounded pool of ``workers`` threads (:mod:`anyseg.serve.pool`): a
request is admitted while fewer than ``workers + queue_size`` jobs are running or waiting and
its expected wait is within ``max_wait_s``; otherwise it gets ``503`` at once, with a
``Retry-After`` from the queue's expected wait. A job that has not finished within
``request_timeout_s`` gives ``504`` and is cancelled (it stops at its next
:func:`anyseg.cancel.check`, freeing the worker).

Images are content-addressed: the id is the first 16 hex digits of the pixel hash
(:func:`anyseg.io.images.image_hash`), the original bytes are stored in the data folder under
that id, and the embedding is computed once per image and kept in an
:class:`~anyseg.cache.EmbeddingCache` (recomputed from the stored bytes after an eviction or
a restart).

The routes are four module-level routers, included in :data:`ROUTERS` order:
:mod:`~anyseg.serve.images` (the UI page, health, images), :mod:`~anyseg.serve.predict`
(predict, everything, text), :mod:`~anyseg.serve.projects` (projects, annotations) and
:mod:`~anyseg.serve.export` (the formats of :data:`anyseg.io.export.EXPORTERS`). Each reaches
the app's :class:`~anyseg.serve.state.State` through the
:func:`~anyseg.serve.state.get_state` dependency; ``create_app`` builds the State, the
middleware and the error handlers, and includes the routers.

Before any route runs, the request passes (outermost first) CORS (with ``cors_origins``), a
catch-all that turns unexpected exceptions into JSON 500s (:mod:`anyseg.serve.errors`), the
body limits, enforced on the byte stream (:mod:`anyseg.serve.limits`), and the
Host/Origin/token checks (:mod:`anyseg.serve.security`). Every error is JSON ``{"detail": "one line"}``.
With ``log_requests``, an outermost :class:`~anyseg.serve.reqlog.RequestLog` logs one line per
request (method, path, status, milliseconds). ``/docs`` is Swagger UI served from local files
(:mod:`anyseg.serve.docs`): no page of the service loads anything from another host.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from anyseg.cache import EmbeddingCache
from anyseg.errors import InputError
from anyseg.serve import export, images, predict, projects
from anyseg.serve.db import Database, sqlite_path
from anyseg.serve.decode import decode_upload
from anyseg.serve.docs import install_docs
from anyseg.serve.errors import ApiError, CatchAll, install_handlers
from anyseg.serve.images import STATIC_DIR
from anyseg.serve.limits import BodyLimit, StrictJSONRoute
from anyseg.serve.pool import WorkerPool
from anyseg.serve.reqlog import RequestLog
from anyseg.serve.security import Guard
from anyseg.serve.state import State

__all__ = ["DEFAULT_MAX_JSON_BYTES", "STATIC_DIR", "ApiError", "State", "WorkerPool", "create_app", "decode_upload"]

#: default limit of a JSON request body (uploads have their own, ``max_upload_bytes``)
DEFAULT_MAX_JSON_BYTES = 8_000_000
#: the routers of the service, in the order their routes are matched
ROUTERS = (images.router, predict.router, projects.router, export.router)


def _default_data_dir(db_url: str) -> Path:
    path = sqlite_path(db_url)
    return (path.parent if path is not None else Path.cwd()) / "anyseg-data"


def _add_middleware(app: FastAPI, st: State, json_limit: int, allowed_hosts: list[str] | None, token: str | None,
                    cors_origins: list[str] | None, log_requests: bool = False) -> None:
    """Host/Origin/token checks (innermost), body limits, the catch-all, CORS, the request log (outermost)."""
    app.add_middleware(Guard, allowed_hosts=allowed_hosts, token=token, cors_origins=cors_origins)
    app.add_middleware(BodyLimit, json_limit=min(json_limit, st.max_upload_bytes), upload_limit=st.max_upload_bytes)
    app.add_middleware(CatchAll)
    if cors_origins:  # outermost, so that error responses carry the CORS headers too
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    if log_requests:  # outermost: it sees every answer, the refusals of the middleware above included
        app.add_middleware(RequestLog)


def create_app(model: str = "auto", weights: str | None = None, db_url: str = "sqlite:///anyseg.db",
               device: str | None = None, max_upload_bytes: int = 20_000_000, max_pixels: int = 40_000_000,
               cache_bytes: int = 2 << 30, workers: int = 1, queue_size: int = 8, request_timeout_s: float = 60.0,
               cors_origins: list[str] | None = None, data_dir: str | Path | None = None,
               predictor: Any = None, runtime: str = "torch", *, max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
               allowed_hosts: list[str] | None = None, token: str | None = None,
               max_wait_s: float | None = None, log_requests: bool = False) -> FastAPI:
    """The ``anyseg serve`` app. ``predictor`` (an already loaded Predictor) overrides ``model``/``weights``.

    ``runtime`` (see :mod:`anyseg.runtime`) applies to a model loaded by name; ``anyseg serve``
    passes ``auto``. ``max_json_bytes`` bounds every non-upload body (at most
    ``max_upload_bytes``). ``allowed_hosts`` are the ``Host`` names served (default the
    loopback names; ``"*"`` for any); with ``token`` every ``/api`` request needs
    ``Authorization: Bearer <token>``. ``max_wait_s`` (default ``request_timeout_s``) is the
    longest expected wait a model job is admitted with. ``log_requests`` logs one line per
    request on the ``anyseg.serve.requests`` logger (:mod:`anyseg.serve.reqlog`).

    Raises :class:`~anyseg.errors.AnysegError` (one line) for a model that cannot be loaded, a
    database that cannot be opened or a bad setting.
    """
    if int(max_upload_bytes) < 1 or int(max_json_bytes) < 1 or int(max_pixels) < 1:
        raise InputError(f"the body and pixel limits must be positive; got max_upload_bytes={max_upload_bytes}, "
                         f"max_json_bytes={max_json_bytes}, max_pixels={max_pixels}")
    pool = WorkerPool(int(workers), int(queue_size), float(request_timeout_s), max_wait_s)
    db = Database(db_url)  # before a slow model load: a bad URL fails fast
    if predictor is None:
        from anyseg.models import load_model
        from anyseg.runtime import with_runtime

        predictor = with_runtime(load_model(model, weights=weights, device=device, quiet=True), runtime, requested=model)
    data = Path(data_dir) if data_dir is not None else _default_data_dir(db_url)
    (data / "images").mkdir(parents=True, exist_ok=True)
    st = State(predictor, db, data, EmbeddingCache(cache_bytes), pool, max_upload_bytes, max_pixels, weights, device)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown()
        db.dispose()

    app = FastAPI(title="anyseg", summary="Interactive segmentation and annotation service",
                  version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None)  # /docs from local files, no ReDoc: install_docs
    app.router.route_class = StrictJSONRoute
    app.state.anyseg = st
    _add_middleware(app, st, int(max_json_bytes), allowed_hosts, token, cors_origins, log_requests)
    install_handlers(app)
    install_docs(app, bearer=token is not None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    for router in ROUTERS:  # each route reaches the State through the get_state dependency
        app.include_router(router)
    return app
