"""The ``anyseg serve`` HTTP API: uploads, prompts, projects, exports and the service limits.

A tiny random-weight SAM (``tests/tiny_models.py``) is loaded through ``weights=``; SQLite
lives in ``tmp_path``. Queue and timeout behaviour use a stub predictor that blocks.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import zipfile

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
from fastapi.testclient import TestClient

from anyseg.masks import rle as rle_mod
from anyseg.models.base import Predictor
from anyseg.serve.app import create_app
from anyseg.types import Embedding, Masks

BASE = "http://127.0.0.1"  # the service answers to loopback Host names only (DNS rebinding)


def _png(h: int = 48, w: int = 64, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    arr[10:30, 20:40] = (250, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_models import BUILDERS

    from anyseg.models import load_model

    folder = BUILDERS["sam"](tmp_path_factory.mktemp("tiny") / "sam-vit-base")
    return load_model("sam-vit-base", weights=folder, device="cpu")


class Counting:
    """Wraps a predictor, counting ``embed`` calls."""

    def __init__(self, inner):
        self.inner = inner
        self.embeds = 0
        self.name, self.family = inner.name, inner.family

    @property
    def model_id(self):
        return self.inner.model_id

    def embed(self, image):
        self.embeds += 1
        return self.inner.embed(image)

    def __getattr__(self, item):
        return getattr(self.inner, item)


@pytest.fixture()
def client(tiny_sam, tmp_path):
    pred = Counting(tiny_sam)
    app = create_app(predictor=pred, db_url=f"sqlite:///{tmp_path / 'a.db'}", max_upload_bytes=200_000,
                     max_pixels=100_000)
    with TestClient(app, base_url=BASE) as c:
        c.pred = pred
        yield c


def _upload(c, data: bytes, name: str = "img.png"):
    return c.post("/api/images", files={"file": (name, data, "image/png")})


def _check_masks(masks, h, w, n=None):
    if n is not None:
        assert len(masks) == n
    for m in masks:
        assert m["rle"]["size"] == [h, w]
        dec = rle_mod.decode(m["rle"])
        assert dec.shape == (h, w) and int(dec.sum()) == m["area"]
        assert len(m["box"]) == 4 and isinstance(m["score"], float)


# -- images and prompts ------------------------------------------------------------------------------
def test_health_and_index(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": "sam-vit-base", "family": "sam"}
    assert client.get("/").status_code in (200, 404)
    spec = client.get("/openapi.json").json()
    for path in ("/api/images", "/api/images/{image_id}/predict", "/api/projects/{pid}/export",
                 "/api/annotations/{aid}"):
        assert path in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/api/images"]["post"]["requestBody"]["content"]


def test_upload_stable_id_and_single_embedding(client):
    data = _png()
    r = _upload(client, data)
    assert r.status_code == 200, r.text
    info = r.json()
    assert len(info["id"]) == 16 and (info["width"], info["height"]) == (64, 48) and info["file_name"] == "img.png"
    assert client.pred.embeds == 1
    again = _upload(client, data, "other-name.png").json()
    assert again["id"] == info["id"]
    assert client.pred.embeds == 1
    # the same pixels as JPEG-free lossless re-encoding (BMP) give the same id: the hash is of pixels
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="BMP")
    assert _upload(client, buf.getvalue(), "x.bmp").json()["id"] == info["id"]
    assert [i["id"] for i in client.get("/api/images").json()] == [info["id"]]
    got = client.get(f"/api/images/{info['id']}")
    assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content == data
    for _ in range(3):
        client.post(f"/api/images/{info['id']}/predict", json={"points": [[30, 20]], "labels": [1]})
    assert client.pred.embeds == 1


def test_predict_click_box_mask_multimask(client):
    iid = _upload(client, _png()).json()["id"]
    r = client.post(f"/api/images/{iid}/predict", json={"points": [[30, 20]], "labels": [1], "multimask": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seconds"] >= 0
    _check_masks(body["masks"], 48, 64, n=3)
    r = client.post(f"/api/images/{iid}/predict", json={"box": [10, 5, 50, 40], "multimask": False})
    assert r.status_code == 200, r.text
    _check_masks(r.json()["masks"], 48, 64, n=1)
    prev = body["masks"][0]["rle"]
    r = client.post(f"/api/images/{iid}/predict",
                    json={"points": [[30, 20], [5, 5]], "labels": [1, 0], "mask_rle": prev, "multimask": False})
    assert r.status_code == 200, r.text
    _check_masks(r.json()["masks"], 48, 64, n=1)


@pytest.mark.parametrize("body", [
    {"points": [[500, 20]], "labels": [1]},
    {"points": [[-1, 2]]},
    {},
    {"points": [], "labels": []},
    {"box": [40, 10, 20, 30]},
    {"points": [[1, 2, 3]]},
    {"points": [[3, 3]], "labels": [2]},
    {"points": [[3, 3]], "labels": [1, 1]},
    {"mask_rle": {"size": [10, 10], "counts": "0"}},
])
def test_bad_prompt_400(client, body):
    iid = _upload(client, _png()).json()["id"]
    r = client.post(f"/api/images/{iid}/predict", json=body)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail


def test_everything_and_text(client):
    iid = _upload(client, _png()).json()["id"]
    r = client.post(f"/api/images/{iid}/everything",
                    json={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})
    assert r.status_code == 200, r.text
    masks = r.json()["masks"]
    assert len(masks) >= 1
    _check_masks(masks, 48, 64)
    r = client.post(f"/api/images/{iid}/text", json={"phrases": ["cat"], "model": "auto"})
    assert r.status_code == 501, r.text
    assert "text model" in r.json()["detail"]


# -- limits ------------------------------------------------------------------------------------------
def test_limits_upload(client):
    big = b"\x89PNG" + b"0" * 300_000
    r = _upload(client, big, "big.png")
    assert r.status_code == 413
    # no Content-Length: counted while reading
    def gen():
        body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n")
        yield body
        for _ in range(40):
            yield b"0" * 10_000
        yield b"\r\n--b--\r\n"
    r = client.post("/api/images", content=gen(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413, r.text
    r = _upload(client, b"this is not an image at all" * 10, "evil.png")
    assert r.status_code == 415 and isinstance(r.json()["detail"], str)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (400, 400)).save(buf, format="PNG")  # 160k pixels > 100k, a small file
    r = _upload(client, buf.getvalue(), "huge.png")
    assert r.status_code == 413 and "megapixels" in r.json()["detail"]
    assert client.get("/api/images").json() == []
    # any other body is bounded too
    r = client.post("/api/projects", content=b"{" + b" " * 300_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("path", [
    "/api/images/0123456789abcdef", "/api/images/..%2F..%2Fetc%2Fpasswd", "/api/images/....",
    "/api/images/0123456789ABCDEF", "/api/images/%2e%2e", "/api/images/0123456789abcdef0",
])
def test_unknown_and_traversal_ids(client, path):
    assert client.get(path).status_code in (404, 422)
    r = client.post(path.rstrip("/") + "/predict", json={"points": [[1, 1]]})
    assert r.status_code in (404, 422, 405)


class SlowPredictor(Predictor):
    name = "stub"
    family = "sam"

    def __init__(self, release: threading.Event, sleep: float = 0.0):
        self.release = release
        self.sleep = sleep
        self.started = 0

    def embed(self, image):
        return Embedding("stub", image.shape[:2], image.shape[:2], np.zeros(4, np.float32))

    def predict(self, embedding, prompt, multimask=False):
        self.started += 1
        if self.sleep:
            time.sleep(self.sleep)
        else:
            self.release.wait(10)
        h, w = embedding.original_size
        return Masks(np.zeros((1, h, w), bool), scores=[0.5])


def test_queue_full_503_and_timeout_504(tmp_path):
    release = threading.Event()
    pred = SlowPredictor(release)
    app = create_app(predictor=pred, db_url=f"sqlite:///{tmp_path / 'q.db'}", workers=1, queue_size=1,
                     request_timeout_s=5)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            r = await c.post("/api/images", files={"file": ("a.png", _png(), "image/png")})
            iid = r.json()["id"]
            url = f"/api/images/{iid}/predict"
            body = {"points": [[3, 3]]}
            first = [asyncio.create_task(c.post(url, json=body)) for _ in range(2)]
            for _ in range(100):  # both admitted: one running, one queued
                await asyncio.sleep(0.02)
                if app.state.anyseg.pool.pending == 2:
                    break
            assert app.state.anyseg.pool.pending == 2
            busy = await c.post(url, json=body)
            release.set()
            done = await asyncio.gather(*first)
            return busy, done

    busy, done = asyncio.run(scenario())
    assert busy.status_code == 503 and "busy" in busy.json()["detail"]
    assert [d.status_code for d in done] == [200, 200]

    pred2 = SlowPredictor(threading.Event(), sleep=1.0)
    app2 = create_app(predictor=pred2, db_url=f"sqlite:///{tmp_path / 't.db'}", request_timeout_s=0.2)
    with TestClient(app2, base_url=BASE) as c:
        iid = _upload(c, _png()).json()["id"]
        r = c.post(f"/api/images/{iid}/predict", json={"points": [[3, 3]]})
        assert r.status_code == 504 and "0.2" in r.json()["detail"]


def test_cors(tiny_sam, tmp_path):
    hdr = {"Origin": "http://example.com"}
    app = create_app(predictor=tiny_sam, db_url=f"sqlite:///{tmp_path / 'c.db'}")
    with TestClient(app, base_url=BASE) as c:
        assert "access-control-allow-origin" not in c.get("/api/health", headers=hdr).headers
    app = create_app(predictor=tiny_sam, db_url=f"sqlite:///{tmp_path / 'c.db'}", cors_origins=["http://example.com"])
    with TestClient(app, base_url=BASE) as c:
        r = c.get("/api/health", headers=hdr)
        assert r.headers["access-control-allow-origin"] == "http://example.com"
        r = c.options("/api/projects", headers={**hdr, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200


# -- projects, annotations, persistence, export -----------------------------------------------------
def _mask(h=48, w=64, y0=10, y1=30, x0=20, x1=40):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_projects_annotations_crud(client):
    iid = _upload(client, _png()).json()["id"]
    r = client.post("/api/projects", json={"name": "birds"})
    assert r.status_code in (200, 201), r.text
    p = r.json()
    assert p["name"] == "birds" and "created" in p and isinstance(p["id"], int)
    assert [x["id"] for x in client.get("/api/projects").json()] == [p["id"]]
    assert client.get(f"/api/projects/{p['id']}").json()["name"] == "birds"
    assert client.get("/api/projects/999").status_code == 404
    rle = rle_mod.encode(_mask())
    r = client.post(f"/api/projects/{p['id']}/annotations",
                    json={"image_id": iid, "label": "cat", "rle": rle, "score": 0.9, "metadata": {"by": "me"}})
    assert r.status_code in (200, 201), r.text
    a = r.json()
    assert a["label"] == "cat" and a["area"] == 400 and a["metadata"] == {"by": "me"} and a["box"] == [20, 10, 40, 30]
    # wrong size, unknown image, bad counts -> 400
    bad = rle_mod.encode(np.zeros((10, 10), bool))
    assert client.post(f"/api/projects/{p['id']}/annotations",
                       json={"image_id": iid, "label": "x", "rle": bad}).status_code == 400
    assert client.post(f"/api/projects/{p['id']}/annotations",
                       json={"image_id": "0" * 16, "label": "x", "rle": rle}).status_code == 400
    assert client.post(f"/api/projects/{p['id']}/annotations",
                       json={"image_id": iid, "label": "x", "rle": {"size": [48, 64], "counts": "zz"}}).status_code == 400
    lst = client.get(f"/api/projects/{p['id']}/annotations", params={"image_id": iid}).json()
    assert [x["id"] for x in lst] == [a["id"]]
    assert client.get(f"/api/projects/{p['id']}/annotations", params={"image_id": "f" * 16}).json() == []
    r = client.patch(f"/api/annotations/{a['id']}",
                     json={"label": "dog", "rle": rle_mod.encode(_mask(y1=20)), "metadata": {"k": 1}})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "dog" and r.json()["area"] == 200 and r.json()["metadata"] == {"k": 1}
    assert client.patch("/api/annotations/9999", json={"label": "x"}).status_code == 404
    assert client.delete(f"/api/annotations/{a['id']}").status_code == 200
    assert client.get(f"/api/projects/{p['id']}/annotations").json() == []
    client.post(f"/api/projects/{p['id']}/annotations", json={"image_id": iid, "label": "cat", "rle": rle})
    assert client.delete(f"/api/projects/{p['id']}").status_code == 200
    assert client.get(f"/api/projects/{p['id']}").status_code == 404
    assert client.get("/api/projects").json() == []


def test_persistence_across_restarts(tiny_sam, tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with TestClient(create_app(predictor=tiny_sam, db_url=url), base_url=BASE) as c:
        iid = _upload(c, _png()).json()["id"]
        pid = c.post("/api/projects", json={"name": "keep"}).json()["id"]
        aid = c.post(f"/api/projects/{pid}/annotations",
                     json={"image_id": iid, "label": "cat", "rle": rle_mod.encode(_mask())}).json()["id"]
    pred = Counting(tiny_sam)
    with TestClient(create_app(predictor=pred, db_url=url), base_url=BASE) as c:
        assert [i["id"] for i in c.get("/api/images").json()] == [iid]
        anns = c.get(f"/api/projects/{pid}/annotations").json()
        assert [a["id"] for a in anns] == [aid] and np.array_equal(rle_mod.decode(anns[0]["rle"]), _mask())
        # the embedding is recomputed from the stored bytes after a restart
        r = c.post(f"/api/images/{iid}/predict", json={"points": [[30, 20]], "multimask": False})
        assert r.status_code == 200 and pred.embeds == 1


def test_exports(client, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    i1 = _upload(client, _png(seed=1), "one.png").json()["id"]
    i2 = _upload(client, _png(seed=2), "two.png").json()["id"]
    pid = client.post("/api/projects", json={"name": "ex"}).json()["id"]
    saved = {}
    for iid, label, m in ((i1, "cat", _mask()), (i1, "dog", _mask(y0=0, y1=5, x0=0, x1=8)), (i2, "cat", _mask(y1=12))):
        a = client.post(f"/api/projects/{pid}/annotations", json={"image_id": iid, "label": label,
                                                                  "rle": rle_mod.encode(m)}).json()
        saved[a["id"]] = m
    r = client.get(f"/api/projects/{pid}/export", params={"format": "coco"})
    assert r.status_code == 200
    path = tmp_path / "coco.json"
    path.write_text(r.text)
    coco = COCO(str(path))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["cat", "dog"]
    assert len(coco.getImgIds()) == 2
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert np.array_equal(coco.annToMask(ann).astype(bool), saved[ann["id"]])

    r = client.get(f"/api/projects/{pid}/export", params={"format": "yolo"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert z.read("classes.txt").decode().split() == ["cat", "dog"]
    assert sorted(n for n in z.namelist() if n.startswith("labels/")) == ["labels/one.txt", "labels/two.txt"]
    lines = z.read("labels/one.txt").decode().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == [0, 1]
    assert all(0 <= float(v) <= 1 for line in lines for v in line.split()[1:])

    r = client.get(f"/api/projects/{pid}/export", params={"format": "png"})
    z = zipfile.ZipFile(io.BytesIO(r.content))
    index = json.loads(z.read("annotations.json"))
    assert len(index) == 3
    from PIL import Image

    for item in index:
        m = np.asarray(Image.open(io.BytesIO(z.read(item["file"])))) > 127
        assert np.array_equal(m, saved[item["annotation_id"]])
    assert client.get(f"/api/projects/{pid}/export", params={"format": "xml"}).status_code == 422
    assert client.get("/api/projects/999/export").status_code == 404


def test_runtime_applies_to_a_model_loaded_by_name(tiny_sam, tmp_path):
    """create_app(model=..., runtime=...) wraps the loaded model; the serve CLI passes --runtime (default auto)."""
    import argparse

    from anyseg.serve.cli import add_parser

    app = create_app(model="sam-vit-base", weights=str(tiny_sam.folder), db_url=f"sqlite:///{tmp_path / 'r.db'}",
                     runtime="torch-bf16")
    pred = app.state.anyseg.predictor
    assert pred.runtime == "torch-bf16" and pred.model_id.endswith("@bf16")
    with TestClient(app, base_url=BASE) as c:
        up = c.post("/api/images", files={"file": ("a.png", _png(), "image/png")}).json()
        r = c.post(f"/api/images/{up['id']}/predict", json={"points": [[10, 10]]})
        assert r.status_code == 200, r.text
    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    assert sub.choices["serve"].parse_args([]).runtime == "auto"
