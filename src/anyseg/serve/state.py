"""What the routes of the service share: :class:`State`, reached through the :func:`get_state` dependency.

:func:`~anyseg.serve.app.create_app` builds one :class:`State` and stores it as
``app.state.anyseg``; every router (:mod:`~anyseg.serve.images`, :mod:`~anyseg.serve.predict`,
:mod:`~anyseg.serve.projects`, :mod:`~anyseg.serve.export`) takes it as ``st: StateDep``, so the
routers are plain module-level :class:`~fastapi.APIRouter` objects that any app can include.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Request

from anyseg.cache import EmbeddingCache
from anyseg.serve.db import Database, ImageRow
from anyseg.serve.decode import MIME, check_id, decode_upload
from anyseg.serve.errors import ApiError
from anyseg.serve.pool import WorkerPool

__all__ = ["State", "StateDep", "get_state"]


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


async def get_state(request: Request) -> State:
    """The :class:`State` of the app serving ``request`` (async: no thread hop to read an attribute)."""
    return request.app.state.anyseg


#: a route parameter ``st: StateDep`` receives the app's :class:`State`
StateDep = Annotated[State, Depends(get_state)]
