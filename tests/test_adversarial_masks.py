"""Hostile mask-like input (issue 13, class 1): RLEs, polygons, mask PNGs and COCO files.

Every case must end in a one-line :class:`InputError` (or a correct mask), never a native
crash, an unbounded allocation or a hang. Cases that would reach a native decoder if the
validation regressed run in a child process with an address-space limit, so that a crash or
a big allocation fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from anyseg.errors import InputError
from anyseg.eval import datasets
from anyseg.eval.coco_eval import coco_mask_ap, read_results
from anyseg.masks import polygons, rle

CHILD_MEMORY = 1536 << 20  # 1.5 GiB of address space: a 1.6 GB mask cannot be allocated
CRASH_RLE = {"size": [1000000, 1000000], "counts": "PPTZZZSm0"}  # the example


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run_child(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter under :data:`CHILD_MEMORY`; the timeout is only a safety net."""
    full_env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory, env=full_env)


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def leb(runs: list[int]) -> str:
    """pycocotools' counts string of arbitrary (even negative) runs, as ``rleToString`` writes it."""
    out = bytearray()
    for i, r in enumerate(runs):
        x = r - runs[i - 2] if i > 2 else r
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append((c | 0x20 if more else c) + 48)
    return out.decode()


# -- the crash and the 3 GB allocation ------------------------------------------------------------


