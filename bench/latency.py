"""Fast-inference benchmark: anyseg's runtimes vs transformers eager fp32, side by side in one run.

    python -m bench.latency --model sam2.1-hiera-tiny --random-weights
    python -m bench.latency --model sam-vit-base --random-weights --repeat 3 \\
        --runtimes torch,torch-bf16,torch-compile,onnx,onnx-int8 --threads 2 --json OUT.json

Builds the real-size architecture with random weights (speed does not depend on the weight
values) and a 480x640 image. The reference is transformers eager fp32 called as its model
card does: processor-equivalent pixel values (anyseg's ``preprocess``), then
``model.get_image_embeddings`` for the encoder and ``model(image_embeddings=..., input_points=...)``
for the decoder, masks post-processed to the image size. Every timed step alternates the
reference and each runtime inside one loop (the machine is shared: only ratios are
meaningful), warm-up excluded, medians reported:

* encoder: one image embedding;
* click: one positive click, multimask (3 masks), against a cached embedding;
* 64 boxes: ``predict_batch`` with 64 box prompts vs the reference's one batched call
  (``input_boxes`` of shape (1, 64, 4): transformers batches boxes in one call);
* RSS: ``peak MB``, the peak resident set of a fresh process that builds the model and runs
  one embed + click + 64 boxes with that runtime (``--rss subprocess``, the default; model
  load included, ``loaded_mb`` in the JSON is the RSS before the first call), and ``RSS+``,
  the growth during the runtime's first calls in the benchmark process (biased low for rows
  after the first: memory the allocator already holds is reused);
* parity vs the reference: IoU of every decoded mask (clicks ranked by score, as ``predict``
  returns them, and 64 boxes) and the largest |score difference|.
* threads: the fp32 encoder at each of ``--thread-sweep`` thread counts, alternating.

Random weights make logits small and masks ragged, so parity here is a harsher test than on
trained weights.

anyseg's ``torch`` row decodes with :class:`anyseg.models.sam_decoder.FastMaskDecoder` (the
same decoder rescheduled; fp32), ``torch-bf16`` runs encoder and decoder GEMMs in bf16;
``--runtime auto`` (printed first) is what ``anyseg segment`` uses on this machine. With
``--device cuda`` the rows are torch / torch-bf16 / torch-fp16 / torch-compile on the GPU
(autocast + SDPA), timings synchronised, and the GPU's peak allocation is reported.
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
from typing import Any, Callable

import numpy as np

SIZE = (480, 640)


def build(arch: str, folder: Path) -> Path:
    """The real-size architecture with random weights (seed 0), saved like a hub checkpoint."""
    from bench.promptable_latency import build as build_random

    return build_random(arch, folder)


class Runner:
    """One runtime: ``encode(image) -> emb``, ``click(emb, xy) -> Masks``, ``boxes(emb, boxes) -> [Masks]``."""

    def __init__(self, name: str, encode: Callable, click: Callable, boxes: Callable, note: str = "") -> None:
        self.name, self.encode, self.click, self.boxes, self.note = name, encode, click, boxes, note
        self.times: dict[str, list[float]] = {"encoder": [], "click": [], "boxes64": []}
        self.extra: dict[str, Any] = {}


def reference_runner(pred: Any) -> Runner:
    """transformers eager fp32, called the way the model card does."""
    import torch

    from anyseg.types import Masks

    model = pred.model

    dev = pred.device

    def encode(image):
        pv, geo = pred.preprocess(image)
        with torch.inference_mode():
            return model.get_image_embeddings(pv.to(dev)), geo

    def finish(out, geo, rank: bool) -> list:
        logits, scores = out.pred_masks[0].float().cpu(), out.iou_scores[0].float().cpu().numpy()
        res = []
        for j in range(logits.shape[0]):
            order = np.argsort(-scores[j], kind="stable") if rank else np.arange(scores.shape[1])
            res.append(Masks(masks=pred.postprocess(logits[j][order], geo), scores=scores[j][order],
                             logits=logits[j][order].numpy()))
        return res

    def click(emb, xy):
        e, geo = emb
        pts = torch.tensor(geo.to_model(np.array([xy], dtype=np.float64)), dtype=torch.float32, device=dev)[None, None]
        with torch.inference_mode():
            out = model(image_embeddings=e, input_points=pts,
                        input_labels=torch.ones(1, 1, 1, dtype=torch.long, device=dev), multimask_output=True)
        return finish(out, geo, rank=True)[0]

    def boxes(emb, bxs):
        e, geo = emb
        b = torch.tensor(np.stack([geo.to_model(x.reshape(2, 2)).reshape(4) for x in bxs]), dtype=torch.float32,
                         device=dev)[None]
        with torch.inference_mode():
            out = model(image_embeddings=e, input_boxes=b, multimask_output=False)
        return finish(out, geo, rank=False)

    return Runner("transformers-fp32", encode, click, boxes, note="reference: eager fp32, boxes batched in one call")


def anyseg_runner(name: str, pred: Any, note: str = "") -> Runner:
    from anyseg.types import Prompt

    return Runner(name, pred.embed, lambda emb, xy: pred.predict(emb, Prompt(points=[xy]), multimask=True),
                  lambda emb, bxs: pred.predict_batch(emb, [Prompt(box=b) for b in bxs], multimask=False), note=note)


def onnx_runners(base: Any, wanted: list[str], threads: int) -> tuple[list[Runner], str | None]:
    """``onnx`` / ``onnx-int8`` rows from ``anyseg.runtime.onnx`` (export time reported, not timed)."""
    try:
        from anyseg.runtime.onnx import OnnxRuntimePredictor  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001
        return [], f"onnx runtime not available ({type(exc).__name__}: {exc})"
    out = []
    for rt in wanted:
        try:
            t = time.perf_counter()
            pred = OnnxRuntimePredictor(base, runtime=rt, intra_op_num_threads=threads)
            r = anyseg_runner(rt, pred, note="export + session build in build_s")
            r.extra["build_s"] = round(time.perf_counter() - t, 2)
            out.append(r)
        except Exception as exc:  # noqa: BLE001 - the ONNX side is another work in progress
            msg = f"{rt}: could not be built ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            print(msg)
    return out, None


def rss_child(model: str, runtime: str, threads: int) -> dict[str, float]:
    """In a fresh process: build, load, one embed + click + 64 boxes with ``runtime``; peak RSS in MiB."""
    import torch

    from anyseg.eval.perf import current_rss_mb, peak_rss_mb
    from anyseg.models import load_model
    from anyseg.runtime.torch_fast import RUNTIMES, apply_runtime

    torch.set_num_threads(threads)
    image, clicks, boxes = inputs(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = load_model(model, weights=build(model, Path(tmp) / model), device="cpu")
        loaded = current_rss_mb()
        if runtime == "transformers-fp32":
            r = reference_runner(base)
        elif runtime in RUNTIMES:
            r = anyseg_runner(runtime, apply_runtime(base, runtime))
        else:
            found, why = onnx_runners(base, [runtime], threads)
            if not found:
                return {"error": why or "not built"}
            r = found[0]
        emb = r.encode(image)
        r.click(emb, clicks[0])
        r.boxes(emb, boxes)
    return {"loaded_mb": round(loaded, 1), "peak_mb": round(peak_rss_mb(), 1)}


def rss_subprocess(model: str, runtime: str, threads: int) -> dict[str, Any]:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "bench.latency", "--model", model, "--random-weights",
                           "--rss-child", runtime, "--threads", str(threads)],
                          capture_output=True, text=True, cwd=str(Path(__file__).resolve().parent.parent))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def inputs(n_clicks: int) -> tuple[np.ndarray, list, np.ndarray]:
    h, w = SIZE
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    clicks = [tuple(v) for v in rng.uniform([0, 0], [w - 1, h - 1], size=(max(n_clicks, 1), 2))]
    xy0 = rng.uniform([0, 0], [w / 2, h / 2], size=(64, 2))
    boxes = np.concatenate([xy0, xy0 + rng.uniform([40, 40], [w / 2 - 1, h / 2 - 1], size=(64, 2))], axis=1)
    return image, clicks, boxes


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(inter / union)


def parity(ref: list, cand: list) -> dict[str, float]:
    ious, sdiff = [], 0.0
    for r, c in zip(ref, cand):
        for k in range(r.masks.shape[0]):
            ious.append(mask_iou(r.masks[k], c.masks[k]))
        sdiff = max(sdiff, float(np.abs(np.asarray(r.scores) - np.asarray(c.scores)).max()))
    return {"mean_iou": round(float(np.mean(ious)), 4), "min_iou": round(float(np.min(ious)), 4),
            "max_abs_score_diff": round(sdiff, 5), "masks_compared": len(ious)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sam2.1-hiera-tiny", choices=["sam-vit-base", "sam2.1-hiera-tiny"])
    ap.add_argument("--random-weights", action="store_true", required=True,
                    help="build the real-size architecture with random weights (the only mode)")
    ap.add_argument("--runtimes", default=None,
                    help="comma list (default: torch,torch-bf16,torch-compile,onnx,onnx-int8 on CPU; "
                         "torch,torch-bf16,torch-fp16,torch-compile on CUDA)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (CUDA rows: autocast bf16 / fp16 + SDPA)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every row")
    ap.add_argument("--thread-sweep", default="1,2", help="thread counts for the fp32 encoder comparison ('' = off)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--clicks", type=int, default=4, help="clicks decoded for parity")
    ap.add_argument("--rss", choices=["subprocess", "growth", "off"], default="subprocess",
                    help="peak RSS per runtime: a fresh process each (default), or RSS growth in this one")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(args.model, args.rss_child, args.threads or 2)))
        return 0

    import torch

    from anyseg.eval.perf import RSSMonitor, peak_rss_mb
    from anyseg.models import load_model
    from anyseg.runtime import default_runtime
    from anyseg.runtime.torch_fast import RUNTIMES, apply_runtime, cpu_bf16_support

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    default = "torch,torch-bf16,torch-fp16,torch-compile" if cuda else "torch,torch-bf16,torch-compile,onnx,onnx-int8"
    wanted = [r.strip() for r in (args.runtimes or default).split(",") if r.strip()]
    unknown = [r for r in wanted if r not in RUNTIMES + ("onnx", "onnx-int8")]
    if unknown:
        raise SystemExit(f"unknown runtime(s) {unknown}; expected {RUNTIMES + ('onnx', 'onnx-int8')}")
    h, w = SIZE
    image, clicks, boxes = inputs(args.clicks)

    result: dict[str, Any] = {
        "model": args.model, "image": [h, w], "repeat": args.repeat, "torch_threads": threads,
        "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": sys.version.split()[0], "cpu_bf16": cpu_bf16_support(), "rows": {}, "notes": [],
        "device": args.device, "auto_runtime": list(default_runtime(args.device)),
    }
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.model, Path(tmp) / args.model)
        base = load_model(args.model, weights=folder, device=args.device)
        runners = [reference_runner(base)]
        for rt in wanted:
            if rt in RUNTIMES:
                runners.append(anyseg_runner(rt, apply_runtime(base, rt)))
        onnx_wanted = [r for r in wanted if r.startswith("onnx")]
        if onnx_wanted:
            extra, why = onnx_runners(base, onnx_wanted, threads)
            if why:
                print(why)
                result["notes"].append(why)
            runners += extra

        # warm-up (compile included) with RSS growth, then parity outputs
        outputs: dict[str, list] = {}
        for r in runners:
            with RSSMonitor(0.01) as mon:
                t = time.perf_counter()
                emb = r.encode(image)
                r.extra["first_encode_s"] = round(time.perf_counter() - t, 3)
                r.click(emb, clicks[0])
                r.boxes(emb, boxes)
            r.extra["rss_growth_mb"] = round(mon.delta_mb, 1)
            outs = [r.click(emb, c) for c in clicks] + r.boxes(emb, boxes)
            outputs[r.name] = outs
            r.extra["emb"] = emb
        ref = runners[0]
        for r in runners[1:]:
            r.extra["parity"] = parity(outputs[ref.name], outputs[r.name])

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        # timed: alternate runtimes inside each repeat (clicks and boxes return numpy masks: synchronised)
        for i in range(args.repeat):
            for r in runners:
                sync(); t = time.perf_counter(); r.encode(image); sync(); r.times["encoder"].append(time.perf_counter() - t)
            for r in runners:
                t = time.perf_counter(); r.click(r.extra["emb"], clicks[i % len(clicks)])
                r.times["click"].append(time.perf_counter() - t)
            for r in runners:
                t = time.perf_counter(); r.boxes(r.extra["emb"], boxes); r.times["boxes64"].append(time.perf_counter() - t)

        # threads: fp32 encoder at each count, alternating
        sweep = [int(v) for v in args.thread_sweep.split(",") if v.strip()] if not cuda else []
        if sweep:
            tt: dict[int, list[float]] = {n: [] for n in sweep}
            for _ in range(max(2, args.repeat // 2 + 1)):
                for n in sweep:
                    torch.set_num_threads(n)
                    t = time.perf_counter(); ref.encode(image); tt[n].append(time.perf_counter() - t)
            torch.set_num_threads(threads)
            result["thread_sweep_encoder_s"] = {str(n): round(statistics.median(v), 4) for n, v in tt.items()}
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if cuda:
        result["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if args.rss == "subprocess" and not cuda:
        for r in runners:
            r.extra["rss_subprocess"] = rss_subprocess(args.model, r.name, threads)

    med = {r.name: {k: statistics.median(v) for k, v in r.times.items()} for r in runners}
    refm = med[ref.name]
    for r in runners:
        m = med[r.name]
        row = {k: round(v, 4) for k, v in m.items()}
        row["speedup_vs_ref"] = {k: round(refm[k] / m[k], 2) for k in m}
        row["boxes64_per_s"] = round(64 / m["boxes64"], 1)
        row.update({k: v for k, v in r.extra.items() if k != "emb"})
        if r.note:
            row["note"] = r.note
        result["rows"][r.name] = row

    print(f"--runtime auto here: {result['auto_runtime'][0]} ({result['auto_runtime'][1]})")
    print(f"{args.model}  480x640  {args.device}{' ' + result['gpu'] if cuda else ''}  torch {torch.__version__}  "
          f"threads={threads}  repeat={args.repeat}  "
          f"bf16 native: {result['cpu_bf16']['native']} (avx512_bf16={result['cpu_bf16']['avx512_bf16']}, "
          f"amx_bf16={result['cpu_bf16']['amx_bf16']})")
    hdr = (f"{'runtime':20} {'encoder s':>10} {'x ref':>6} {'click s':>9} {'x ref':>6} {'64 box s':>9} {'x ref':>6} "
           f"{'RSS+ MB':>8} {'peak MB':>8} {'mIoU':>7} {'minIoU':>7} {'|dscore|':>9} {'1st call s':>10}")
    print(hdr)
    for name, row in result["rows"].items():
        p = row.get("parity", {})
        sp = row["speedup_vs_ref"]
        print(f"{name:20} {row['encoder']:>10.3f} {sp['encoder']:>6.2f} {row['click']:>9.4f} {sp['click']:>6.2f} "
              f"{row['boxes64']:>9.4f} {sp['boxes64']:>6.2f} {row['rss_growth_mb']:>8.0f} {row.get('rss_subprocess', {}).get('peak_mb', float('nan')):>8.0f} "
              f"{p.get('mean_iou', float('nan')):>7.4f} {p.get('min_iou', float('nan')):>7.4f} "
              f"{p.get('max_abs_score_diff', float('nan')):>9.5f} {row['first_encode_s']:>10.2f}")
    if "thread_sweep_encoder_s" in result:
        print("fp32 encoder by torch threads (median s):", result["thread_sweep_encoder_s"])
    print(f"process peak RSS: {result['peak_rss_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
