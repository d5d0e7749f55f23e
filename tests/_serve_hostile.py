"""Shared by the hostile ``anyseg serve`` tests (issue 13): test_adversarial_serve.py and test_adversarial_serve_access.py.

A stub predictor, an app factory over a temporary database, small images, and the check that
a refusal is a strict-JSON ``{"detail": "one line"}`` with the expected status. Import it
after ``pytest.importorskip("fastapi")``.
"""

from __future__ import annotations

import io
import json
import socket
import time

import numpy as np

from anyseg import cancel
from anyseg.masks import rle as rle_mod
from anyseg.models.base import Predictor
from anyseg.serve.app import create_app
from anyseg.types import Embedding, Masks

BASE = "http://127.0.0.1"
SAFETY_S = 60  # a safety net against hangs, never what a test measures
H, W = 48, 64


def png_image(h: int = H, w: int = W, seed: int = 0) -> bytes:
    """A random RGB PNG of ``w`` x ``h`` pixels."""
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bmp_image(h: int = H, w: int = W) -> bytes:
    """A plain red BMP of ``w`` x ``h`` pixels (Pillow's BMP decoder is a hostile-input target)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buf, format="BMP")
    return buf.getvalue()


def strict_json(text: str):
    """Parse like a strict client: NaN / Infinity are errors."""
    def refuse(name):
        raise ValueError(f"{name} in a response body")
    return json.loads(text, parse_constant=refuse)


def assert_json_error(r, status: int | tuple[int, ...]):
    """Asserts ``r`` is a strict-JSON one-line ``detail`` with one of ``status``; returns the body."""
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = strict_json(r.text)
    assert isinstance(body["detail"], str) and body["detail"] and "\n" not in body["detail"], body
    return body


class Stub(Predictor):
    """A predictor that answers at once with a box-shaped mask; ``hang_below_x`` clicks loop until cancelled."""

    name = "stub"
    family = "sam"

    def __init__(self, hang_below_x: float = -1.0, fail: bool = False):
        self.hang_below_x = hang_below_x
        self.fail = fail
        self.loops_stopped = 0
        self.checks = 0

    def embed(self, image):
        return Embedding("stub", image.shape[:2], image.shape[:2], np.zeros(4, np.float32))

    def predict(self, embedding, prompt, multimask=False):
        if self.fail:
            raise RuntimeError("a bug in the model code")
        if prompt.points is not None and prompt.points[0, 0] < self.hang_below_x:
            try:
                end = time.monotonic() + SAFETY_S  # "forever" for the test: only cancellation ends it sooner
                while time.monotonic() < end:
                    self.checks += 1
                    cancel.check()
                    time.sleep(0.005)
            finally:
                self.loops_stopped += 1
        h, w = embedding.original_size
        m = np.zeros((1, h, w), bool)
        m[:, 5:20, 5:30] = True
        return Masks(m, scores=[0.5])


def make_app(tmp_path, predictor=None, **kw):
    """The service over ``predictor`` (a :class:`Stub` by default) and a database in ``tmp_path``."""
    return create_app(predictor=predictor or Stub(), db_url=f"sqlite:///{tmp_path / 'a.db'}",
                      data_dir=tmp_path / "data", **kw)


def upload(c, data: bytes = None, name: str = "img.png", **kw):
    """POST an image (a random PNG by default) to ``/api/images``."""
    return c.post("/api/images", files={"file": (name, png_image() if data is None else data, "image/png")}, **kw)


def project_with_image(c) -> tuple[int, str]:
    """A new project and an uploaded image: ``(project id, image id)``."""
    iid = upload(c).json()["id"]
    pid = c.post("/api/projects", json={"name": "p"}).json()["id"]
    return pid, iid


def square_rle() -> dict:
    """The RLE of a 20 x 20 square on an ``H`` x ``W`` mask."""
    m = np.zeros((H, W), bool)
    m[10:30, 20:40] = True
    return rle_mod.encode(m)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
