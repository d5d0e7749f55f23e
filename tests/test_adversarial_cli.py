"""Issue 13, class 4 (unbounded work) and class 7's CLI/export parts.

* Degenerate GrabCut inputs (one-colour regions that both colour models describe alike) take
  the guarded path (:func:`anyseg.models.classical.dither_degenerate`), so every cut sees
  noisy colours; they run in a child process whose timeout is a safety net, never measured.
* ``cancel.check()`` is reached between GrabCut cuts, segment-everything crops and batches,
  classical stages, video frames and text steps.
* The options that scale the work are bounded with one-line errors that name the bound,
  before any output is written; ``--device`` is checked up front.
* Export names: labels are one line (YOLO class indices cannot shift), COCO ``file_name`` is a
  base name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from anyseg import cancel
from anyseg.cli import main
from anyseg.errors import InputError
from anyseg.io.export import coco_file_name, to_coco, yolo_classes
from anyseg.models.classical import (
    DEGENERATE_PIXELS, DEGENERATE_WORK_PIXELS, MAX_ITERATIONS, MAX_WORK_PIXELS, ClassicalPredictor, degenerate_pixels, dither_degenerate,
)
from anyseg.types import Masks, Prompt

from _bounds import bound_error

CHILD_MEMORY = 4 << 30  # bytes of address space for the child
CHILD_TIMEOUT = 300  # seconds; a safety net against a hang on a shared 2-core machine, never measured


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


#: Runs every degenerate case with cv2.grabCut wrapped to record each cut's input; one JSON line.
GRABCUT_CHILD = """
    import json
    import cv2
    import numpy as np
    from anyseg.models.classical import ClassicalPredictor
    from anyseg.types import Prompt

    calls = []
    real = cv2.grabCut
    def recording(img, mask, rect, bgd, fgd, iters, mode):
        undecided = ((mask == cv2.GC_PR_FGD) | (mask == cv2.GC_PR_BGD)).astype(np.uint8)
        depth = float(cv2.distanceTransform(undecided, cv2.DIST_L2, 3).max()) if 0 < undecided.sum() < undecided.size \
            else float(max(mask.shape))  # how far an undecided pixel can be from a fixed one
        calls.append({"shape": list(img.shape[:2]), "colours": int(len(np.unique(img.reshape(-1, 3), axis=0))),
                      "iters": int(iters), "depth": depth})
        return real(img, mask, rect, bgd, fgd, iters, mode)
    cv2.grabCut = recording

    def image(name):
        if name == "two-colour":
            img = np.full((480, 640, 3), 250, np.uint8)
            img[:, 320:] = 10
            return img
        if name == "checker":
            yy, xx = np.mgrid[0:480, 0:640]
            return np.where(((yy // 8 + xx // 8) % 2 == 0)[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
        if name == "lottery":  # 360x270 uniform: this box took 4.9 s per cut without the guard
            return np.full((270, 360, 3), 250, np.uint8)
        return np.full((480, 640, 3), int(name.split(":")[1]), np.uint8)

    CASES = {
        "uniform:250": [160, 120, 480, 360], "uniform:255": [160, 120, 480, 360], "uniform:0": [160, 120, 480, 360],
        "two-colour": [160, 120, 480, 360], "checker": [160, 120, 480, 360], "lottery": [92, 69.5, 266, 200.5],
        "whole-box:250": [0, 0, 640, 480], "thin-box:250": [320, 60, 321, 420],
    }
    predictor = ClassicalPredictor()
    out = []
    for name, box in CASES.items():
        img = image(name)
        calls.clear()
        emb = predictor.embed(img)
        res = predictor.predict(emb, Prompt(box=box), multimask=True)
        again = predictor.predict(predictor.embed(img), Prompt(box=box), multimask=True)
        x0, y0, x1, y1 = int(box[0]), int(box[1]), int(np.ceil(box[2])), int(np.ceil(box[3]))
        inside = np.zeros(img.shape[:2], bool)
        inside[y0:y1, x0:x1] = True
        work = [c for c in calls if c["shape"] == list(emb.input_size)]  # the candidates' cuts
        band = [c for c in calls if c["shape"] != list(emb.input_size)]  # the boundary refinement's
        out.append({"case": name, "dithered": list(emb.features["dithered"]), "calls": len(calls) // 2,
                    "min_colours": min(c["colours"] for c in work) if work else None,
                    "max_iters": max(c["iters"] for c in calls) if calls else 0,
                    "band_depth": max(c["depth"] for c in band) if band else 0.0,
                    "scores": [float(s) for s in res.scores], "area": int(res.masks[0].sum()),
                    "outside_box": int((res.masks[0] & ~inside).sum()), "box_area": int(inside.sum()),
                    "deterministic": bool(np.array_equal(res.masks, again.masks)
                                          and np.array_equal(res.scores, again.scores))})
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def grabcut_cases() -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(GRABCUT_CHILD)], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {r["case"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}


# -- class 4: GrabCut on degenerate colours ------------------------------------------------------------
def test_degenerate_images_take_the_guarded_path(grabcut_cases):
    assert len(grabcut_cases) == 8
    for name, r in grabcut_cases.items():
        assert r["dithered"][0] > 0 and r["dithered"][1] > 0, name  # both GrabCut inputs were guarded
        if r["min_colours"] is not None:  # no candidate's cut ever saw a one-colour image
            assert r["min_colours"] > 1, name
        # the refinement's cut (undithered, full size) leaves only a thin band undecided: short max-flow paths
        assert r["band_depth"] <= 2 * 3 * 640 / 360 + 2, name
        assert r["calls"] <= 3 * (ClassicalPredictor().iterations + 2) + 3, name  # 3 candidates + refinement
        assert r["max_iters"] == 1, name  # one cut per call, with cancel.check() between them
        assert r["deterministic"], name


def test_degenerate_images_give_an_honest_answer(grabcut_cases):
    for name in ("uniform:250", "uniform:255", "uniform:0", "lottery", "two-colour", "whole-box:250"):
        r = grabcut_cases[name]  # nothing to separate: the prompt's own region, with a low score
        assert max(r["scores"]) < 0.05, (name, r["scores"])
        assert r["area"] >= 0.9 * r["box_area"] and r["outside_box"] <= 0.02 * r["box_area"], (name, r)
    for name in ("checker", "thin-box:250"):
        r = grabcut_cases[name]
        assert 0 < r["area"] and r["outside_box"] <= 0.02 * r["box_area"], (name, r)
        assert all(0.0 <= s <= 1.0 for s in r["scores"]), name


def test_degenerate_pixels_finds_large_single_colour_areas_only():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    assert not degenerate_pixels(noisy).any()
    assert dither_degenerate(noisy)[0] is noisy  # a natural-looking image is left as it is
    flat = noisy.copy()
    flat[:50] = (250, 250, 250)  # half the image, one colour: 5000 pixels
    where = degenerate_pixels(flat)
    assert where[:50].all() and not where[50:].any()
    out, n = dither_degenerate(flat)
    assert n == 50 * 100 and np.array_equal(out[50:], flat[50:])
    assert np.abs(out[:50].astype(int) - 250).max() == 1 and len(np.unique(out[:50].reshape(-1, 3), axis=0)) > 1
    assert np.array_equal(out, dither_degenerate(flat)[0])  # deterministic
    black = np.zeros((100, 100, 3), np.uint8)  # clipped at 0: the dither goes up only
    assert dither_degenerate(black)[0].min() == 0 and dither_degenerate(black)[0].max() == 1
    few = noisy.copy()
    few.reshape(-1, 3)[:DEGENERATE_PIXELS - 1] = (7, 7, 7)  # just under the count: left alone
    assert not degenerate_pixels(few).any()
    few.reshape(-1, 3)[:DEGENERATE_PIXELS] = (7, 7, 7)
    assert degenerate_pixels(few).sum() == DEGENERATE_PIXELS
    with pytest.raises(InputError, match="uint8"):
        degenerate_pixels(np.zeros((4, 4), np.float32))


def test_iterations_and_working_pixels_are_bounded():
    with pytest.raises(InputError, match=f"1..{MAX_ITERATIONS}"):
        ClassicalPredictor(iterations=MAX_ITERATIONS + 1)
    with pytest.raises(InputError, match="max_side"):
        ClassicalPredictor(max_side=4)
    full = ClassicalPredictor(max_side=None)
    noise = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    emb = full.embed(noise)
    h, w = emb.input_size
    assert MAX_WORK_PIXELS * 0.99 <= h * w <= MAX_WORK_PIXELS and h == w and emb.original_size == (1500, 1500)
    assert full.embed(noise[:960, :1280]).input_size == (960, 1280)  # below the cap: full resolution
    flat = noise[:960, :1280].copy()
    flat[:, :300] = 250  # a one-colour area: the graph is kept at the default working size
    h, w = full.embed(flat).input_size
    assert h * w <= DEGENERATE_WORK_PIXELS and abs(w / h - 1280 / 960) < 0.01


class _CountingToken(cancel.CancelToken):
    """Cancelled at its ``after + 1``-th check; counts the checks."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.checks = after, 0

    def check(self) -> None:
        self.checks += 1
        if self.checks > self.after:
            self.cancel("test")
        super().check()


def _disc_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.normal(90, 12, (120, 160, 3))
    yy, xx = np.mgrid[0:120, 0:160]
    img[(yy - 60) ** 2 + (xx - 80) ** 2 < 35 ** 2] = (220, 60, 50)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_cancel_check_is_reached_between_grabcut_cuts():
    predictor = ClassicalPredictor()
    emb = predictor.embed(_disc_image())
    token = cancel.CancelToken()
    token.cancel()
    with cancel.scope(token), pytest.raises(cancel.Cancelled):
        predictor.predict(emb, Prompt(box=[40, 20, 120, 100]))
    for after in (1, 2, 4):  # a job cancelled after k checks stops at the next one
        counting = _CountingToken(after)
        with cancel.scope(counting), pytest.raises(cancel.Cancelled):
            predictor.predict(emb, Prompt(box=[40, 20, 120, 100]))
        assert counting.checks == after + 1
    untouched = predictor.predict(emb, Prompt(box=[40, 20, 120, 100]))  # outside a scope: no effect
    assert untouched.masks[0].any()


def test_cancel_check_in_segment_everything():
    from anyseg.tasks.everything import EverythingParams, generate

    calls = {"embed": 0, "decode": 0}

    class Stub:
        family, name, device = "sam", "stub", "cpu"

        def embed(self, crop):
            calls["embed"] += 1
            return object()

        def geometry(self, size):
            return SimpleNamespace(original_size=size)

        def decode_points(self, *a, **k):
            calls["decode"] += 1
            raise AssertionError("decoded after the job was cancelled")

    token = _CountingToken(1)  # the crop's check passes, the first batch's check stops the job
    with cancel.scope(token), pytest.raises(cancel.Cancelled):
        generate(Stub(), np.zeros((32, 32, 3), np.uint8), EverythingParams(points_per_side=4))
    assert calls == {"embed": 1, "decode": 0} and token.checks == 2
    from anyseg.tasks.everything_classical import generate_classical

    for after in (0, 2):
        token = _CountingToken(after)
        with cancel.scope(token), pytest.raises(cancel.Cancelled):
            generate_classical(_disc_image())
        assert token.checks == after + 1


def test_cancel_check_per_video_frame():
    from anyseg.video.base import ObjectPrompt
    from anyseg.video.classical import ClassicalTracker

    frames = np.stack([np.roll(_disc_image(), 2 * t, axis=1) for t in range(6)])
    tracker = ClassicalTracker()
    state = tracker.start(frames)
    mask = np.zeros(frames.shape[1:3], bool)
    mask[30:90, 50:110] = True
    tracker.add_prompt(state, ObjectPrompt(frame=0, obj_id=1, mask=mask))
    token = _CountingToken(3)
    seen = []
    with cancel.scope(token), pytest.raises(cancel.Cancelled):
        for t, _ in tracker.propagate(state, 0, 5):
            seen.append(t)
    assert len(seen) < 6 and token.checks == 4


def test_cancel_check_in_text_tasks():
    from anyseg.tasks.text import find_instances

    class Backend:
        name = "stub"

        def instances(self, *a):
            raise AssertionError("ran after the job was cancelled")

    token = cancel.CancelToken()
    token.cancel()
    with cancel.scope(token), pytest.raises(cancel.Cancelled):
        find_instances(_disc_image(), "cat", Backend())


# -- class 4: CLI bounds --------------------------------------------------------------------------------
@pytest.fixture()
def image_path(tmp_path):
    path = tmp_path / "disc.png"
    Image.fromarray(_disc_image()).save(path)
    return path


def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("anyseg: error: "), (code, err)
    return lines[0]


@pytest.mark.parametrize("args, bound", [
    (["--points-per-side", "10000"], bound_error("--points-per-side", 10000)),
    (["--crop-layers", "50"], bound_error("--crop-layers", 50)),
    (["--points-per-batch", "100000"], bound_error("--points-per-batch", 100000)),
    (["--min-area", "10000000"], "--min-area must be at most the image's 160x120 = 19200 pixels; got 10000000"),
    (["--max-pixels", "0"], "--max-pixels must be positive"),
])
def test_everything_bounds_before_any_output(capsys, image_path, tmp_path, args, bound):
    out = tmp_path / "out"
    assert bound in one_line_error(capsys, "everything", image_path, "--model", "classical", *args, "--out", out)
    assert not out.exists()


@pytest.mark.parametrize("argv, bound", [
    (["interactive", "--max-clicks", "100000"], "--max-clicks must be in 1..100; got 100000"),
    (["interactive", "--max-clicks", "0"], "--max-clicks must be in 1..100"),
    (["box", "--limit", "0"], "--limit must be in 1..1000000; got 0"),
    (["box", "--limit", "10000000000"], "--limit must be in 1..1000000"),
    (["box", "--ignore-value", "300"], "--ignore-value must be auto, none or a mask value in 0..255"),
    (["semantic", "--classes", "sky,ro\x1bad", "--void-id", "255"], "control character"),
    (["semantic", "--classes", "sky,road", "--void-id", "256"], "--void-id must be a label value in 0..255"),
])
def test_eval_bounds(capsys, tmp_path, argv, bound):
    kind, *rest = argv
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    msg = one_line_error(capsys, "eval", kind, "--data", data, "--model", "classical", *rest, "--out", tmp_path / "r")
    assert bound in msg
    assert not (tmp_path / "r").exists()


def test_text_top_bound(capsys, image_path, tmp_path):
    for top, bound in (("0", "top must be at least 1"), ("1000000", "--top must be at most 10000; got 1000000")):
        assert bound in one_line_error(capsys, "text", image_path, "cat", "--top", top, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()


# -- class 7: --device ------------------------------------------------------------------------------
def _unavailable_cuda() -> tuple[str, str]:
    """A CUDA device name this machine cannot use, and the words its error must contain."""
    import torch

    if torch.version.cuda is None:
        return "cuda", f"--device cuda: this torch build has no CUDA (torch {torch.__version__}); use --device cpu"
    if not torch.cuda.is_available():
        return "cuda", "no CUDA device is visible"
    n = torch.cuda.device_count()
    return f"cuda:{n}", f"cuda:0..cuda:{n - 1}"


@pytest.mark.parametrize("command", ["segment", "everything", "text", "semantic", "panoptic", "eval"])
def test_device_is_checked_by_every_command(capsys, image_path, tmp_path, command):
    extra = {"segment": [image_path, "--box", "10,10,50,50"], "everything": [image_path], "text": [image_path, "cat"],
             "semantic": [image_path, "--classes", "cat"], "panoptic": [image_path, "--things", "cat"],
             "eval": ["box", "--data", tmp_path, "--model", "classical"]}[command]
    out = tmp_path / "o"
    cuda, words = _unavailable_cuda()
    for device, expected in ((cuda, words), ("banana", "--device 'banana': unknown device; expected cpu, cuda")):
        msg = one_line_error(capsys, *([command] if command != "eval" else ["eval"]), *extra, "--device", device,
                             "--out", out)
        assert expected in msg
    assert not out.exists()


def test_load_model_checks_the_device(monkeypatch):
    from anyseg.models import load_model
    from anyseg.models.sam import check_device, default_device

    with pytest.raises(InputError, match="unknown device"):
        load_model("classical", device="gpu0")
    assert check_device("cpu") == "cpu" and check_device(" cpu ") == "cpu"
    assert load_model("classical", device="cpu").name == "classical"
    monkeypatch.setenv("ANYSEG_DEVICE", "tpu")
    with pytest.raises(InputError, match="ANYSEG_DEVICE 'tpu': unknown device"):
        default_device()
    with pytest.raises(InputError, match="ANYSEG_DEVICE"):
        check_device(None)


# -- class 7: export names -----------------------------------------------------------------------------
def _masks(labels=None) -> Masks:
    m = np.zeros((2, 20, 30), bool)
    m[0, 2:8, 3:9] = True
    m[1, 10:18, 12:25] = True
    return Masks(m, scores=np.array([0.9, 0.8], np.float32), labels=labels)


def test_yolo_class_names_are_one_line():
    assert yolo_classes(["cat", "dog"]) == "cat\ndog\n"
    assert yolo_classes([" cat ", "dog\r\n"]) == "cat\ndog\n"  # surrounding white space is not part of a name
    for bad in (["cat\ndog", "bird"], ["cat", "d\rog"], ["a\x00b"], ["cat", "cat"], ["", "dog"], ["a\u202eb"], "cat"):
        with pytest.raises(InputError) as err:
            yolo_classes(bad)
        assert "\n" not in str(err.value)


def test_coco_category_names_are_one_line():
    with pytest.raises(InputError, match="control character"):
        to_coco(_masks(), 1, "a.png", categories=[{"id": 1, "name": "cat\ndog"}])
    with pytest.raises(InputError, match="control character"):
        to_coco(_masks(np.array(["ca\nt", "dog"], dtype=object)), 1, "a.png")
    coco = to_coco(_masks(np.array(["cat", "dog"], dtype=object)), 1, "a.png")
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]


@pytest.mark.parametrize("given, written", [
    ("../../../../etc/passwd", "passwd"), ("..\\..\\windows\\evil.jpg", "evil.jpg"), ("C:evil.png", "evil.png"),
    ("/abs/path/photo.jpg", "photo.jpg"), ("photo.jpg", "photo.jpg"),
])
def test_coco_file_name_is_the_base_name(given, written):
    assert to_coco(_masks(), 1, given)["images"][0]["file_name"] == written
    assert coco_file_name(given) == written


@pytest.mark.parametrize("bad", ["", "..", "a/..", ".", "x\ny.png", 7])
def test_coco_file_name_without_a_file_is_refused(bad):
    with pytest.raises(InputError) as err:
        to_coco(_masks(), 1, bad)
    assert "\n" not in str(err.value)
