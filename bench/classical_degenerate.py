#!/usr/bin/env python
"""Time the ``classical`` engine's box prompt on degenerate images, with and without its guard.

GrabCut's max-flow takes super-linear time on large one-colour regions that both colour models
describe alike (see :mod:`anyseg.models.classical`); the engine dithers such colours
(:func:`~anyseg.models.classical.dither_degenerate`) and keeps such images at the default
working size at most. This script runs each case (image x size) in a child process, once as
shipped ("after") and, with ``--before``, once with the guard switched off ("before": no
dither, no smaller working size), and prints seconds per call (embed + predict, 3
candidates, 5 iterations, ``max_side=None``: full resolution unless the guard says
otherwise), nanoseconds per image pixel and the working size. A child that runs past
``--timeout`` is stopped and reported as ``>T``.

    python bench/classical_degenerate.py [--before] [--sizes 320x240,640x480] [--cases uniform250,...]
                                         [--timeout 120] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np

SIZES = ("320x240", "640x480", "1280x960")


def _checker(h: int, w: int, cell: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // cell + xx // cell) % 2 == 0)[..., None], 255, 0).astype(np.uint8).repeat(3, -1)


def case(name: str, w: int, h: int) -> tuple[np.ndarray, list[float]]:
    """``(image, box)`` of a named case at ``w x h``."""
    mid = [w / 4, h / 4, 3 * w / 4, 3 * h / 4]
    if name.startswith("uniform"):
        return np.full((h, w, 3), int(name[len("uniform"):]), np.uint8), mid
    if name == "two-colour":
        img = np.full((h, w, 3), 250, np.uint8)
        img[:, w // 2:] = 10
        return img, mid
    if name == "checker8":
        return _checker(h, w, 8), mid
    if name == "checker1":
        return _checker(h, w, 1), mid
    if name == "whole-box":
        return np.full((h, w, 3), 250, np.uint8), [0, 0, w, h]
    if name == "thin-box":
        return np.full((h, w, 3), 250, np.uint8), [w / 2, h / 8, w / 2 + 1, 7 * h / 8]
    if name == "natural":  # a textured disc on a noisy textured background: the usual cost
        rng = np.random.default_rng(0)
        import cv2

        blobs = cv2.resize(rng.normal(0, 1, (h // 8, w // 8, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
        img = 90 + 25 * blobs + rng.normal(0, 8, (h, w, 3))
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, (w // 2, h // 2), min(h, w) // 4, 1, -1)
        img[disc.astype(bool)] = np.array([220, 60, 50]) + rng.normal(0, 10, (int(disc.sum()), 3))
        return np.clip(img, 0, 255).astype(np.uint8), [w / 4 - 4, h / 4 - 4, 3 * w / 4 + 4, 3 * h / 4 + 4]
    raise SystemExit(f"classical_degenerate: error: unknown case {name!r}")


CASES = ("uniform250", "uniform255", "uniform0", "two-colour", "checker8", "checker1", "whole-box", "thin-box", "natural")


def one(name: str, size: str, guard: bool) -> dict:
    """Run one case in this process; the record printed by the child."""
    import anyseg.models.classical as classical
    from anyseg.types import Prompt

    if not guard:  # no pixel is degenerate: no dither, no smaller working size
        classical.degenerate_pixels = lambda image, count=0: np.zeros(image.shape[:2], bool)
    w, h = (int(v) for v in size.split("x"))
    image, box = case(name, w, h)
    predictor = classical.ClassicalPredictor(max_side=None)
    t = time.perf_counter()
    emb = predictor.embed(image)
    res = predictor.predict(emb, Prompt(box=box), multimask=True)
    seconds = time.perf_counter() - t
    return {"case": name, "size": size, "guard": guard, "seconds": round(seconds, 3),
            "ns_per_pixel": round(1e9 * seconds / (w * h), 1), "score": round(float(res.scores[0]), 3),
            "area": int(res.masks[0].sum()), "dithered": [int(v) for v in emb.features["dithered"]],
            "work": "x".join(str(v) for v in emb.input_size[::-1])}


def run_child(name: str, size: str, guard: bool, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--one", name, size, "on" if guard else "off"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": name, "size": size, "guard": guard, "seconds": None, "timeout": timeout}
    if out.returncode != 0:
        return {"case": name, "size": size, "guard": guard, "seconds": None, "error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(rec: dict | None) -> str:
    if rec is None:
        return "-"
    if rec.get("seconds") is None:
        return f">{rec['timeout']:.0f}" if "timeout" in rec else "error"
    return f"{rec['seconds']:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", action="store_true", help="also time each case with the guard switched off")
    ap.add_argument("--sizes", default=",".join(SIZES[:2]), help=f"WxH list (default {','.join(SIZES[:2])})")
    ap.add_argument("--cases", default=",".join(CASES), help=f"case list (default all: {','.join(CASES)})")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per child before it is stopped (default 120)")
    ap.add_argument("--json", metavar="OUT", help="also write the records as JSON")
    ap.add_argument("--one", nargs=3, metavar=("CASE", "SIZE", "GUARD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.one[2] == "on")))
        return 0
    records = []
    print(f"{'case':<12} {'size':>9} {'before s':>9} {'after s':>8} {'after ns/px':>11} {'score':>6} {'work':>8} "
          f"{'dithered px':>16}")
    for size in args.sizes.split(","):
        for name in args.cases.split(","):
            before = run_child(name, size, False, args.timeout) if args.before else None
            after = run_child(name, size, True, args.timeout)
            records += [r for r in (before, after) if r is not None]
            print(f"{name:<12} {size:>9} {_fmt(before):>9} {_fmt(after):>8} {after.get('ns_per_pixel', '-'):>11} "
                  f"{after.get('score', '-'):>6} {after.get('work', '-'):>8} {str(after.get('dithered', '-')):>16}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                       "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
