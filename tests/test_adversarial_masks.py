"""Hostile mask-like input (issue 13, class 1): polygons, COCO files and mask PNGs.

Every case must end in a one-line :class:`InputError` (or a correct mask), never a native
crash, an unbounded allocation or a hang. Cases that would reach a native decoder if the
validation regressed run in a child process with an address-space limit
(:func:`_hostile_masks.run_child`), so that a crash or a big allocation fails the test instead
of killing pytest. RLEs themselves: test_adversarial_rle.py.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from anyseg.errors import InputError
from anyseg.eval import datasets
from anyseg.eval.coco_eval import coco_mask_ap, read_results
from anyseg.masks import polygons, rle

from _hostile_masks import CRASH_RLE, one_line_error, run_child


# -- polygons ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("polys,match", [
    ([[0, 0, 5, float("nan"), 5, 5]], "non-finite"),
    ([[0, 0, 5, float("inf"), 5, 5]], "non-finite"),
    ([[0, 0, 5, 0, 5]], "even number of coordinates"),
    ([["0", "0", "5", "0", "5", "5"]], "flat list of numbers"),
    ([[[0, 0], [1]]], "flat list of numbers"),
    ([[0, 0, 5, 0, 5, 5j]], "flat list of numbers"),
    ([0, 0, 5, 0, 5, 5], "flat list of numbers .wrap a single polygon"),
    ("0 0 5 0 5 5", "list of"),
    ([[0, 0, 1, 0, 1, 1]] * 1_400_000, "polygons are more than"),
    ([[0.0, 0.0] * ((1 << 22) + 1)], "values are more than"),
])
def test_malformed_polygons_are_refused(polys, match):
    with pytest.raises(InputError, match=match) as e:
        polygons.polygons_to_mask(polys, 20, 20)
    one_line_error(e)


def test_polygon_canvas_is_checked_against_the_pixel_limit():
    with pytest.raises(InputError, match="over the limit of 40 megapixels"):
        polygons.polygons_to_mask([[0, 0, 5, 0, 5, 5]], 100000, 100000)
    with pytest.raises(InputError, match="height and width"):
        polygons.polygons_to_rle([[0, 0, 5, 0, 5, 5]], -1, 5)


POLYGON_CHILD = """
import json
import numpy as np
from anyseg.errors import InputError
from anyseg.masks import polygons
zigzag = np.array([[0, 0], [99, 1]] * 20_000, float).ravel()
cases = {
    "huge": [[0, 0, 1e12, 0, 1e12, 1e12]],
    "huger": [[-1e300, -1e300, 1e300, -1e300, 0, 1e300]],
    "int32 overflow": [[0, 0, 4.3e8, 0, 0, 4.3e8]],
    "zigzag": [zigzag.tolist()],
    "many zigzags": [np.array([[0, 0], [99, 1]] * 8_000, float).ravel().tolist()] * 30,
}
out = {}
for name, polys in cases.items():
    try:
        out[name] = int(polygons.polygons_to_mask(polys, 100, 100).sum())
    except InputError as e:
        out[name] = "InputError: " + str(e)
