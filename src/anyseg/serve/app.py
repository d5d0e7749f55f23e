"""``anyseg serve``: a FastAPI app for interactive annotation (upload, click-to-mask, projects, export).

Model work (embedding, decoding, segment-everything, text) runs off the event loop in a
bounded pool of ``workers`` threads. At most ``workers + queue_size`` jobs are admitted at a
time (running plus waiting); a request that finds the pool full gets ``503`` at once (with
``Retry-After``), and a job that has not finished within ``request_timeout_s`` gives ``504``
(a job still waiting in the queue is cancelled; a running one finishes in the background and
keeps its slot until it does, so timeouts never let more work pile up than admitted).

Images are content-addressed: the id is the first 16 hex digits of the pixel hash
(:func:`anyseg.io.images.image_hash`), the original bytes are stored in the data folder under
that id, and the embedding is computed once per image and kept in an
:class:`~anyseg.cache.EmbeddingCache` (recomputed from the stored bytes after an eviction or
a restart).

Every error is JSON ``{"detail": "one line"}``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import re
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from anyseg.cache import EmbeddingCache
from anyseg.errors import AnysegError, InputError, ModelError
from anyseg.io.images import image_hash
from anyseg.masks import rle as rle_mod
from anyseg.serve.db import AnnotationRow, Database, ImageRow, ProjectRow, sqlite_path
from anyseg.types import Masks, Prompt

STATIC_DIR = Path(__file__).resolve().parent / "static"
ID_RE = re.compile(r"[0-9a-f]{16}")
#: formats accepted by upload (decoded by Pillow); others (EPS, PDF, ...) are refused with 415
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp",
        "TIFF": "image/tiff", "GIF": "image/gif"}


class ApiError(Exception):
    """An HTTP error with a one-line message (and optional headers)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = " ".join(str(detail).split())
        self.headers = headers


# -- schemas ---------------------------------------------------------------------------------------
class Rle(BaseModel):
    size: list[int] = Field(..., description="[height, width]")
    counts: str | list[int] = Field(..., description="compressed COCO RLE string (or uncompressed run lengths)")


class Health(BaseModel):
    status: str
    model: str
    family: str


class ImageInfo(BaseModel):
    id: str = Field(..., description="first 16 hex digits of the pixel content hash")
    width: int
    height: int
    file_name: str


class MaskItem(BaseModel):
    rle: Rle
    score: float
    box: list[float] = Field(..., description="XYXY pixels")
    area: int
    label: str | None = None


class PredictBody(BaseModel):
    points: list[list[float]] | None = Field(None, description="[[x, y], ...] pixels")
    labels: list[int] | None = Field(None, description="1 positive / 0 negative, one per point (default all 1)")
    box: list[float] | None = Field(None, description="[x0, y0, x1, y1] pixels")
    mask_rle: Rle | None = Field(None, description="a previous mask (same size as the image) to refine")
    multimask: bool = True


class PredictResult(BaseModel):
    masks: list[MaskItem]
    seconds: float


class EverythingBody(BaseModel):
    points_per_side: int = Field(16, ge=1, le=128)
    points_per_batch: int | None = Field(None, ge=1, le=1024)
    pred_iou_thresh: float | None = Field(None, ge=0, le=1)
    stability_score_thresh: float | None = Field(None, ge=0, le=1)
    box_nms_thresh: float | None = Field(None, ge=0, le=1)
    crop_n_layers: int | None = Field(None, ge=0, le=2)
    min_mask_region_area: int | None = Field(None, ge=0)
    granularity: str | None = None
    use_m2m: bool | None = None


class MasksResult(BaseModel):
    masks: list[MaskItem]
    seconds: float | None = None


class TextBody(BaseModel):
    phrases: list[str] = Field(..., min_length=1)
    model: str = "auto"
    threshold: float | None = Field(None, ge=0, le=1)


class ProjectIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=256)


class ProjectOut(BaseModel):
    id: int
    name: str
    created: datetime
    annotation_count: int = 0


class AnnotationIn(BaseModel):
    image_id: str
    label: str = Field(..., min_length=1, max_length=256)
    rle: Rle
    score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AnnotationPatch(BaseModel):
    label: str | None = Field(None, min_length=1, max_length=256)
    rle: Rle | None = None
    score: float | None = None
    metadata: dict[str, Any] | None = None


