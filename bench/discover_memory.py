#!/usr/bin/env python
"""Discovery methods: seconds per image and peak memory, each in a fresh process, on real-size random models.

For each method (``--methods``, default all) a fresh Python process builds its real-size
architecture with random weights (speed and memory do not depend on the weight values; what a
method *finds* does), saves it as its hub checkpoint is laid out, loads it through the users'
path (``Discoverer(method, model=FOLDER)``), discovers on one warm-up image and then on
``--images`` timed ones (a 640 x 480 photo: ``../shared/data/davis2016`` or scikit-image's
``astronaut`` scaled), and reports the median seconds per image, the process's peak resident
memory after loading (``load_mb``) and after discovery (``peak_mb``), and their difference
(``discover_mb``: what discovery itself needed). The models are built and saved by a separate
process first, so that building them does not count:

* ``tokencut``, ``maskcut``, ``spectral``: DINO ViT-S/8 (``ViTConfig``: 384 wide, 12 layers, 6
  heads, patch 8) with ``size=640``, so a 640 x 480 image is an 80 x 60 grid: 4800 cells, the
  issue's case;
* ``diffseg``: Stable Diffusion 1.x sizes (``UNet2DConditionModel`` defaults with 768-wide cross
  attention, the SD VAE, a 12-layer 768-wide CLIP text encoder), 512 x 512 input;
* ``classical``: no weights;
* ``tokencut-dense`` (the reference, side by side): TokenCut as its reference code computes it,
  the same keys (so the same model load) but a dense float64 ``N x N`` ``W``, ``D`` and ``D - W``
  and ``scipy.linalg.eigh``: the ratio of ``discover_mb`` and seconds is anyseg's bound against it.

    python bench/discover_memory.py [--methods tokencut,tokencut-dense,maskcut,spectral,diffseg,classical]
                                    [--images 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
DAVIS = REPO.parent / "shared" / "data" / "davis2016" / "JPEGImages" / "480p" / "dog" / "00000.jpg"
METHODS = ("tokencut", "tokencut-dense", "maskcut", "spectral", "diffseg", "classical")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def test_image() -> np.ndarray:
    from PIL import Image

    if DAVIS.is_file():
        return np.asarray(Image.open(DAVIS).convert("RGB").resize((640, 480), Image.BICUBIC))
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((640, 480), Image.BICUBIC))


def build_dino_vits8(folder: Path) -> Path:
    import torch
    from tiny_discover import _save
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                    patch_size=8, image_size=224, qkv_bias=True)
    return _save(ViTModel(cfg, add_pooling_layer=False).eval(), folder, 224)


def save_real_size_sd(folder: Path, unet_in_channels: int = 4) -> None:
    """Replace the UNet, VAE, text encoder and tokenizer of a tiny SD folder by SD 1.x-sized random ones
    (``UNet2DConditionModel`` defaults with 768-wide cross attention, the SD VAE, a 12-layer CLIP text
    encoder; ``unet_in_channels`` 9 for an inpainting UNet). Shared with ``bench/edit_latency.py``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from tiny_tokenizers import clip_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=64, in_channels=unet_in_channels, cross_attention_dim=768,
                         attention_head_dim=8).save_pretrained(str(folder / "unet"))
    AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  ).save_pretrained(str(folder / "vae"))
    tok = clip_tokenizer(max_length=77)
    tok.pad_token = "<|endoftext|>"
    CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                  ).save_pretrained(str(folder / "text_encoder"))
    tok.save_pretrained(str(folder / "tokenizer"))


def build_sd(folder: Path) -> Path:
    from diffusers import PNDMScheduler
    from tiny_diffusion import tiny_sd_folder

    tiny_sd_folder(folder)  # model_index.json, scheduler, tokenizer; the three models are replaced below
    save_real_size_sd(folder)
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True
                  ).save_pretrained(str(folder / "scheduler"))
    return folder


class DenseTokenCut:
    """TokenCut as its reference computes it: dense float64 W, D, D - W and scipy.linalg.eigh."""

    name, kind = "tokencut-dense", "objects"

    def __init__(self, extractor, tau: float = 0.2, eps: float = 1e-5) -> None:
        self.extractor, self.tau, self.eps = extractor, tau, eps

    def discover(self, image, objects=None):
        from scipy.linalg import eigh

        pf = self.extractor.patch_features(image, kind="keys")
        f = pf.normalized().astype(np.float64)
        A = f @ f.T
        A = np.where(A > self.tau, 1.0, self.eps)
        d = A.sum(1)
        D = np.diag(d)
        _, vecs = eigh(D - A, D, subset_by_index=[1, 2])
        return vecs[:, 0]


def model_for(method: str, tmp: Path) -> tuple[str | None, dict]:
    """The folder (built on first use, in a separate process) and options of ``method``."""
    kind = {"tokencut": "dino", "tokencut-dense": "dino", "maskcut": "dino", "spectral": "dino", "diffseg": "sd"}.get(method)
    if kind is None:
        return None, {}
    folder = tmp / kind
    if not folder.is_dir():
        subprocess.run([sys.executable, __file__, "--build", kind, "--dir", str(folder)], check=True)
    return str(folder), ({"size": 640} if kind == "dino" else {})


def one(method: str, images: int, model: str | None, options: dict) -> dict:
    """Run ``method`` in this process (the child): load, warm up, time, with the peak memory at each step."""
    from anyseg.discover import Discoverer

    image = test_image()
    start_mb = rss_mb()
    if method == "tokencut-dense":
        from anyseg.models.dino import load_features

        runner = DenseTokenCut(load_features(model, **options))
    else:
        runner = Discoverer(method, model=model, **options)
    load_mb = rss_mb()
    seconds = []
    for i in range(images + 1):  # the first is the untimed warm-up
        t = time.perf_counter()
        runner.discover(image)
        if i:
            seconds.append(time.perf_counter() - t)
    peak = rss_mb()
    return {"method": method, "seconds_per_image": round(statistics.median(seconds), 3), "start_mb": round(start_mb, 1),
            "load_mb": round(load_mb, 1), "peak_mb": round(peak, 1), "discover_mb": round(peak - load_mb, 1),
            "image": list(image.shape[:2])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build:
        (build_dino_vits8 if args.build == "dino" else build_sd)(Path(args.dir))
        return 0
    if args.child:
        print(json.dumps(one(args.child, args.images, args.model, json.loads(args.options))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            print(f"{method} ...", file=sys.stderr, flush=True)
            model, options = model_for(method, Path(tmp))
            cmd = [sys.executable, __file__, "--child", method, "--images", str(args.images),
                   "--options", json.dumps(options)] + (["--model", model] if model else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
                print(f"{method}: failed: {last}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    by = {r["method"]: r for r in rows}
    if "tokencut" in by and "tokencut-dense" in by:
        a, b = by["tokencut"], by["tokencut-dense"]
        print(json.dumps({"tokencut_vs_dense": {
            "discover_memory_ratio": round(b["discover_mb"] / max(a["discover_mb"], 1e-6), 2),
            "speed_ratio": round(b["seconds_per_image"] / max(a["seconds_per_image"], 1e-9), 2)}}))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