print(json.dumps(out))
"""


def test_polygons_with_huge_coordinates_or_outlines_in_a_child():
    # pycocotools scales coordinates by 5 into C ints and allocates ~100 bytes per pixel of
    # outline: huge coordinates are clipped first, and over-long outlines are refused
    proc = run_child(POLYGON_CHILD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["huge"] == 4950 and out["huger"] == 10000 and out["int32 overflow"] == 10000  # clipped, not refused
    assert out["zigzag"].startswith("InputError: polygon 0 has an outline of 3960000 pixels")
    assert out["many zigzags"].startswith("InputError: polygons have outlines of more than 16777216 pixels")


def test_clipping_keeps_polygons_near_the_canvas_exactly_as_pycocotools():
    rng = np.random.default_rng(5)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(5, 40, 2))
        k = int(rng.integers(3, 8))
        pts = np.stack([rng.uniform(-w, 2 * w, k), rng.uniform(-h, 2 * h, k)], 1).ravel().tolist()
        ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([pts], h, w))).astype(bool)
        np.testing.assert_array_equal(polygons.polygons_to_mask([pts], h, w), ref)
    far = np.array([[5.0, 5.0], [500.0, 5.0], [5.0, 500.0]])
    clipped = polygons.clip_polygon(far, 10, 10)
    assert clipped[:, 0].max() <= 20 and clipped[:, 1].max() <= 20
    assert polygons.polygons_to_mask([far.ravel().tolist()], 10, 10)[5:, 5:].all()


def test_segmentation_to_rle_dispatch():
    square = [[1, 1, 4, 1, 4, 4, 1, 4]]
    want = rle.encode(polygons.polygons_to_mask(square, 6, 6))
    assert polygons.segmentation_to_rle(square, 6, 6) == want
    assert polygons.segmentation_to_rle(want, 6, 6) == want
    with pytest.raises(InputError, match="does not match"):
        polygons.segmentation_to_rle(want, 6, 7)
    with pytest.raises(InputError, match="polygons .* or an RLE dict"):
        polygons.segmentation_to_rle(42, 6, 6)
    assert polygons.polygons_to_rle([], 3, 2) == rle.encode(np.zeros((3, 2), bool))


# -- COCO files ------------------------------------------------------------------------------------


def _gt_file(tmp_path, annotations=None):
    square = rle.encode(np.pad(np.ones((10, 10), bool), ((0, 22), (0, 22))))
    gt = {"images": [{"id": 7, "height": 32, "width": 32}], "categories": [{"id": 3}],
          "annotations": annotations or [{"id": 1, "image_id": 7, "category_id": 3, "segmentation": square}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, square


def test_coco_results_file_with_a_malformed_segmentation_names_the_entry(tmp_path):
    gt, square = _gt_file(tmp_path)
    good = {"image_id": 7, "category_id": 3, "segmentation": square, "score": 0.9}
    bad_entries = {
        "crash": dict(good, segmentation=CRASH_RLE),
        "mismatch": dict(good, segmentation=rle.encode(np.zeros((16, 16), bool))),
        "polygon": dict(good, segmentation=[[0, 0, float("nan"), 1, 2, 2]]),
        "counts": dict(good, segmentation={"size": [32, 32], "counts": "PPP"}),
        "score": dict(good, score=float("nan")),
        "box": dict(good, bbox=[0, 0, "1", 1]),
        "id": dict(good, image_id=[7]),
    }
    (tmp_path / "preds.json").write_text(json.dumps([good, good, dict(good)]))
    paths = []
    for name, entry in bad_entries.items():
        paths.append(str(tmp_path / f"{name}.json"))
        (tmp_path / f"{name}.json").write_text(json.dumps([good, good, entry]))  # NaN is written as NaN
    proc = run_child(f"""
        from anyseg.errors import InputError
        from anyseg.eval.coco_eval import coco_mask_ap
        print(coco_mask_ap({str(gt)!r}, {str(tmp_path / "preds.json")!r})["AP"])
        for path in {paths!r}:
            try:
                coco_mask_ap({str(gt)!r}, path)
                print("accepted")
            except InputError as e:
                print("InputError:", e)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert float(lines[0]) == pytest.approx(1.0)
    assert len(lines) == 1 + len(bad_entries)
    for (name, _), line in zip(bad_entries.items(), lines[1:]):
        assert line.startswith(f"InputError: prediction #2 in {name}.json"), line
    assert "RLE size [1000000, 1000000] does not match the image size [32, 32]" in lines[1]
    assert "RLE size [16, 16] does not match" in lines[2] and "non-finite" in lines[3]
    assert "middle of a number" in lines[4]


GT_CHILD = """
import json
from anyseg.errors import InputError
from anyseg.eval import datasets
from anyseg.eval.coco_eval import coco_mask_ap
for path in PATHS:
    for name, call in (("coco_mask_ap", lambda: coco_mask_ap(path, [])),
                       ("instances", lambda: datasets.read_coco(path).instances(7))):
        try:
            call()
            print(name, "accepted")
        except InputError as e:
            print(name, "InputError:", e)
"""


