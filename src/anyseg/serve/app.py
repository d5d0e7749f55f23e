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

Before any route runs, the request passes (outermost first) CORS (with ``cors_origins``), a
catch-all that turns unexpected exceptions into JSON 500s (:mod:`anyseg.serve.errors`), the
body limits, enforced on the byte stream (:mod:`anyseg.serve.limits`), and the
Host/Origin/token checks (:mod:`anyseg.serve.security`). Every error is JSON ``{"detail": "one line"}``.
With ``log_requests``, an outermost :class:`~anyseg.serve.reqlog.RequestLog` logs one line per
request (method, path, status, milliseconds). ``/docs`` is Swagger UI served from local files
(:mod:`anyseg.serve.docs`): no page of the service loads anything from another host.
"""

from __future__ import annotations

import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from anyseg.cache import EmbeddingCache
from anyseg.errors import InputError, ModelError
from anyseg.serve.db import Database, ImageRow, sqlite_path
from anyseg.serve.decode import MIME, base_name, check_id, decode_upload, normalise_rle
from anyseg.serve.docs import install_docs
from anyseg.serve.errors import ApiError, CatchAll, install_handlers
from anyseg.serve.limits import BodyLimit, StrictJSONRoute
from anyseg.serve.pool import WorkerPool
from anyseg.serve.projects import projects_router
from anyseg.serve.reqlog import RequestLog
from anyseg.serve.schemas import (
    EverythingBody,
    Health,
    ImageInfo,
    MasksResult,
    PredictBody,
    PredictResult,
    TextBody,
)
from anyseg.serve.security import Guard
from anyseg.types import Masks, Prompt

__all__ = ["DEFAULT_MAX_JSON_BYTES", "ApiError", "State", "WorkerPool", "create_app", "decode_upload"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: default limit of a JSON request body (uploads have their own, ``max_upload_bytes``)
DEFAULT_MAX_JSON_BYTES = 8_000_000


def mask_items(masks: Masks, with_labels: bool = False) -> list[dict]:
    """The API form of masks: compressed RLE, score, XYXY box, area (and label)."""
    from anyseg.masks import rle as rle_mod

    rles = rle_mod.encode_many(masks)
    areas = masks.areas.tolist()
    out = []
    for i, r in enumerate(rles):
        item = {"rle": r, "score": float(masks.scores[i]), "box": [float(v) for v in masks.boxes[i]],
                "area": int(areas[i])}
        if with_labels and masks.labels is not None:
            item["label"] = str(masks.labels[i])
        out.append(item)
    return out


# -- the app ---------------------------------------------------------------------------------------
class State:
    """What the routes share: the predictor, the database, the image store, the cache, the pool and the limits."""

    def __init__(self, predictor: Any, db: Database, data_dir: Path, cache: EmbeddingCache, pool: WorkerPool,
                 max_upload_bytes: int, max_pixels: int, weights: str | None, device: str | None):
        self.predictor = predictor
        self.db = db
        self.data_dir = data_dir
        self.images_dir = data_dir / "images"
        self.cache = cache
        self.pool = pool
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self.weights = weights
        self.device = device
        self._embed_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._text_backends: dict[str, Any] = {}
        self._text_lock = threading.Lock()

    # images
    def image_path(self, image_id: str) -> Path:
        return self.images_dir / check_id(image_id)

    def image_row(self, image_id: str) -> ImageRow:
        check_id(image_id)
        with self.db.session() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise ApiError(404, f"no image with id {image_id!r}")
            s.expunge(row)
            return row

    def load_array(self, row: ImageRow) -> np.ndarray:
        data = self.image_path(row.id).read_bytes()
        arr, _ = decode_upload(data, max(self.max_pixels, row.width * row.height), name=f"stored image {row.id}")
        return arr

    def store(self, data: bytes, arr: np.ndarray, fmt: str, file_name: str) -> ImageRow:
        """Write an upload's bytes (atomically, once per id) and its row; the row. Worker thread."""
        from anyseg.io.atomic import write_bytes
        from anyseg.io.images import image_hash

        full = image_hash(arr)
        image_id = full[:16]
        h, w = arr.shape[:2]
        path = self.images_dir / image_id
        if not path.exists():
            write_bytes(path, data)
        with self.db.session() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                row = ImageRow(id=image_id, content_hash=full, width=w, height=h, file_name=file_name,
                               content_type=MIME.get(fmt, "application/octet-stream"), nbytes=len(data))
                s.add(row)
                s.flush()
            s.expunge(row)
            return row

    def embedding(self, row: ImageRow, image: np.ndarray | None = None):
        """The cached embedding of an image, computed (once, even under concurrency) on a miss. Worker thread."""
        model_id = self.predictor.model_id
        hit = self.cache.get(row.content_hash, model_id)
        if hit is not None:
            return hit
        with self._locks_lock:
            lock = self._embed_locks.setdefault(row.id, threading.Lock())
        with lock:
            hit = self.cache.get(row.content_hash, model_id)
            if hit is not None:
                return hit
            if image is None:
                image = self.load_array(row)
            return self.cache.get_or_embed(image, model_id, self.predictor.embed)

    def text_backend(self, model: str) -> Any:
        """A text instance backend (loaded once per name, never downloaded) that reuses the loaded SAM model."""
        from anyseg.tasks import text as text_mod

        with self._text_lock:
            if model not in self._text_backends:
                self._text_backends[model] = text_mod.load_instance_backend(
                    model, device=self.device, allow_download=False, predictor=self.predictor)
            return self._text_backends[model]


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
    _image_routes(app, st)
    _model_routes(app, st)
    app.include_router(projects_router(st))
    return app