class AnnotationOut(BaseModel):
    id: int
    project_id: int
    image_id: str
    label: str
    rle: Rle
    score: float | None
    metadata: dict[str, Any]
    area: int
    box: list[float] = Field(..., description="XYXY pixels")
    created: datetime
    updated: datetime


class Deleted(BaseModel):
    deleted: int


# -- helpers ---------------------------------------------------------------------------------------
def decode_upload(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """``(H, W, 3)`` uint8 RGB and the format of uploaded bytes; :class:`ApiError` 413/415/400."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    old = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(data), formats=FORMATS)
            except UnidentifiedImageError:
                raise ApiError(415, f"not an image (or an unsupported format): expected one of {', '.join(FORMATS)}")
            except (Image.DecompressionBombWarning, Image.DecompressionBombError):
                raise ApiError(413, "image is too large (decompression bomb check)")
            fmt = im.format or "PNG"
            w, h = im.size
            if w * h > max_pixels:
                raise ApiError(413, f"image has {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                                    f"{max_pixels / 1e6:g} megapixels")
            if w < 1 or h < 1:
                raise ApiError(400, "image is empty")
            try:
                im.verify()
                im = Image.open(io.BytesIO(data), formats=FORMATS)
                Image.MAX_IMAGE_PIXELS = None  # our own limit was checked above
                im.load()
                im = ImageOps.exif_transpose(im) or im
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
                raise ApiError(400, f"corrupt or truncated image: {e}")
    finally:
        Image.MAX_IMAGE_PIXELS = old
    return np.ascontiguousarray(arr), fmt


def _mask_items(masks: Masks, with_labels: bool = False) -> list[dict]:
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


def _rle_box(rle: dict) -> list[float]:
    x, y, w, h = rle_mod.to_bbox(rle)
    return [x, y, x + w, y + h]


def _check_id(image_id: str) -> str:
    if not ID_RE.fullmatch(image_id):
        raise ApiError(404, f"no image with id {image_id[:40]!r} (ids are 16 lowercase hex digits)")
    return image_id


def _normalise_rle(rle: Rle | dict, size: tuple[int, int]) -> tuple[dict, np.ndarray]:
    """A validated compressed RLE (str counts) matching ``size`` = (H, W), and its mask."""
    d = rle.model_dump() if isinstance(rle, BaseModel) else dict(rle)
    try:
        mask = rle_mod.decode(d)
    except InputError as e:
        raise ApiError(400, f"bad RLE: {e}")
    if mask.shape != tuple(size):
        raise ApiError(400, f"RLE size {list(mask.shape)} does not match the image size [{size[0]}, {size[1]}] "
                            "(expected [height, width])")
    return rle_mod.encode(mask), mask


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


class BodyLimit:
    """ASGI middleware: ``413`` for any request whose Content-Length is over ``limit`` bytes."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for key, value in scope.get("headers", ()):
                if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                    resp = JSONResponse({"detail": f"request body of {int(value)} bytes is over the limit of "
                                                   f"{self.limit} bytes"}, status_code=413)
                    return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


class WorkerPool:
    """``workers`` threads with at most ``workers + queue_size`` admitted jobs; 503 when full, 504 on timeout."""

    def __init__(self, workers: int, queue_size: int, timeout_s: float):
        if workers < 1 or queue_size < 0:
            raise InputError(f"workers must be >= 1 and queue size >= 0; got {workers} and {queue_size}")
        self.capacity = workers + queue_size
        self.timeout_s = float(timeout_s)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anyseg-model")
        self._sem = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self.pending = 0

    def _release(self, _fut: Any) -> None:
        with self._lock:
            self.pending -= 1
        self._sem.release()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._sem.acquire(blocking=False):
            raise ApiError(503, f"server busy: {self.capacity} model jobs are already running or queued; retry later",
                           headers={"Retry-After": "1"})
        with self._lock:
            self.pending += 1
        try:
            fut = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down
            self._release(None)
            raise ApiError(503, "server is shutting down")
        fut.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), self.timeout_s)
        except TimeoutError:
            fut.cancel()  # only succeeds while still queued
            raise ApiError(504, f"the model job did not finish within {self.timeout_s:g} s")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- the app ---------------------------------------------------------------------------------------