def test_coco_ground_truth_with_malformed_annotations_names_the_entry(tmp_path):
    # in a child: pycocotools would crash on the RLE if the validation regressed
    ok = {"id": 1, "image_id": 7, "category_id": 3, "segmentation": [[0, 0, 5, 0, 5, 5]]}
    cases = {
        "nan polygon": (dict(ok, segmentation=[[0, 0, float("nan"), 0, 5, 5]]), "non-finite"),
        "crash rle": (dict(ok, segmentation=CRASH_RLE), "RLE size [1000000, 1000000] does not match"),
        "wrong size": (dict(ok, segmentation=rle.encode(np.zeros((2, 2), bool))), "does not match"),
        "bad counts": (dict(ok, segmentation={"size": [32, 32], "counts": [1024, True]}), "integers"),
        "area": (dict(ok, area="big"), "'area' must be a number"),
        "crowd": (dict(ok, iscrowd=2), "'iscrowd' must be 0 or 1"),
        "image id": (dict(ok, image_id={"a": 1}), "'image_id' must be an integer id"),
        "duplicate id": (dict(ok, id=1), "repeats the annotation id 1"),
    }
    paths = []
    for n, (name, (ann, _)) in enumerate(cases.items()):
        folder = tmp_path / str(n)
        folder.mkdir()
        paths.append(str(_gt_file(folder, [ok, ann] if name == "duplicate id" else [dict(ok, id=5), ann])[0]))
    proc = run_child(f"PATHS = {paths!r}\n" + GT_CHILD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 * len(cases)
    for n, (name, (_, match)) in enumerate(cases.items()):
        by_ap, by_reader = lines[2 * n], lines[2 * n + 1]
        assert by_ap.startswith("coco_mask_ap InputError: COCO annotation #1 in gt.json") and match in by_ap, by_ap
        if name in ("nan polygon", "crash rle", "wrong size", "bad counts"):  # read_coco checks these on decoding
            assert by_reader.startswith(f"instances InputError: {paths[n]}: annotation #1 (id 1): "), by_reader
        elif name == "image id":
            assert "'image_id' must be an integer id" in by_reader, by_reader


def test_results_with_boxes_on_some_entries_only_are_refused(tmp_path):
    # pycocotools' loadRes takes the area from the box when the first result has one, and
    # then reads every result's box (KeyError on the others)
    gt, square = _gt_file(tmp_path)
    good = {"image_id": 7, "category_id": 3, "segmentation": square, "score": 0.9}
    boxed = dict(good, bbox=[0, 0, 10, 10])
    assert coco_mask_ap(gt, [boxed, boxed])["AP"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="prediction #1 has no 'bbox'") as e:
        coco_mask_ap(gt, [boxed, good])
    one_line_error(e)


def test_read_coco_decodes_valid_instances_and_checks_image_sizes(tmp_path):
    ok = {"id": 1, "image_id": 7, "category_id": 3, "segmentation": [[0, 0, 5, 0, 5, 5]]}
    square = rle.encode(np.pad(np.ones((10, 10), bool), ((0, 22), (0, 22))))
    path, _ = _gt_file(tmp_path, [ok, {"id": 2, "image_id": 7, "category_id": 3, "segmentation": square}])
    masks = datasets.read_coco(path).instances(7)
    assert masks.masks.shape == (2, 32, 32) and masks.masks[1].sum() == 100 and masks.masks[0].sum() > 0
    assert masks.labels.tolist() == [3, 3]
    bad = json.loads(path.read_text())
    bad["images"][0]["height"] = 1.5
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"image #0 \[height, width\]") as e:
        datasets.read_coco(path)
    one_line_error(e)


