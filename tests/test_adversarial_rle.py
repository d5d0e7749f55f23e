"""Hostile RLEs (issue 13, class 1): sizes, compressed and uncompressed counts, fuzzing.

Every case must end in a one-line :class:`InputError` (or a correct mask), never a native
crash, an unbounded allocation or a hang. Cases that would reach pycocotools' decoder if the
validation regressed run in a child process with an address-space limit
(:func:`_hostile_masks.run_child`). Polygons, COCO files and mask PNGs:
test_adversarial_masks.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from anyseg.errors import InputError
from anyseg.masks import rle

from _hostile_masks import CRASH_RLE, one_line_error, run_child


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
