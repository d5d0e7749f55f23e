"""COCO RLE: round trips and byte-for-byte agreement with pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from anyseg.errors import InputError
from anyseg.masks import rle
from anyseg.types import Masks


def _edge_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = [
        np.zeros((7, 5), bool),
        np.ones((7, 5), bool),
        np.zeros((1, 1), bool),
        np.ones((1, 1), bool),
        np.ones((1, 9), bool),
        np.eye(1, 9, 4, dtype=bool),
        np.eye(9, 1, 8, dtype=bool),
    ]
    single = np.zeros((6, 11), bool)
    single[0, 0] = True
    out.append(single)
    last = np.zeros((6, 11), bool)
    last[-1, -1] = True
    out.append(last)
    for h, w in [(13, 29), (40, 17), (64, 64), (3, 200)]:
        out.append(rng.random((h, w)) > 0.5)  # many short runs
        out.append(rng.random((h, w)) > 0.97)  # long runs (multi-char counts)
    return out


CASES = _edge_cases()


def _ref(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


@pytest.mark.parametrize("mask", CASES, ids=[f"{m.shape[0]}x{m.shape[1]}#{i}" for i, m in enumerate(CASES)])
def test_encode_matches_pycocotools_and_round_trips(mask):
    got = rle.encode(mask)
    ref = _ref(mask)
    assert got["size"] == [mask.shape[0], mask.shape[1]]
    assert isinstance(got["counts"], str)
    assert got["counts"].encode() == ref["counts"]
    json.dumps(got)  # JSON-serialisable
    np.testing.assert_array_equal(rle.decode(got), mask)
    bytes_rle = {"size": got["size"], "counts": ref["counts"]}
    np.testing.assert_array_equal(rle.decode(bytes_rle), mask)
    assert rle.area(got) == int(mask.sum())
    assert rle.to_bbox(got) == [float(v) for v in mask_utils.toBbox(ref)]


@pytest.mark.parametrize("mask", CASES, ids=[f"{m.shape[0]}x{m.shape[1]}#{i}" for i, m in enumerate(CASES)])
def test_uncompressed_counts_equal_pycocotools(mask):
    unc = rle.to_uncompressed(mask)
    assert all(isinstance(c, int) for c in unc["counts"])
    assert sum(unc["counts"]) == mask.size
    # pycocotools compresses the same run lengths into the same string
    again = mask_utils.frPyObjects(unc, *mask.shape)
    assert again["counts"] == _ref(mask)["counts"]
    np.testing.assert_array_equal(rle.decode(unc), mask)
    json.dumps(unc)


def test_uncompressed_known_values():
    m = np.array([[0, 1], [1, 1]], bool)  # column-major: 0, 1, 1, 1
    assert rle.to_uncompressed(m)["counts"] == [1, 3]
    assert rle.to_uncompressed(np.ones((2, 2), bool))["counts"] == [0, 4]
    assert rle.to_uncompressed(np.zeros((2, 3), bool))["counts"] == [6]


def test_encode_many_and_decode_many():
    rng = np.random.default_rng(1)
    stack = rng.random((4, 9, 14)) > 0.6
    rles = rle.encode_many(stack)
    assert [r["counts"] for r in rles] == [rle.encode(m)["counts"] for m in stack]
    assert rle.encode_many(Masks(stack)) == rles
    np.testing.assert_array_equal(rle.decode_many(rles), stack)
    assert rle.encode_many(np.zeros((0, 3, 3), bool)) == []
    assert rle.decode_many([]).shape == (0, 0, 0)


def test_non_bool_masks_are_thresholded_at_nonzero():
    m = np.array([[0, 2], [0, 255]], np.uint8)
    np.testing.assert_array_equal(rle.decode(rle.encode(m)), m > 0)


def test_validation_errors():
    with pytest.raises(InputError, match="2-D"):
        rle.encode(np.zeros((2, 3, 4), bool))
    with pytest.raises(InputError, match="2-D"):
        rle.to_uncompressed(np.zeros(5, bool))
    with pytest.raises(InputError, match="N, H, W"):
        rle.encode_many(np.zeros((3, 3), bool))
    with pytest.raises(InputError, match="size"):
        rle.decode({"counts": "01"})
    with pytest.raises(InputError, match="counts"):
        rle.decode({"size": [2, 2]})
    with pytest.raises(InputError):
        rle.decode("not an rle")
    with pytest.raises(InputError, match="sum"):
        rle.decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(InputError, match="7 runs, more than the 5"):  # would overflow pycocotools' C decoder
        rle.decode({"size": [2, 2], "counts": "0000000"})
    with pytest.raises(InputError, match="ASCII"):
        rle.decode({"size": [1, 1], "counts": "é"})
    with pytest.raises(InputError, match="integers"):
        rle.decode({"size": [1, 1], "counts": [0.5, 0.5]})
    with pytest.raises(InputError, match="one size"):
        rle.decode_many([rle.encode(np.zeros((2, 2), bool)), rle.encode(np.zeros((3, 2), bool))])