def test_crash_example_is_a_one_line_error_in_a_child():
    # pycocotools mallocs H*W bytes (10**12) without checking, then writes through the NULL
    # pointer: exit 139. The size check must refuse it before pycocotools is reached.
    proc = run_child(f"""
        from anyseg.errors import InputError
        from anyseg.masks import rle
        for fn in (rle.decode, rle.validate, rle.area, rle.to_bbox):
            try:
                fn({CRASH_RLE!r})
                print("accepted")
            except InputError as e:
                print("InputError:", e)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("InputError: RLE size [1000000, 1000000]") for line in lines)
    assert "over the limit of 40 megapixels" in lines[0]


def test_40000_square_is_refused_by_the_cap_before_any_allocation():
    # 1.6 GB as a dense mask; the child cannot even allocate it, so passing means "never tried".
    # The user's raised limit is still capped at MAX_RLE_PIXELS (2**29).
    counts = leb([40000 * 40000])
    proc = run_child(f"""
        from anyseg.errors import InputError
        from anyseg.masks import rle
        d = {{"size": [40000, 40000], "counts": {counts!r}}}
        for kwargs in ({{}}, {{"max_pixels": 2 * 10**9}}):
            for fn in (rle.decode, rle.validate, rle.area, rle.to_bbox):
                try:
                    fn(d, **kwargs)
                    print("accepted")
                except InputError as e:
                    print("InputError:", e)
        try:
            rle.decode_many([d] * 3)
        except InputError as e:
            print("InputError:", e)
    """, env={"ANYSEG_MAX_PIXELS": "4000000000"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 9 and all("1600.0 megapixels, over the limit of 536.871 megapixels" in line for line in lines)


def test_pixel_limit_follows_max_pixels_and_the_environment(monkeypatch):
    d = rle.encode(np.zeros((100, 100), bool))
    with pytest.raises(InputError, match="over the limit of 0.005 megapixels") as e:
        rle.decode(d, max_pixels=5000)
    one_line_error(e)
    monkeypatch.setenv("ANYSEG_MAX_PIXELS", "9999")
    with pytest.raises(InputError, match="ANYSEG_MAX_PIXELS"):
        rle.area(d)
    assert rle.area(d, max_pixels=10000) == 0
    with pytest.raises(InputError, match="max_pixels"):
        rle.decode(d, max_pixels=0)


# -- size ------------------------------------------------------------------------------------------


def test_size_mismatch_names_both_sizes():
    d = rle.encode(np.ones((3, 4), bool))
    for fn in (rle.decode, rle.validate, rle.area, rle.to_bbox):
        with pytest.raises(InputError) as e:
            fn(d, size=(4, 3))
        assert one_line_error(e) == "RLE size [3, 4] does not match the image size [4, 3] (expected [height, width])"
    assert rle.decode(d, size=(3, 4)).all()
    with pytest.raises(InputError, match="does not match"):
        rle.decode_many([d, d], size=(3, 5))


@pytest.mark.parametrize("size", [[True, 2], [2, False], [2.5, 2], [float("nan"), 2], [float("inf"), 2], [-1, 2],
                                  [2**40, 1], ["2", "2"], [2], [2, 2, 2], "22", None, {"h": 2}, [[2], [2]]])
def test_malformed_size_is_refused(size):
    with pytest.raises(InputError, match=r"'size' must be \[height, width\]") as e:
        rle.decode({"size": size, "counts": "4"})
    one_line_error(e)


def test_integral_float_size_is_accepted():
    np.testing.assert_array_equal(rle.decode({"size": [2.0, 2], "counts": [1, 3]}), [[False, True], [True, True]])


# -- compressed counts -----------------------------------------------------------------------------


def test_truncated_counts():
    good = rle.encode(np.eye(5, dtype=bool))["counts"]
    for bad in (good[:-1] + "P", good + "P", "P", good + "PPP"):
        with pytest.raises(InputError, match="ends in the middle of a number") as e:
            rle.decode({"size": [5, 5], "counts": bad})
        one_line_error(e)


@pytest.mark.parametrize("char", ["é", "\x00", " ", "/", "p", "~", "\x7f", "\n"])
def test_characters_outside_the_code_are_refused(char):
    counts = "0" + char + "4"
    with pytest.raises(InputError, match="malformed RLE counts|ASCII") as e:
        rle.decode({"size": [2, 2], "counts": counts})
    message = one_line_error(e)
    assert "ASCII" in message or "at position 1" in message


def test_bytes_with_a_nul_are_refused_not_cut_short():
    # C reads the string up to the NUL: "1\x00..." would decode as a 1-pixel run
    with pytest.raises(InputError, match="position 1"):
        rle.decode({"size": [1, 3], "counts": b"1\x002"})


@pytest.mark.parametrize("runs,match", [([1, 2], "sum to 3, expected 4"), ([3, 2], "sum to more than its 4 pixels"),
                                        ([4, 0, 1], "sum to more than"), ([], "sum to 0, expected 4")])
def test_counts_must_sum_to_height_times_width(runs, match):
    for counts in (leb(runs), runs):
        with pytest.raises(InputError, match=match) as e:
            rle.decode({"size": [2, 2], "counts": counts})
        one_line_error(e)


def test_negative_runs_are_refused():
    # run 2 = -1 (stored as is), runs 3.. as differences that go below zero
    for runs in ([2, 2, -1, 3], [1, 5, 1, -3, 2, 0], [-1, 5]):
        with pytest.raises(InputError, match="negative") as e:
            rle.decode({"size": [1, sum(runs)], "counts": leb(runs)})
        one_line_error(e)
    with pytest.raises(InputError, match="negative"):
        rle.decode({"size": [1, 4], "counts": [-1, 5]})


def test_a_number_longer_than_six_characters_is_refused():
    # pycocotools' parser shifts a C int by 5*k: past 6 characters the value is undefined
    with pytest.raises(InputError, match="7 characters"):
        rle.decode({"size": [1, 1], "counts": "PPPPPP1"})


def test_gigantic_counts_are_refused_by_their_length_before_parsing(monkeypatch):
    # 10x10 pixels: at most 101 runs of at most 6 characters each. Ten million '0' would parse
    # as ten million runs; the length check refuses them first, on the length alone: the
    # string is never handed to numpy (counted by spying on np.frombuffer).
    parsed = []
    real = np.frombuffer
    monkeypatch.setattr(np, "frombuffer", lambda buf, *a, **k: parsed.append(len(buf)) or real(buf, *a, **k))
    with pytest.raises(InputError, match="10000000 characters are too long for a 100-pixel mask") as e:
        rle.decode({"size": [10, 10], "counts": "0" * 10_000_000})
    one_line_error(e)
    with pytest.raises(InputError, match="too long"):
        rle.decode({"size": [10, 10], "counts": b"0" * 607})
    assert parsed == []
    with pytest.raises(InputError, match="606 runs, more than the 101"):  # within the length: counted, refused
        rle.decode({"size": [10, 10], "counts": "0" * 606})
    assert parsed == [606]
    with pytest.raises(InputError, match="102 runs"):
        rle.decode({"size": [10, 10], "counts": [0] * 102})


# -- uncompressed counts ---------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [[1.0, 3], [1, 2.5, 1], [True, 3], [1, False, 3], [float("nan"), 4], [None, 4],
                                    ["1", "3"], [[1], [3]], [1, 3, float("inf")], np.array([1.0, 3.0]),
                                    np.array([True, True])])
def test_uncompressed_counts_must_be_integers(counts):
    with pytest.raises(InputError, match="must be a flat list of integers") as e:
        rle.decode({"size": [2, 2], "counts": counts})
    one_line_error(e)


def test_uncompressed_counts_with_huge_values_are_refused():
    for counts in ([2**62] * 4 + [4], [2**70, 1], np.array([2**63 + 1, 3], dtype=np.uint64)):
        with pytest.raises(InputError) as e:
            rle.decode({"size": [2, 2], "counts": counts})
        one_line_error(e)


def test_uncompressed_numpy_counts_and_validate():
    d = {"size": [2, 3], "counts": np.array([1, 2, 3], dtype=np.int32)}
    m = np.asfortranarray(np.array([[0, 1, 0], [1, 0, 0]], np.uint8))
    assert rle.validate(d) == {"size": [2, 3], "counts": mask_utils.encode(m)["counts"].decode()}


def test_unknown_counts_type():
    with pytest.raises(InputError, match="string or a list of ints; got dict"):
        rle.decode({"size": [2, 2], "counts": {"a": 1}})


# -- valid RLEs are untouched ----------------------------------------------------------------------


def test_valid_rles_round_trip_byte_identically_with_pycocotools():
    rng = np.random.default_rng(7)
    shapes = [(0, 4), (4, 0), (0, 0), (1, 1), (1, 40), (40, 1), (37, 53), (128, 96)]
    for h, w in shapes:
        for density in (0.0, 0.03, 0.5, 0.97, 1.0):
            m = rng.random((h, w)) < density
            ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            got = rle.encode(m)
            assert got["counts"].encode() == ref["counts"]
            assert rle.validate(got) == got  # already canonical: the same bytes back
            assert rle.validate({"size": [h, w], "counts": ref["counts"]}) == got
            assert rle.validate(rle.to_uncompressed(m)) == got
            np.testing.assert_array_equal(rle.decode(got), m)
            assert rle.area(got) == int(m.sum())
            if h * w:
                assert rle.to_bbox(got) == [float(v) for v in mask_utils.toBbox(ref)]


def test_non_canonical_but_valid_runs_decode_to_the_same_mask():
    # empty runs after the first are legal COCO; validate() gives what encode() writes
    runs = [0, 2, 0, 1, 3, 0, 0, 2]  # 1 1 1 0 0 0 1 1
    d = {"size": [2, 4], "counts": runs}
    mask = mask_utils.decode(mask_utils.frPyObjects(d, 2, 4)).astype(bool)
    np.testing.assert_array_equal(rle.decode(d), mask)
    assert rle.validate(d) == rle.encode(mask)
    assert rle.validate({"size": [2, 4], "counts": leb(runs)}) == rle.encode(mask)
    assert rle.to_bbox(d) == [0.0, 0.0, 4.0, 2.0]


FUZZ_CHILD = """
import json, random
import numpy as np
from pycocotools import mask as mask_utils
from anyseg.errors import InputError
from anyseg.masks import rle

rng = np.random.default_rng(13)
pick = random.Random(13)
stats = {"tried": 0, "accepted": 0, "refused": 0, "mismatch": [], "other": [], "multiline": 0}


def mutate_string(s):
    s = bytearray(s)
    for _ in range(pick.randint(1, 3)):
        op = pick.randrange(7)
        i = pick.randrange(len(s) + 1)
        if op == 0 and s:
            s[min(i, len(s) - 1)] = pick.randrange(48, 112)
        elif op == 1:
            s.insert(i, pick.randrange(48, 112))
        elif op == 2 and s:
            del s[min(i, len(s) - 1)]
        elif op == 3:
            s[i:i] = s[i:i + pick.randint(1, 8)]
        elif op == 4:
            s = s[:i]
        elif op == 5:
            s.insert(i, pick.randrange(256))
        else:
            s[i:i] = bytes([pick.randrange(80, 112)] * pick.randint(1, 9))  # continuation characters
    return bytes(s)


def mutate_list(c):
    c = list(c)
    op = pick.randrange(5)
    i = pick.randrange(len(c))
    if op == 0:
        c[i] += pick.choice([-2, -1, 1, 2])
    elif op == 1:
        c[i] = -c[i]
    elif op == 2:
        c.insert(i, 0)
    elif op == 3:
        c[i] = pick.choice([float(c[i]), True, None, 2**64])
    else:
        c[i], c[-1] = c[-1], c[i]
    return c


def truth(d, h, w):
    if isinstance(d["counts"], list):
        d = mask_utils.frPyObjects(d, h, w)
    return mask_utils.decode(d).astype(bool)


for n in range(CASES):
    h, w = int(rng.integers(1, 33)), int(rng.integers(1, 33))
    m = rng.random((h, w)) < rng.random()
    ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    if n % 4 == 3:
        d = {"size": [h, w], "counts": mutate_list(rle.to_uncompressed(m)["counts"])}
    else:
        d = {"size": [h, w], "counts": mutate_string(ref["counts"])}
    if n % 10 == 9:
        d["size"] = pick.choice([[w, h], [h + 1, w], [h, w - 1], [h * w, 1]])
    stats["tried"] += 1
    try:
        got = rle.decode(d)
        canonical = rle.validate(d)
        area, box = rle.area(d), rle.to_bbox(d)
    except InputError as e:
        stats["refused"] += 1
        stats["multiline"] += "\\n" in str(e)
        continue
    except Exception as e:
        stats["other"].append(f"{type(e).__name__}: {e}")
        continue
    stats["accepted"] += 1
    hh, ww = d["size"]
    want = truth(d, hh, ww)
    ok = got.shape == want.shape and (got == want).all() and area == int(want.sum())
    ok = ok and canonical == rle.encode(want)
    coco = {"size": [hh, ww], "counts": canonical["counts"].encode()}
    ok = ok and box == [float(v) for v in mask_utils.toBbox(coco)]
    if not ok:
        stats["mismatch"].append(repr(d)[:200])
print(json.dumps(stats))
"""


def test_fuzz_mutated_rles_give_an_input_error_or_the_right_mask():
    cases = 600
    proc = run_child(f"CASES = {cases}\n" + FUZZ_CHILD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads(proc.stdout.splitlines()[-1])
    assert stats["tried"] == cases and stats["other"] == [] and stats["mismatch"] == [] and stats["multiline"] == 0
    assert stats["accepted"] + stats["refused"] == cases
    assert stats["accepted"] > 50 and stats["refused"] > 300  # both branches are exercised


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