class State:
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
        return self.images_dir / _check_id(image_id)

    def image_row(self, image_id: str) -> ImageRow:
        _check_id(image_id)
        with self.db.session() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise ApiError(404, f"no image with id {image_id!r}")
            s.expunge(row)
            return row

    def load_array(self, row: ImageRow) -> np.ndarray:
        data = self.image_path(row.id).read_bytes()
        arr, _ = decode_upload(data, max(self.max_pixels, row.width * row.height))
        return arr

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
        from anyseg.models.registry import CLIP_FAMILIES, DETECTOR_FAMILIES, get_spec
        from anyseg.tasks import text as text_mod

        with self._text_lock:
            if model not in self._text_backends:
                name = text_mod.resolve_text_model(model)
                family = get_spec(name).family
                kw = {"device": self.device, "allow_download": False}
                if family in DETECTOR_FAMILIES:
                    from anyseg.text.detectors import load_detector

                    backend = text_mod.GroundedBackend(load_detector(name, **kw), self.predictor)
                elif family in CLIP_FAMILIES:
                    from anyseg.text.clip import load_clip

                    backend = text_mod.ClipMaskBackend(load_clip(name, **kw), self.predictor)
                else:  # SAM 3 (its own text model) or a one-line error for a name that cannot read text
                    backend = text_mod.load_instance_backend(name, **kw)
                self._text_backends[model] = backend
            return self._text_backends[model]


def _default_data_dir(db_url: str) -> Path:
    path = sqlite_path(db_url)
    return (path.parent if path is not None else Path.cwd()) / "anyseg-data"


