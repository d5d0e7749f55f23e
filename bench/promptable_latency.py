"""Promptable segmentation latency: anyseg (embed once, decode per click) vs transformers' usage.

Builds the real-size architecture with random weights (speed does not depend on the weight
values), then times, side by side in one run, on the same image and clicks:

* reference: transformers as its model cards show it, ``model(pixel_values, input_points)`` per
  click, i.e. the image encoder runs for every click (SAM v1: with its PIL processor);
* anyseg: ``embed`` once, then ``predict`` per click against the embedding.

    python bench/promptable_latency.py --arch sam-vit-base --clicks 5
    python bench/promptable_latency.py --arch sam2.1-hiera-tiny --clicks 5

Prints a table and (with ``--json OUT``) writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(arch: str, folder: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    if arch == "sam-vit-base":
        model = transformers.SamModel(transformers.SamConfig())
    elif arch == "sam2.1-hiera-tiny":
        model = transformers.Sam2Model(transformers.Sam2Config())
    else:
        raise SystemExit(f"unknown --arch {arch!r}: expected sam-vit-base or sam2.1-hiera-tiny")
    model.save_pretrained(str(folder))
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sam-vit-base", choices=["sam-vit-base", "sam2.1-hiera-tiny"])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--size", default="480x640", help="HxW of the synthetic test image")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from anyseg.models import load_model
    from anyseg.types import Prompt

    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    clicks = rng.uniform([0, 0], [w, h], size=(args.clicks, 2))

    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.arch, Path(tmp) / args.arch)
        model = load_model(args.arch, weights=folder, device="cpu")
        geo = model.geometry((h, w))
        with torch.inference_mode():
            pixel_values, _ = model.preprocess(image)
            model.model(pixel_values=pixel_values, input_points=torch.zeros(1, 1, 1, 2),
                        input_labels=torch.ones(1, 1, 1, dtype=torch.long))  # warm-up

        # reference: the whole model per click
        ref_times = []
        for x, y in clicks:
            t = time.perf_counter()
            with torch.inference_mode():
                pv, _ = model.preprocess(image)
                pts = torch.tensor(geo.to_model(np.array([[x, y]])), dtype=torch.float32)[None, None]
                out = model.model(pixel_values=pv, input_points=pts, input_labels=torch.ones(1, 1, 1, dtype=torch.long),
                                  multimask_output=True)
                model.postprocess(out.pred_masks[0, 0].float(), geo)
            ref_times.append(time.perf_counter() - t)

        t = time.perf_counter()
        emb = model.embed(image)
        embed_s = time.perf_counter() - t
        click_times = []
        for x, y in clicks:
            t = time.perf_counter()
            model.predict(emb, Prompt(points=[[x, y]]), multimask=True)
            click_times.append(time.perf_counter() - t)

    ref_click = statistics.median(ref_times)
    ours_click = statistics.median(click_times)
    ref_session = sum(ref_times)
    ours_session = embed_s + sum(click_times)
    result = {
        "arch": args.arch, "image": [h, w], "clicks": args.clicks, "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": sys.version.split()[0],
        "reference_per_click_s": round(ref_click, 4),
        "anyseg_embed_s": round(embed_s, 4),
        "anyseg_per_click_s": round(ours_click, 4),
        "per_click_speedup": round(ref_click / ours_click, 1),
        "session_s": {"reference": round(ref_session, 3), "anyseg": round(ours_session, 3)},
        "session_speedup": round(ref_session / ours_session, 2),
    }
    print(f"{'':28} {'reference':>10} {'anyseg':>10}")
    print(f"{'image encoder (s)':28} {'per click':>10} {embed_s:>10.3f}")
    print(f"{'per click (s, median)':28} {ref_click:>10.3f} {ours_click:>10.4f}   x{result['per_click_speedup']}")
    print(f"{f'{args.clicks}-click session (s)':28} {ref_session:>10.3f} {ours_session:>10.3f}   x{result['session_speedup']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
