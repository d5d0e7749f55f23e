#!/usr/bin/env python
"""Fine-tuning time per optimiser step: LoRA against full, fp32 against bf16, real-size models.

Models are the real-size architectures with random weights (speed does not depend on the weight
values), built from transformers configs and loaded through the users' path (``--model FOLDER``),
as ``bench/fewshot_latency.py`` does: SAM ViT-B (``SamConfig()`` defaults, 1024 px) and SAM 2.1
Hiera-T (``Sam2Config()`` defaults, its 1024 px). Each configuration trains with
:func:`anyseg.finetune.train` (batch 1, box + point prompts, the trainer's default rounds) on a
synthetic 1024 x 1024 image / mask folder for ``--warmup + --steps`` steps; the time per step is
the median of the gaps between the trainer's ``on_step`` callbacks after the warm-up (so it
counts everything a step does: data, prompts, forward, backward, optimiser). Validation is left
out of the timing (it runs before the first step).

    python bench/finetune_speed.py [--models sam-vit-b,sam2.1-t] [--methods lora,full]
                                   [--precisions fp32,bf16] [--steps 3] [--warmup 1] [--device cpu]
                                   [--threads N] [--json OUT]
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

REPO = Path(__file__).resolve().parents[1]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
MODELS = ("sam-vit-b", "sam2.1-t")


def _save(model, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": IMAGENET[0], "image_std": IMAGENET[1], "size": {"longest_edge": 1024}}))
    return str(folder)


def build(name: str, folder: Path) -> str:
    """A random-weight real-size model folder: ``sam-vit-b`` or ``sam2.1-t``."""
    import torch
    import transformers

    torch.manual_seed(0)
    if name == "sam-vit-b":
        return _save(transformers.SamModel(transformers.SamConfig()).eval(), folder)
    return _save(transformers.Sam2Model(transformers.Sam2Config()).eval(), folder)


def synthetic_data(root: Path, n: int = 2, size: int = 1024) -> Path:
    """``root/images`` + ``root/masks``: ``n`` noisy images with an ellipse, ``size`` px square."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = ((yy - size * 0.5) / (size * 0.2)) ** 2 + ((xx - size * (0.4 + 0.1 * i)) / (size * 0.25)) ** 2 <= 1
        image = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
        image[mask] = (200, 150, 90)
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"s{i}.png")
    return root


def time_config(folder: str, data: Path, out: Path, method: str, precision: str, steps: int, warmup: int,
                device: str | None) -> dict:
    """Train ``warmup + steps`` steps; the median seconds per step after the warm-up, peak memory."""
    import resource

    from anyseg.finetune import FinetuneConfig, train
    from anyseg.models import load_model

    stamps: list[float] = []
    predictor = load_model(folder, device=device)
    cfg = FinetuneConfig(method=method, batch=1, steps=warmup + steps, precision=precision,
                         checkpoint_every=10**6, val_every=10**6)
    t0 = time.perf_counter()
    stamps.append(t0)
    train(predictor, data, out, cfg, device=device, resume=False, progress=False,
          on_step=lambda rec: stamps.append(time.perf_counter()))
    gaps = np.diff(stamps)[warmup:]
    cuda = {}
    try:
        import torch

        if torch.cuda.is_available() and (device or "").startswith("cuda"):
            cuda = {"peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001 - no CUDA: CPU numbers only
        pass
    total = sum(p.numel() for p in predictor.model.parameters())
    return {"method": method, "precision": precision, "steps_timed": len(gaps),
            "s_per_step": round(float(statistics.median(gaps)), 3) if len(gaps) else None,
            "s_min": round(float(np.min(gaps)), 3) if len(gaps) else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "parameters": int(total), **cuda}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, metavar="OUT")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = synthetic_data(tmp_path / "data")
        for name in args.models.split(","):
            folder = build(name, tmp_path / name)
            for method in args.methods.split(","):
                for precision in args.precisions.split(","):
                    row = {"model": name, **time_config(folder, data, tmp_path / f"run-{name}-{method}-{precision}",
                                                        method, precision, args.steps, args.warmup, args.device)}
                    rows.append(row)
                    print(f"{name:10s} {method:8s} {precision:5s} {row['s_per_step']!s:>8s} s/step  "
                          f"(min {row['s_min']}, peak RSS {row['peak_rss_mb']} MB)", flush=True)
    report = {"bench": "finetune_speed", "python": platform.python_version(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "device": args.device or "default", "batch": 1,
              "steps": args.steps, "warmup": args.warmup, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
