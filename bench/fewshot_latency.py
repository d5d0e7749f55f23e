#!/usr/bin/env python
"""Few-shot latency per target: the reference fitted once and kept vs recomputed for each target.

For each few-shot method, side by side in one run on the same frames:

* cached (anyseg): ``Segmenter.fit(references)`` once (the reference features are computed and
  kept), then ``predict`` per target;
* recompute (the obvious approach): ``fit`` + ``predict`` for every target, i.e. the reference
  features computed again per target, as a script that takes (reference, target) pairs does.

Models are the real-size architectures with random weights (speed does not depend on the weight
values, but where a method's work depends on what it finds - how many proposals Matcher keeps,
how many points PerSAM-F trains on - random weights can make it more or less than a trained
model's), built from transformers configs and loaded through the users' path (``--model FOLDER``):
SAM ViT-B (``SamConfig()`` defaults) for ``persam``, ``persam-f`` and ``matcher``, DINOv2-small
sizes (``Dinov2Config``: 384 wide, 12 layers, 6 heads, patch 14) for matcher's features, SegGPT
(``SegGptConfig()`` defaults, ViT-L) for ``seggpt``; ``classical`` needs none. A method whose module
is not there yet is skipped with a line saying so. Frames: frame 0 of a DAVIS 2016 sequence with
its mask is the reference, the next ``--targets`` frames the targets (a synthetic frame when
``../shared/data/davis2016`` is absent). One untimed fit + predict warms each method up first.

    python bench/fewshot_latency.py [--methods classical,persam,persam-f,matcher,seggpt] [--targets 5]
                                    [--sequence blackswan] [--device cpu] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DAVIS = REPO.parent / "shared" / "data" / "davis2016"
METHODS = ("classical", "persam", "persam-f", "matcher", "seggpt")
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


# -- random real-size models, saved as hub checkpoints ---------------------------------------------
def _save(model, folder: Path, preprocessor: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return str(folder)


def build_sam(folder: Path) -> str:
    import torch
    from transformers import SamConfig, SamModel

    torch.manual_seed(0)
    return _save(SamModel(SamConfig()).eval(), folder, {"image_mean": IMAGENET[0], "image_std": IMAGENET[1],
                                                        "size": {"longest_edge": 1024}})


def build_dinov2_small(folder: Path) -> str:
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                       image_size=518)
    return _save(Dinov2Model(cfg).eval(), folder, {"image_processor_type": "BitImageProcessor", "image_mean": IMAGENET[0],
                                                   "image_std": IMAGENET[1], "size": {"shortest_edge": 256},
                                                   "crop_size": {"height": 224, "width": 224}})


def build_seggpt(folder: Path) -> str:
    import torch
    from transformers import SegGptConfig, SegGptForImageSegmentation

    torch.manual_seed(0)
    return _save(SegGptForImageSegmentation(SegGptConfig()).eval(), folder,
                 {"image_processor_type": "SegGptImageProcessor", "image_mean": IMAGENET[0], "image_std": IMAGENET[1],
                  "size": {"height": 448, "width": 448}})


def method_module(name: str) -> str | None:
    """The module of ``name``'s factory when it exists, else ``None``."""
    from anyseg.fewshot.base import METHODS as REGISTRY

    target = REGISTRY.get(name)
    if not isinstance(target, str):
        return None
    module = target.partition(":")[0]
    return module if importlib.util.find_spec(module) is not None else None


def segmenter_options(name: str, tmp: Path, built: dict) -> dict:
    """``model`` / ``features`` of method ``name``: random real-size folders, each built once."""
    if name == "classical":
        return {}
    if name == "seggpt":
        if "seggpt" not in built:
            built["seggpt"] = build_seggpt(tmp / "seggpt-vit-large")
        return {"model": built["seggpt"]}
    if "sam" not in built:
        built["sam"] = build_sam(tmp / "sam-vit-base")
    if name != "matcher":
        return {"model": built["sam"]}
    if "dino" not in built:
        built["dino"] = build_dinov2_small(tmp / "dinov2-small")
    return {"model": built["sam"], "features": built["dino"]}