# -- routes ----------------------------------------------------------------------------------------
async def _read_upload(request: Request) -> tuple[bytes, str]:
    """The bytes and base file name of the multipart field ``file`` (the body limit applies while reading)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "expected a multipart/form-data upload with the image in the field 'file'; "
                            f"got Content-Type {ctype[:60]!r}")
    try:
        form = await MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=16).parse()
    except MultiPartException as e:
        raise ApiError(400, f"bad multipart upload: {e.message}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "no file in the multipart field 'file'")
    try:
        return await upload.read(), base_name(upload.filename)
    finally:
        await upload.close()


def _image_routes(app: FastAPI, st: State) -> None:
    predictor = st.predictor

    @app.get("/", include_in_schema=False)
    def index():
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            raise ApiError(404, "the web UI is not installed (static/index.html is missing)")
        return FileResponse(page, media_type="text/html")

    @app.get("/api/health", response_model=Health, summary="Service status and the loaded model")
    def health():
        return {"status": "ok", "model": getattr(predictor, "name", "") or "",
                "family": getattr(predictor, "family", "") or ""}

    @app.post("/api/images", response_model=ImageInfo, summary="Upload an image (multipart field `file`)",
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"],
                  "properties": {"file": {"type": "string", "format": "binary"}}}}}}},
              responses={413: {"description": "upload or image too large"}, 415: {"description": "not an image"},
                         503: {"description": "server busy"}, 504: {"description": "timeout"}})
    async def upload_image(request: Request):
        st.pool.check_admission("upload")  # busy: answer before reading the body
        data, file_name = await _read_upload(request)

        def job() -> dict:
            arr, fmt = decode_upload(data, st.max_pixels, name=file_name)
            row = st.store(data, arr, fmt, file_name)
            st.embedding(row, arr)
            return {"id": row.id, "width": row.width, "height": row.height, "file_name": row.file_name}

        return await st.pool.run(job, kind="upload")

    @app.get("/api/images", response_model=list[ImageInfo], summary="List uploaded images")
    def list_images():
        with st.db.session() as s:
            rows = s.query(ImageRow).order_by(ImageRow.created, ImageRow.id).all()
            return [{"id": r.id, "width": r.width, "height": r.height, "file_name": base_name(r.file_name)}
                    for r in rows]

    @app.get("/api/images/{image_id}", summary="The original image bytes",
             responses={200: {"content": {"image/*": {}}}, 404: {"description": "unknown id"}})
    def get_image(image_id: str):
        row = st.image_row(image_id)
        path = st.image_path(row.id)
        if not path.is_file():
            raise ApiError(404, f"the stored file of image {row.id} is missing")
        return FileResponse(path, media_type=row.content_type)


def _prompt(body: PredictBody, size: tuple[int, int], max_pixels: int) -> Prompt:
    """The checked prompt of a predict body for an ``(H, W)`` image; :class:`ApiError` 400."""
    mask = None
    if body.mask_rle is not None:
        _, mask = normalise_rle(body.mask_rle, size, max_pixels)
    if body.labels is not None and body.points is None:
        raise ApiError(400, "labels given without points")
    try:
        prompt = Prompt(points=body.points or None, labels=body.labels if body.points else None,
                        box=body.box, mask=mask)
        prompt.check_within(size)
    except (InputError, ValueError, TypeError) as e:
        raise ApiError(400, str(e) if isinstance(e, InputError) else f"bad prompt: {e}") from None
    return prompt


def _model_routes(app: FastAPI, st: State) -> None:
    predictor = st.predictor

    @app.post("/api/images/{image_id}/predict", response_model=PredictResult,
              summary="Masks from clicks, a box and/or a previous mask (decoder only, cached embedding)")
    async def predict(image_id: str, body: PredictBody):
        check_id(image_id)
        st.pool.check_admission("predict")  # busy: answer before any database or decoding work
        row = await run_in_threadpool(st.image_row, image_id)
        prompt = _prompt(body, (row.height, row.width), st.max_pixels)

        def job() -> dict:
            emb = st.embedding(row)
            t0 = time.perf_counter()
            masks = predictor.predict(emb, prompt, multimask=body.multimask)
            return {"masks": mask_items(masks), "seconds": time.perf_counter() - t0}

        return await st.pool.run(job, kind="predict")

    @app.post("/api/images/{image_id}/everything", response_model=MasksResult,
              summary="Segment everything (automatic mask generation)")
    async def everything(image_id: str, body: EverythingBody):
        from anyseg.tasks.everything import EverythingParams, generate

        check_id(image_id)
        st.pool.check_admission("everything")
        row = await run_in_threadpool(st.image_row, image_id)
        overrides = {k: v for k, v in body.model_dump().items() if v is not None}
        family = getattr(predictor, "family", "") or "sam"
        try:
            params = EverythingParams.for_family(family, **overrides)
        except InputError as e:
            raise ApiError(400, str(e)) from None

        def job() -> dict:
            t0 = time.perf_counter()
            masks = generate(predictor, st.load_array(row), params)
            return {"masks": mask_items(masks), "seconds": time.perf_counter() - t0}

        return await st.pool.run(job, kind="everything")

    @app.post("/api/images/{image_id}/text", response_model=MasksResult,
              summary="Every instance of text phrases (needs a text model: SAM 3, Grounding DINO, OWLv2, CLIP)",
              responses={501: {"description": "no text model available"}})
    async def text(image_id: str, body: TextBody):
        from anyseg.tasks.text import TextParams, find_instances
        from anyseg.text.vocab import parse_classes

        check_id(image_id)
        st.pool.check_admission("text")
        row = await run_in_threadpool(st.image_row, image_id)
        phrases = [p.strip() for p in body.phrases if p.strip()]
        if not phrases:
            raise ApiError(400, "no phrases given: say what to segment")
        try:
            classes = parse_classes(phrases)
        except InputError as e:
            raise ApiError(400, str(e)) from None

        def job() -> dict:
            try:
                backend = st.text_backend(body.model)
            except ModelError as e:
                raise ApiError(501, str(e)) from None
            t0 = time.perf_counter()
            masks = find_instances(st.load_array(row), classes, backend, TextParams(threshold=body.threshold))
            return {"masks": mask_items(masks, with_labels=True), "seconds": time.perf_counter() - t0}

        return await st.pool.run(job, kind="text")