def create_app(model: str = "auto", weights: str | None = None, db_url: str = "sqlite:///anyseg.db",
               device: str | None = None, max_upload_bytes: int = 20_000_000, max_pixels: int = 40_000_000,
               cache_bytes: int = 2 << 30, workers: int = 1, queue_size: int = 8, request_timeout_s: float = 60.0,
               cors_origins: list[str] | None = None, data_dir: str | Path | None = None,
               predictor: Any = None, runtime: str = "torch") -> FastAPI:
    """The ``anyseg serve`` app. ``predictor`` (an already loaded Predictor) overrides ``model``/``weights``.

    ``runtime`` (see :mod:`anyseg.runtime`) applies to a model loaded by name; ``anyseg serve``
    passes ``auto``.

    Raises :class:`~anyseg.errors.AnysegError` (one line) for a model that cannot be loaded or a
    database that cannot be opened.
    """
    db = Database(db_url)  # first: a bad URL fails before a slow model load
    if predictor is None:
        from anyseg.models import load_model

        from anyseg.runtime import with_runtime

        predictor = with_runtime(load_model(model, weights=weights, device=device, quiet=True), runtime)
    data = Path(data_dir) if data_dir is not None else _default_data_dir(db_url)
    (data / "images").mkdir(parents=True, exist_ok=True)
    pool = WorkerPool(int(workers), int(queue_size), float(request_timeout_s))
    st = State(predictor, db, data, EmbeddingCache(cache_bytes), pool, max_upload_bytes, max_pixels, weights, device)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown()
        db.dispose()

    app = FastAPI(title="anyseg", summary="Interactive segmentation and annotation service",
                  version="1", lifespan=lifespan)
    app.state.anyseg = st

    app.add_middleware(BodyLimit, limit=st.max_upload_bytes)
    if cors_origins:  # added last: outermost, so that error responses carry the CORS headers too
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, e: ApiError):
        return JSONResponse({"detail": e.detail}, status_code=e.status, headers=e.headers)

    @app.exception_handler(AnysegError)
    async def _anyseg_error(_request: Request, e: AnysegError):
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse({"detail": " ".join(msg.split()), "errors": json.loads(json.dumps(errs, default=str))},
                            status_code=422)

    # -- static UI ---------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            raise ApiError(404, "the web UI is not installed (static/index.html is missing)")
        return FileResponse(page, media_type="text/html")

    @app.get("/api/health", response_model=Health, summary="Service status and the loaded model")
    def health():
        return {"status": "ok", "model": getattr(predictor, "name", "") or "", "family": getattr(predictor, "family", "") or ""}

    # -- images ------------------------------------------------------------------------------------
    @app.post("/api/images", response_model=ImageInfo, summary="Upload an image (multipart field `file`)",
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"],
                  "properties": {"file": {"type": "string", "format": "binary"}}}}}}},
              responses={413: {"description": "upload or image too large"}, 415: {"description": "not an image"},
                         503: {"description": "server busy"}, 504: {"description": "timeout"}})
    async def upload_image(request: Request):
        limit = st.max_upload_bytes
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise ApiError(400, "bad Content-Length header")
            if n > limit:
                raise ApiError(413, f"upload of {n} bytes is over the limit of {limit} bytes")
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ApiError(415, "expected a multipart/form-data upload with the image in the field 'file'")

        async def limited():
            seen = 0
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > limit:
                    raise ApiError(413, f"upload is over the limit of {limit} bytes")
                yield chunk

        from starlette.formparsers import MultiPartException, MultiPartParser

        try:
            form = await MultiPartParser(request.headers, limited(), max_files=1, max_fields=16).parse()
        except MultiPartException as e:
            raise ApiError(400, f"bad multipart upload: {e.message}")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "no file in the multipart field 'file'")
        try:
            data = await upload.read()
            file_name = (upload.filename or "image")[-255:]
        finally:
            await upload.close()
        arr, fmt = await run_in_threadpool(decode_upload, data, st.max_pixels)
        full = image_hash(arr)
        image_id = full[:16]
        h, w = arr.shape[:2]

        def store() -> ImageRow:
            path = st.images_dir / image_id
            if not path.exists():
                from anyseg.io.atomic import write_bytes

                write_bytes(path, data)
            with st.db.session() as s:
                row = s.get(ImageRow, image_id)
                if row is None:
                    row = ImageRow(id=image_id, content_hash=full, width=w, height=h, file_name=file_name,
                                   content_type=MIME.get(fmt, "application/octet-stream"), nbytes=len(data))
                    s.add(row)
                    s.flush()
                s.expunge(row)
                return row

        row = await run_in_threadpool(store)
        await st.pool.run(st.embedding, row, arr)
        return {"id": row.id, "width": row.width, "height": row.height, "file_name": row.file_name}

    @app.get("/api/images", response_model=list[ImageInfo], summary="List uploaded images")
    def list_images():
        with st.db.session() as s:
            rows = s.query(ImageRow).order_by(ImageRow.created, ImageRow.id).all()
            return [{"id": r.id, "width": r.width, "height": r.height, "file_name": r.file_name} for r in rows]

    @app.get("/api/images/{image_id}", summary="The original image bytes",
             responses={200: {"content": {"image/*": {}}}, 404: {"description": "unknown id"}})
    def get_image(image_id: str):
        row = st.image_row(image_id)
        path = st.image_path(row.id)
        if not path.is_file():
            raise ApiError(404, f"the stored file of image {row.id} is missing")
        return FileResponse(path, media_type=row.content_type)

    # -- model work --------------------------------------------------------------------------------
    @app.post("/api/images/{image_id}/predict", response_model=PredictResult,
              summary="Masks from clicks, a box and/or a previous mask (decoder only, cached embedding)")
    async def predict(image_id: str, body: PredictBody):
        row = await run_in_threadpool(st.image_row, image_id)
        size = (row.height, row.width)
        mask = None
        if body.mask_rle is not None:
            _, mask = _normalise_rle(body.mask_rle, size)
        if body.labels is not None and body.points is None:
            raise ApiError(400, "labels given without points")
        try:
            prompt = Prompt(points=body.points or None, labels=body.labels if body.points else None,
                            box=body.box, mask=mask)
            prompt.check_within(size)
        except (InputError, ValueError, TypeError) as e:
            raise ApiError(400, str(e) if isinstance(e, InputError) else f"bad prompt: {e}")

        def job() -> dict:
            emb = st.embedding(row)
            t0 = time.perf_counter()
            masks = predictor.predict(emb, prompt, multimask=body.multimask)
            seconds = time.perf_counter() - t0
            return {"masks": _mask_items(masks), "seconds": seconds}

        return await st.pool.run(job)

    @app.post("/api/images/{image_id}/everything", response_model=MasksResult,
              summary="Segment everything (automatic mask generation)")
    async def everything(image_id: str, body: EverythingBody):
        from anyseg.tasks.everything import EverythingParams, generate

        row = await run_in_threadpool(st.image_row, image_id)
        overrides = {k: v for k, v in body.model_dump().items() if v is not None}
        family = getattr(predictor, "family", "") or "sam"
        try:
            params = EverythingParams.for_family(family if family != "classical" else "sam", **overrides)
        except InputError as e:
            raise ApiError(400, str(e))

        def job() -> dict:
            t0 = time.perf_counter()
            masks = generate(predictor, st.load_array(row), params)
            return {"masks": _mask_items(masks), "seconds": time.perf_counter() - t0}

        return await st.pool.run(job)

    @app.post("/api/images/{image_id}/text", response_model=MasksResult,
              summary="Every instance of text phrases (needs a text model: SAM 3, Grounding DINO, OWLv2, CLIP)",
              responses={501: {"description": "no text model available"}})
    async def text(image_id: str, body: TextBody):
        from anyseg.tasks.text import TextParams, find_instances
        from anyseg.text.vocab import parse_classes

        row = await run_in_threadpool(st.image_row, image_id)
        phrases = [p.strip() for p in body.phrases if p.strip()]
        if not phrases:
            raise ApiError(400, "no phrases given: say what to segment")
        try:
            classes = parse_classes(phrases)
        except InputError as e:
            raise ApiError(400, str(e))

        def job() -> dict:
            try:
                backend = st.text_backend(body.model)
            except ModelError as e:
                raise ApiError(501, str(e))
            t0 = time.perf_counter()
            masks = find_instances(st.load_array(row), classes, backend, TextParams(threshold=body.threshold))
            return {"masks": _mask_items(masks, with_labels=True), "seconds": time.perf_counter() - t0}

        return await st.pool.run(job)

    # -- projects ----------------------------------------------------------------------------------
    def _project(s, pid: int) -> ProjectRow:
        p = s.get(ProjectRow, pid)
        if p is None:
            raise ApiError(404, f"no project with id {pid}")
        return p

    def _project_out(s, p: ProjectRow) -> dict:
        n = s.query(AnnotationRow).filter(AnnotationRow.project_id == p.id).count()
        return {"id": p.id, "name": p.name, "created": p.created, "annotation_count": n}

    def _ann_out(a: AnnotationRow) -> dict:
        return {"id": a.id, "project_id": a.project_id, "image_id": a.image_id, "label": a.label, "rle": a.rle,
                "score": a.score, "metadata": a.meta or {}, "area": a.area, "box": _rle_box(a.rle),
                "created": a.created, "updated": a.updated}

    @app.post("/api/projects", response_model=ProjectOut, status_code=201, summary="Create a project")
    def create_project(body: ProjectIn):
        with st.db.session() as s:
            p = ProjectRow(name=body.name.strip() or body.name)
            s.add(p)
            s.flush()
            return _project_out(s, p)

    @app.get("/api/projects", response_model=list[ProjectOut], summary="List projects")
    def list_projects():
        with st.db.session() as s:
            return [_project_out(s, p) for p in s.query(ProjectRow).order_by(ProjectRow.id).all()]

    @app.get("/api/projects/{pid}", response_model=ProjectOut, summary="One project")
    def get_project(pid: int):
        with st.db.session() as s:
            return _project_out(s, _project(s, pid))

    @app.delete("/api/projects/{pid}", response_model=Deleted, summary="Delete a project and its annotations")
    def delete_project(pid: int):
        with st.db.session() as s:
            p = _project(s, pid)
            s.query(AnnotationRow).filter(AnnotationRow.project_id == pid).delete()
            s.delete(p)
        return {"deleted": pid}

    @app.post("/api/projects/{pid}/annotations", response_model=AnnotationOut, status_code=201,
              summary="Save a mask as an annotation (the RLE size must match the image)")
    def create_annotation(pid: int, body: AnnotationIn):
        if not ID_RE.fullmatch(body.image_id):
            raise ApiError(400, f"image_id must be 16 lowercase hex digits; got {body.image_id[:40]!r}")
        with st.db.session() as s:
            _project(s, pid)
            img = s.get(ImageRow, body.image_id)
            if img is None:
                raise ApiError(400, f"no image with id {body.image_id!r}: upload it first")
            rle, mask = _normalise_rle(body.rle, (img.height, img.width))
            a = AnnotationRow(project_id=pid, image_id=img.id, label=body.label.strip() or body.label, rle=rle,
                              area=int(mask.sum()), score=body.score, meta=dict(body.metadata))
            s.add(a)
            s.flush()
            return _ann_out(a)

    @app.get("/api/projects/{pid}/annotations", response_model=list[AnnotationOut],
             summary="Annotations of a project (optionally of one image)")
    def list_annotations(pid: int, image_id: str | None = Query(None)):
        with st.db.session() as s:
            _project(s, pid)
            q = s.query(AnnotationRow).filter(AnnotationRow.project_id == pid)
            if image_id is not None:
                q = q.filter(AnnotationRow.image_id == image_id)
            return [_ann_out(a) for a in q.order_by(AnnotationRow.id).all()]

    def _annotation(s, aid: int) -> AnnotationRow:
        a = s.get(AnnotationRow, aid)
        if a is None:
            raise ApiError(404, f"no annotation with id {aid}")
        return a

    @app.patch("/api/annotations/{aid}", response_model=AnnotationOut, summary="Change an annotation's label, mask, score or metadata")
    def patch_annotation(aid: int, body: AnnotationPatch):
        with st.db.session() as s:
            a = _annotation(s, aid)
            fields = body.model_fields_set
            if "label" in fields and body.label is not None:
                a.label = body.label.strip() or body.label
            if "rle" in fields and body.rle is not None:
                img = s.get(ImageRow, a.image_id)
                rle, mask = _normalise_rle(body.rle, (img.height, img.width))
                a.rle, a.area = rle, int(mask.sum())
            if "score" in fields:
                a.score = body.score
            if "metadata" in fields and body.metadata is not None:
                a.meta = dict(body.metadata)
            s.flush()
            s.refresh(a)
            return _ann_out(a)

    @app.delete("/api/annotations/{aid}", response_model=Deleted, summary="Delete an annotation")
    def delete_annotation(aid: int):
        with st.db.session() as s:
            s.delete(_annotation(s, aid))
        return {"deleted": aid}

    # -- export ------------------------------------------------------------------------------------
    @app.get("/api/projects/{pid}/export", summary="Export a project: COCO JSON, YOLO-seg zip or PNG-mask zip",
             responses={200: {"content": {"application/json": {}, "application/zip": {}}}})
    def export(pid: int, format: str = Query("coco", pattern="^(coco|yolo|png)$")):
        with st.db.session() as s:
            p = _project(s, pid)
            anns = s.query(AnnotationRow).filter(AnnotationRow.project_id == pid).order_by(AnnotationRow.id).all()
            ids = list(dict.fromkeys(a.image_id for a in anns))
            images = {r.id: r for r in s.query(ImageRow).filter(ImageRow.id.in_(ids)).all()} if ids else {}
            anns = [(a.id, a.image_id, a.label, a.rle, a.score, a.meta) for a in anns]
            name = _safe_name(p.name)
        labels = sorted({a[2] for a in anns})
        cat = {lab: k for k, lab in enumerate(labels)}
        if format == "coco":
            img_num = {iid: k + 1 for k, iid in enumerate(ids)}
            coco = {
                "info": {"description": f"anyseg project {name}"},
                "images": [{"id": img_num[i], "file_name": images[i].file_name, "height": images[i].height,
                            "width": images[i].width, "anyseg_id": i} for i in ids],
                "annotations": [{"id": aid, "image_id": img_num[iid], "category_id": cat[lab] + 1, "segmentation": rle,
                                 "area": rle_mod.area(rle), "bbox": rle_mod.to_bbox(rle), "iscrowd": 0,
                                 **({"score": score} if score is not None else {}),
                                 **({"metadata": meta} if meta else {})}
                                for aid, iid, lab, rle, score, meta in anns],
                "categories": [{"id": k + 1, "name": lab} for k, lab in enumerate(labels)],
            }
            return JSONResponse(coco, headers={"Content-Disposition": f'attachment; filename="{name}_coco.json"'})
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            if format == "yolo":
                from anyseg.io.export import to_yolo_seg

                zf.writestr("classes.txt", "".join(f"{lab}\n" for lab in labels))
                stems: dict[str, str] = {}
                for iid in ids:
                    stem = _safe_name(Path(images[iid].file_name).stem)
                    stems[iid] = stem if stem not in stems.values() else f"{stem}_{iid}"
                    mine = [a for a in anns if a[1] == iid]
                    masks = Masks(rle_mod.decode_many([a[3] for a in mine]))
                    zf.writestr(f"labels/{stems[iid]}.txt", to_yolo_seg(masks, [cat[a[2]] for a in mine]))
            else:
                from anyseg.io.export import _png_bytes

                index = []
                for aid, iid, lab, rle, score, _meta in anns:
                    fname = f"masks/{_safe_name(Path(images[iid].file_name).stem)}_{aid}_{_safe_name(lab)}.png"
                    zf.writestr(fname, _png_bytes(rle_mod.decode(rle).astype(np.uint8) * 255))
                    index.append({"file": fname, "annotation_id": aid, "image_id": iid,
                                  "file_name": images[iid].file_name, "label": lab, "score": score})
                zf.writestr("annotations.json", json.dumps(index, indent=1))
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}_{format}.zip"'})

    return app