# -- frames ----------------------------------------------------------------------------------------
def frames(sequence: str, n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], str]:
    """``(reference image, its mask, n targets, where they come from)``."""
    from anyseg.eval.fewshot_data import read_fewshot

    if DAVIS.is_dir():
        shots = read_fewshot(DAVIS, "davis").classes.get(sequence)
        if shots is None:
            raise SystemExit(f"no DAVIS 2016 sequence {sequence!r} in {DAVIS}")
        if len(shots) <= n:
            raise SystemExit(f"{sequence} has {len(shots)} frames; --targets must be below that")
        return (shots[0].load_image(), shots[0].load_mask()[0], [s.load_image() for s in shots[1:n + 1]],
                f"DAVIS 2016 {sequence}, frames 0..{n}")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 854, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:480, :854]
    mask = (yy - 240) ** 2 + (xx - 400) ** 2 < 90**2
    image[mask] = (200, 40, 40)
    return image, mask, [np.roll(image, 8 * (i + 1), axis=1) for i in range(n)], "synthetic 854x480 (no DAVIS data)"


# -- timing ----------------------------------------------------------------------------------------
def time_method(name: str, options: dict, ref, targets: list[np.ndarray], device: str | None) -> dict:
    from anyseg.fewshot import Segmenter

    seg = Segmenter(method=name, device=device, quiet=True, **options)
    seg.fit([ref]).predict(targets[0])  # warm-up (untimed)
    t = time.perf_counter()
    seg.fit([ref])
    fit_s = time.perf_counter() - t
    cached = []
    for image in targets:
        t = time.perf_counter()
        seg.predict(image)
        cached.append(time.perf_counter() - t)
    recompute = []
    for image in targets:
        t = time.perf_counter()
        seg.fit([ref])
        seg.predict(image)
        recompute.append(time.perf_counter() - t)
    per_cached, per_recompute = statistics.median(cached), statistics.median(recompute)
    return {"method": name, "fit_s": round(fit_s, 4), "cached_per_target_s": round(per_cached, 4),
            "recompute_per_target_s": round(per_recompute, 4),
            "per_target_speedup": round(per_recompute / max(per_cached, 1e-9), 2),
            "session_s": {"cached": round(fit_s + sum(cached), 3), "recompute": round(sum(recompute), 3)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})")
    ap.add_argument("--targets", type=int, default=5, help="targets per method (default 5)")
    ap.add_argument("--sequence", default="blackswan", help="DAVIS 2016 sequence (default blackswan)")
    ap.add_argument("--device", default=None, help="torch device (default: anyseg's choice)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args()
    if args.targets < 1:
        raise SystemExit("--targets must be at least 1")

    import torch

    from anyseg.fewshot import Reference

    if args.threads:
        torch.set_num_threads(args.threads)
    image, mask, targets, source = frames(args.sequence, args.targets)
    ref = Reference(image, mask, name=f"{args.sequence} frame 0")
    results, skipped = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        built: dict = {}
        for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
            if name not in METHODS or method_module(name) is None:
                skipped[name] = ("its module is not written yet" if name in METHODS
                                 else "no random-weights builder here (e.g. SAM 3's exemplars: its own checkpoint)")
                print(f"{name}: skipped ({skipped[name]})", file=sys.stderr)
                continue
            print(f"{name}: timing ...", file=sys.stderr)
            results.append(time_method(name, segmenter_options(name, Path(tmp), built), ref, targets, args.device))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # a long run that is stopped keeps these
    print(f"{source}; {args.targets} targets; torch threads {torch.get_num_threads()}")
    print(f"{'method':10} {'fit (s)':>9} {'cached/target':>14} {'recompute/target':>17} {'speed-up':>9} "
          f"{'session cached':>15} {'session recompute':>18}")
    for r in results:
        print(f"{r['method']:10} {r['fit_s']:>9.3f} {r['cached_per_target_s']:>14.3f} "
              f"{r['recompute_per_target_s']:>17.3f} {'x' + str(r['per_target_speedup']):>9} "
              f"{r['session_s']['cached']:>15.2f} {r['session_s']['recompute']:>18.2f}")
    for name, why in skipped.items():
        print(f"{name:10} skipped: {why}")
    if args.json:
        args.json.write_text(json.dumps({
            "source": source, "targets": args.targets, "device": args.device or "default",
            "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "results": results, "skipped": skipped}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
