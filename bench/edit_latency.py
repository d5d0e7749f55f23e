#!/usr/bin/env python
"""Editing: seconds per image of each engine, anyseg's working crop against the engine run on the whole image.

On one DAVIS 2016 frame (``dog/00000``, its object mask, or a synthetic scene when the data is
absent) scaled to ``--side`` pixels on its longest side (default 1920: a photo-sized input),
each classical engine removes the object twice, side by side:

* ``crop`` (anyseg): :func:`anyseg.edit.base.run_inpaint`: the dilated mask's box plus context,
  scaled to the engine's working size when larger, pasted back with a feathered seam;
* ``whole`` (the obvious approach): the engine on the whole image at full resolution with the
  same dilated mask (``working_size`` lifted, the crop the whole image).

It also times a cut-out (matting and feather), the classical style transfer and, with
``--sd``, Stable Diffusion inpainting on a real-size random SD 1.x inpainting pipeline
(9-channel UNet, VAE, CLIP text encoder; ``--steps`` steps at 512 x 512, CPU).

    python bench/edit_latency.py [--side 1920] [--repeat 3] [--sd] [--steps 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
DAVIS = REPO.parent / "shared" / "data" / "davis2016"
ENGINES = ("telea", "ns", "biharmonic", "mean")


def scene(side: int) -> tuple[np.ndarray, np.ndarray, str]:
    import cv2
    from PIL import Image

    img_path = DAVIS / "JPEGImages" / "480p" / "dog" / "00000.jpg"
    if img_path.is_file():
        image = np.asarray(Image.open(img_path).convert("RGB"))
        mask = np.asarray(Image.open(DAVIS / "Annotations" / "480p" / "dog" / "00000.png").convert("L")) > 0
        where = "DAVIS 2016 dog/00000"
    else:
        rng = np.random.default_rng(0)
        image = cv2.GaussianBlur(rng.integers(0, 256, (480, 854, 3), dtype=np.uint8), (0, 0), 3)
        mask = np.zeros((480, 854), bool)
        mask[150:330, 300:520] = True
        image[mask] = (200, 40, 40)
        where = "synthetic 854x480"
    h, w = mask.shape
    scale = side / max(h, w)
    size = (round(w * scale), round(h * scale))
    return (cv2.resize(image, size, interpolation=cv2.INTER_CUBIC),
            cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0, where)


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return round(statistics.median(out), 3)


def engines(image, mask, repeat: int) -> list[dict]:
    from anyseg.edit.base import engine_factory, run_inpaint

    rows = []
    for name in ENGINES:
        crop = engine_factory(name)()
        whole = engine_factory(name)(working_size=8192)
        a = timed(lambda: run_inpaint(crop, image, mask, "remove"), repeat)
        b = timed(lambda: run_inpaint(whole, image, mask, "remove", full=True), max(1, repeat // 2))
        rows.append({"engine": name, "crop_s": a, "whole_image_s": b, "speedup": round(b / max(a, 1e-9), 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def others(image, mask, repeat: int) -> list[dict]:
    import anyseg.edit as edit

    style_image = np.ascontiguousarray(image[::-1, ::-1])
    rows = [
        {"operation": "cutout matting", "s": timed(lambda: edit.cutout(image, mask), repeat)},
        {"operation": "cutout feather 8", "s": timed(lambda: edit.cutout(image, mask, method="feather", feather=8),
                                                     repeat)},
        {"operation": "style classical", "s": timed(lambda: edit.style(image, mask, style_image), repeat)},
    ]
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def build_sd_inpaint(folder: Path) -> Path:
    from discover_memory import save_real_size_sd
    from tiny_inpaint import tiny_inpaint_folder

    tiny_inpaint_folder(folder)  # index, scheduler, tokenizer; the models replaced at real size
    save_real_size_sd(folder, unet_in_channels=9)
    return folder


def sd(image, mask, steps: int) -> dict:
    from anyseg.edit.base import run_inpaint
    from anyseg.edit.sd import SdInpaintEngine

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_sd_inpaint(Path(tmp) / "sd-inpaint")
        engine = SdInpaintEngine.from_options(model=str(folder), steps=steps)
        t = time.perf_counter()
        run_inpaint(engine, image, mask, "fill", prompt="a lawn")
        row = {"engine": "sd (SD 1.x sizes, random weights)", "steps": steps, "s": round(time.perf_counter() - t, 2),
               "working_size": engine.working_size}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=1920)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sd", action="store_true", help="also time Stable Diffusion inpainting (real-size random)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    image, mask, where = scene(args.side)
    print(f"{where} at {image.shape[1]}x{image.shape[0]}, hole {mask.mean():.1%} of the image", file=sys.stderr)
    out = {"image": list(image.shape[:2]), "source": where, "engines": engines(image, mask, args.repeat),
           "others": others(image, mask, args.repeat)}
    if args.sd:
        out["sd"] = sd(image, mask, args.steps)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