def test_json_readers_bound_the_file_size(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + ",".join(["{}"] * 1000) + "]")
    with pytest.raises(InputError, match="larger than the 0.001 MB") as e:
        datasets.read_json(path, "COCO results file", max_bytes=1000)
    one_line_error(e)
    assert len(datasets.read_json(path, max_bytes=10_000)) == 1000
    with pytest.raises(InputError, match="not a regular file"):
        datasets.read_json("/dev/zero")
    with pytest.raises(InputError, match="not valid UTF-8 JSON"):
        (tmp_path / "bin.json").write_bytes(b"\xff\xfe[")
        datasets.read_json(tmp_path / "bin.json")
    with pytest.raises(InputError, match="must be a COCO results list"):
        (tmp_path / "obj.json").write_text("{}")
        read_results(tmp_path / "obj.json")
    with pytest.raises(InputError, match="not valid UTF-8 JSON"):
        (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
        datasets.read_json(tmp_path / "deep.json")


# -- mask PNGs ---------------------------------------------------------------------------------------


def write_png(path, width: int, height: int, rows: int | None = None, bit_depth: int = 1, color_type: int = 0) -> None:
    """A PNG of zeros declaring ``width`` x ``height``; only ``rows`` rows of data when given (truncated)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = bytes(1 + (width * bit_depth * channels + 7) // 8)
    comp = zlib.compressobj(6)
    data = bytearray()
    for _ in range(height if rows is None else rows):
        data += comp.compress(row)
    data += comp.flush() if rows is None else comp.flush(zlib.Z_SYNC_FLUSH)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bytes(data)) + chunk(b"IEND", b""))


MASK_CHILD = """
from anyseg.errors import InputError
from anyseg.io.images import load_mask
from anyseg.eval.datasets import read_object_ids
for name, fn in (("load_mask", load_mask), ("read_object_ids", read_object_ids)):
    for path, size in CASES:
        try:
            fn(path, size=size)
            print(name, "accepted")
        except InputError as e:
            print(name, "InputError:", e)
"""


def test_bomb_and_wrong_size_mask_pngs_in_a_child(tmp_path):
    # 20000x20000 1-bit: 400 MP in a 50 KB file; 8000x8000: 64 MP, over our 40 MP limit but
    # under PIL's own bomb check; 300x200 with truncated data where a 200x300 mask is wanted:
    # checking the size before decoding says "is 300x200", decoding first says "truncated".
    bomb, big, wrong = tmp_path / "bomb.png", tmp_path / "big.png", tmp_path / "wrong.png"
    write_png(bomb, 20000, 20000)
    write_png(big, 8000, 8000)
    write_png(wrong, 300, 200, rows=3)
    assert bomb.stat().st_size < 100_000
    cases = [(str(bomb), None), (str(big), None), (str(wrong), (300, 200))]
    proc = run_child(f"CASES = {cases!r}\n" + MASK_CHILD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 6 and all("InputError:" in line for line in lines), lines
    for reader in ("load_mask", "read_object_ids"):
        bomb_line, big_line, wrong_line = (line for line in lines if line.startswith(reader))
        assert "too large" in bomb_line or "megapixels" in bomb_line, bomb_line
        assert "64.0 megapixels" in big_line and "over the limit of 40" in big_line, big_line
        assert "is 300x200 but" in wrong_line and "truncated" not in wrong_line, wrong_line


def test_eval_mask_readers_do_not_misread_one_bit_or_alpha_masks(tmp_path):
    from PIL import Image

    m = np.zeros((6, 8), bool)
    m[1:4, 2:6] = True
    Image.fromarray(m).convert("1").save(tmp_path / "one.png")
    la = np.stack([m.astype(np.uint8) * 255, np.full(m.shape, 255, np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    for name in ("one.png", "la.png"):
        np.testing.assert_array_equal(datasets.read_object_ids(tmp_path / name), m.astype(np.int32))
        gt, ignore = datasets.MaskSample(name, tmp_path / name, tmp_path / name, 128).load_gt()
        np.testing.assert_array_equal(gt, m)
        assert ignore is None


def test_davis_annotations_of_different_sizes_are_a_one_line_error(tmp_path):
    from PIL import Image

    frames, anns = tmp_path / "JPEGImages" / "s", tmp_path / "Annotations" / "s"
    frames.mkdir(parents=True)
    anns.mkdir(parents=True)
    for i, size in enumerate([(8, 6), (8, 6), (9, 6)]):
        Image.new("RGB", size).save(frames / f"{i:05d}.jpg")
        Image.new("L", size, 255).save(anns / f"{i:05d}.png")
    sample = datasets.read_davis(tmp_path)[0]
    with pytest.raises(InputError, match=r"00002.png is 9x6 but frame 0 of sequence s is 8x6") as e:
        sample.load_annotations()
    one_line_error(e)
