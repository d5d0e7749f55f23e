"""The exporter registry of :mod:`anyseg.io.export`: every format from one common input, and a
new format offered at once by the Python API and the service's export route."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InputError
from anyseg.io import export
from anyseg.masks import mask_iou
from anyseg.masks import rle as rle_mod
from anyseg.types import Masks

BUILT_IN = ["coco", "yolo", "png", "coco-polygons", "indexed"]


def _masks() -> Masks:
    yy, xx = np.mgrid[:48, :64]
    m = np.zeros((3, 48, 64), bool)
    m[0] = (xx - 20) ** 2 + (yy - 20) ** 2 < 12**2
    m[0, 18:22, 18:22] = False  # a hole
    m[1, 10:40, 25:60] = True  # overlaps mask 0
    m[2, 44:46, 2:4] = True
    return Masks(m, scores=[0.9, 0.5, 0.7]).with_columns(labels=np.array(["cat", "dog", "cat"]))


def _toy_write(data: export.ExportData, sink: export.ExportSink) -> None:
    """A toy format: one line per object, ``image label area``."""
    lines = [f"{o.image} {o.label} {int(data.mask(o).sum())}\n" for o in data.objects]
    sink.add("toy/objects.txt", "".join(lines).encode())


@pytest.fixture
def toy():
    exp = export.register_exporter(export.Exporter("toy", "one line per object", ".txt", _toy_write))
    try:
        yield exp
    finally:
        export.EXPORTERS.pop("toy", None)


# -- the Python API ---------------------------------------------------------------------------------
def test_registry_offers_the_built_in_formats_and_checks_names():
    assert list(export.EXPORTERS)[:5] == BUILT_IN
    assert all(e.description and e.suffix.startswith(".") for e in export.EXPORTERS.values())
    with pytest.raises(InputError, match="already registered"):
        export.register_exporter(export.Exporter("coco", "again", ".json", _toy_write))
    with pytest.raises(InputError, match="a-z, 0-9"):
        export.register_exporter(export.Exporter("Bad Name", "x", ".txt", _toy_write))
    with pytest.raises(InputError, match="unknown export format 'xml'; expected one of coco, yolo, png"):
        export.get_exporter("xml")
    assert "toy" not in export.EXPORTERS


def test_a_registered_exporter_is_offered_by_the_io_api(toy, tmp_path):
    data = export.ExportData.from_masks(_masks(), "photos/img.png")
    assert export.get_exporter("toy") is toy and "toy" in export.EXPORTERS
    body, media_type, suffix = export.export_bytes("toy", data)
    assert (media_type, suffix) == ("application/zip", ".zip")
    text = zipfile.ZipFile(io.BytesIO(body)).read("toy/objects.txt").decode()
    assert text.splitlines() == [f"1 {lab} {int(m.sum())}" for lab, m in zip(["cat", "dog", "cat"], _masks().masks)]
    written = export.save_export("toy", data, tmp_path / "out")
    assert written == [tmp_path / "out" / "toy" / "objects.txt"] and written[0].read_text() == text


def test_every_format_from_masks(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    masks = _masks()
    data = export.ExportData.from_masks(masks, "../x/img.png")
    out = {fmt: export.save_export(fmt, data, tmp_path / fmt) for fmt in BUILT_IN}
    assert [p.name for p in out["coco"]] == ["coco.json"]
    coco = COCO(str(out["coco"][0]))
    assert coco.loadImgs(1)[0]["file_name"] == "img.png" and len(coco.getAnnIds()) == 3
    for ann, m in zip(coco.loadAnns(coco.getAnnIds()), masks.masks):
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), m)
    poly = COCO(str(out["coco-polygons"][0]))
    back = np.stack([poly.annToMask(a) for a in poly.loadAnns(poly.getAnnIds())]).astype(bool)
    assert all(isinstance(a["segmentation"], list) for a in poly.loadAnns(poly.getAnnIds()))
    assert np.diag(mask_iou(back, masks.masks)).min() > 0.95 and back[0, 20, 20]  # polygons lose the hole
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "cat\ndog\n"
    lines = (tmp_path / "yolo" / "labels" / "img.txt").read_text().splitlines()
    assert [int(line.split()[0]) for line in lines] == [0, 1, 0]
    index = json.loads((tmp_path / "png" / "annotations.json").read_text())
    for item, m in zip(index, masks.masks):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / item["file"])) == 255, m)
    # indexed: the same pixels as the single-image save_indexed_png (best score wins an overlap)
    im = Image.open(tmp_path / "indexed" / "indexed" / "img.png")
    assert im.mode == "P"
    single = np.asarray(Image.open(export.save_indexed_png(masks, tmp_path / "single.png")))
    np.testing.assert_array_equal(np.asarray(im), single)
    values = json.loads((tmp_path / "indexed" / "annotations.json").read_text())
    assert [(v["value"], v["label"]) for v in values] == [(1, "cat"), (2, "dog"), (3, "cat")]


def test_indexed_holds_at_most_255_objects_and_folders_stay_inside(tmp_path):
    rle = rle_mod.encode(np.ones((4, 4), bool))
    many = export.ExportData("p", {"a": export.ExportImage("a", "a.png", 4, 4)},
                             [export.ExportObject(i, "a", "x", rle) for i in range(256)])
    with pytest.raises(InputError, match="at most 255"):
        export.export_bytes("indexed", many)
    with pytest.raises(InputError, match="not in the export"):
        export.ExportData("p", {}, [export.ExportObject(1, "a", "x", rle)])
    export.register_exporter(export.Exporter("escape", "writes outside", ".txt",
                                              lambda data, sink: sink.add("../evil.txt", b"x")))
    try:
        with pytest.raises(InputError, match="not a relative path"):
            export.save_export("escape", many, tmp_path / "out")
    finally:
        export.EXPORTERS.pop("escape")
    assert not (tmp_path / "evil.txt").exists()


# -- the service ------------------------------------------------------------------------------------
@pytest.fixture
def client(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from anyseg.models import load_model
    from anyseg.serve.app import create_app

    app = create_app(predictor=load_model("classical"), db_url=f"sqlite:///{tmp_path / 'a.db'}")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        iid = c.post("/api/images", files={"file": ("one.png", buf.getvalue(), "image/png")}).json()["id"]
        c.pid = c.post("/api/projects", json={"name": "reg"}).json()["id"]
        for label, m in zip(["cat", "dog"], _masks().masks):
            r = c.post(f"/api/projects/{c.pid}/annotations", json={"image_id": iid, "label": label,
                                                                    "rle": rle_mod.encode(m)})
            assert r.status_code == 201, r.text
        yield c


def test_a_registered_exporter_is_offered_by_the_service(client, toy):
    listed = client.get("/api/export-formats").json()
    assert [f["name"] for f in listed][:5] == BUILT_IN and "toy" in [f["name"] for f in listed]
    assert listed[0] == {"name": "coco", "description": export.EXPORTERS["coco"].description,
                         "media_type": "application/json", "suffix": ".json"}
    r = client.get(f"/api/projects/{client.pid}/export", params={"format": "toy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == 'attachment; filename="reg_toy.zip"'
    assert zipfile.ZipFile(io.BytesIO(r.content)).read("toy/objects.txt").decode().count("\n") == 2
    export.EXPORTERS.pop("toy")  # unregistered: no longer offered, and refused like any bad value
    assert "toy" not in [f["name"] for f in client.get("/api/export-formats").json()]
    r = client.get(f"/api/projects/{client.pid}/export", params={"format": "toy"})
    assert r.status_code == 422 and r.json()["detail"].startswith("query.format: String should match pattern")


def test_service_exports_the_new_formats(client):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    r = client.get(f"/api/projects/{client.pid}/export", params={"format": "coco-polygons"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"] == 'attachment; filename="reg_coco-polygons.json"'
    coco = COCO()
    coco.dataset = r.json()
    coco.createIndex()
    assert all(isinstance(a["segmentation"], list) for a in coco.loadAnns(coco.getAnnIds()))
    r = client.get(f"/api/projects/{client.pid}/export", params={"format": "indexed"})
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(z.namelist()) == ["annotations.json", "indexed/one.png"]
    arr = np.asarray(Image.open(io.BytesIO(z.read("indexed/one.png"))))
    assert set(np.unique(arr)) == {0, 1, 2}
