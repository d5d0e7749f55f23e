#!/usr/bin/env python
"""The ``classical`` engine's click path under the RITM click simulator, with its split and its score check.

One process, the same clicker as ``anyseg eval interactive`` (:func:`anyseg.eval.clicker.next_click`;
first click with ``multimask=True`` and the best-scored candidate kept, later clicks with the
previous logits as ``mask_logits``), on one of three kinds of data:

* ``grabcut``: the 50 GrabCut images (128 band ignored), split by a seeded permutation of the
  sorted stems into a *tuning* half (the first 25, what the defaults were tuned on) and a
  *held-out* half (``--split tune|held|all``; ``--list-split`` prints both);
* ``kvasir``: the 5 Kvasir-SEG polyps (masks JPEG, foreground = any channel > 127);
* ``camvid``: CamVid cars (label 8, void 11 ignored): the largest 8-connected car component of
  every 5th frame, when it has at least 900 pixels (the frames are a sequence: one car per 5 frames).

Prints one row per object, then NoC@85/90, NoF, mIoU@1/3/5/10, seconds per click, and Spearman's
rank correlation between the engine's score and the true IoU over (a) the first click's candidates,
(b) every returned mask and (c) with ``--all-candidates``, every candidate of every click (each
click then asks for ``multimask=True`` and keeps candidate 0, which is what ``multimask=False``
returns). ``--stop-at 0.9`` ends a session at IoU 0.9 (NoC@85/90 and mIoU@1 unchanged, faster:
what tuning used); the reported numbers use all 20 clicks.

    python bench/classical_clicks.py [--kind grabcut|kvasir|camvid] [--data DIR] [--split all|tune|held]
                                     [--max-clicks 20] [--stop-at T] [--all-candidates] [--limit N]
                                     [--box] [--fit] [--json OUT] [--quiet]
    python bench/classical_clicks.py --list-split
    python bench/classical_clicks.py --split-report RUN/results.jsonl

``--box`` runs the box protocol instead (tight box of the object, one prediction, multimask
candidates recorded) and reports mean IoU and the score's Spearman correlation with IoU.
``--fit`` also records every candidate the engine considered
(:meth:`~anyseg.models.classical.ClassicalPredictor.candidates`: evidence, IoU at the working
resolution) and fits the logistic score weights per path (``click``, ``edit``, ``box``), with the
choice each fit makes when the object is left out: how ``CLICK_WEIGHTS`` and ``EDIT_WEIGHTS`` of
:mod:`anyseg.models.classical_score` were fitted (``--split tune --stop-at 0.9 --fit``).
``--split-report`` splits a finished ``anyseg eval interactive`` run on GrabCut into the two
halves. Uses SciPy (installed with scikit-image) for Spearman's rho and the fit.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLIT_SEED = 14  # the number: numpy default_rng(14).permutation of the sorted GrabCut stems
CAMVID_CAR, CAMVID_VOID, CAMVID_MIN_AREA, CAMVID_EVERY, CAMVID_TUNE_OFFSET = 8, 11, 900, 5, 2


def grabcut_split(stems: list[str]) -> tuple[list[str], list[str]]:
    """``(tuning, held_out)``: the seeded half split of the sorted stems."""
    stems = sorted(stems)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(stems))
    half = len(stems) // 2
    return sorted(stems[i] for i in order[:half]), sorted(stems[i] for i in order[half:])


def mask_items(root: Path, split: str, limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    from anyseg.eval.datasets import read_mask_folder

    samples = read_mask_folder(root)
    if split != "all":
        tune, held = grabcut_split([s.name for s in samples])
        keep = set(tune if split == "tune" else held)
        samples = [s for s in samples if s.name in keep]
    out = []
    for s in samples[:limit]:
        gt, ignore = s.load_gt()
        out.append((s.name, s.load_image(), gt, ignore))
    return out


def camvid_items(root: Path, limit: int | None, split: str = "all") -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """CamVid cars: frames ``i % 5 == 0`` (``all`` and ``held``: the check set) or ``i % 5 == 2``
    (``tune``: other frames of the same drives, what the click score was fitted on with GrabCut's tuning half)."""
    import cv2
    from PIL import Image

    from anyseg.io.images import load_image

    out = []
    for i, lab_path in enumerate(sorted((root / "labels").glob("*.png"))):
        if i % CAMVID_EVERY != (CAMVID_TUNE_OFFSET if split == "tune" else 0):
            continue
        labels = np.asarray(Image.open(lab_path))
        n, comp, stats, _ = cv2.connectedComponentsWithStats((labels == CAMVID_CAR).astype(np.uint8), connectivity=8)
        if n < 2 or stats[1:, 4].max() < CAMVID_MIN_AREA:
            continue
        k = 1 + int(np.argmax(stats[1:, 4]))
        out.append((lab_path.stem, load_image(root / "images" / lab_path.name), comp == k, labels == CAMVID_VOID))
    return out[:limit]


def davis_items(root: Path, limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """DAVIS 2016: the first annotated frame of every sequence (mask > 127), one object each."""
    from PIL import Image

    from anyseg.io.images import load_image

    out = []
    for seq in sorted(p for p in (root / "Annotations" / "480p").iterdir() if p.is_dir()):
        first = sorted(seq.glob("*.png"))[0]
        gt = np.asarray(Image.open(first).convert("L")) > 127
        out.append((seq.name, load_image(root / "JPEGImages" / "480p" / seq.name / f"{first.stem}.jpg"), gt, None))
    return out[:limit]


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None) -> float:
    valid = np.ones_like(gt) if ignore is None else ~ignore
    union = np.count_nonzero((pred | gt) & valid)
    return float(np.count_nonzero(pred & gt & valid) / union) if union else 1.0


def session(predictor, image, gt, ignore, max_clicks: int, stop_at: float | None, all_candidates: bool,
            fit: bool = False) -> dict:
    """:func:`anyseg.eval.clicker.simulate`, recording every candidate's score and IoU (with ``fit``,
    also every candidate :meth:`~anyseg.models.classical.ClassicalPredictor.candidates` considered,
    its evidence and its IoU at the working resolution)."""
    from anyseg.eval.clicker import next_click
    from anyseg.types import Prompt

    t0 = time.perf_counter()
    emb = predictor.embed(image)
    pred, clicked, logits = np.zeros_like(gt), np.zeros_like(gt), None
    clicks, ious, cands, seconds, names, fits = [], [], [], [], [], []
    for k in range(1, max_clicks + 1):
        click = next_click(pred, gt, ignore, clicked=clicked)
        if click is None:
            break
        clicks.append(click)
        clicked[int(click[1]), int(click[0])] = True
        prompt = Prompt(points=[c[:2] for c in clicks], labels=[int(c[2]) for c in clicks], mask_logits=logits)
        t = time.perf_counter()
        out = predictor.predict(emb, prompt, multimask=k == 1 or all_candidates)
        seconds.append(time.perf_counter() - t)
        best = int(np.argmax(out.scores))
        pred, logits = out.masks[best], out.logits[best]
        if fit:
            fits.append(_fit_record(predictor, emb, prompt, gt, ignore, "click" if k == 1 else "edit"))
        cands.append([(float(s), iou(m, gt, ignore)) for s, m in zip(out.scores, out.masks)])
        names.append([str(v) for v in out.data.get("variant", [])])
        ious.append(iou(pred, gt, ignore))
        if stop_at is not None and ious[-1] >= stop_at:
            break
    ious += [ious[-1]] * (max_clicks - len(ious))
    return {"ious": ious, "clicks": [[float(x), float(y), bool(p)] for x, y, p in clicks], "candidates": cands,
            "predict_s": seconds, "seconds": time.perf_counter() - t0, "variants": names,
            "fit": fits}


def box_run(predictor, image, gt, ignore, fit: bool = False) -> dict:
    from anyseg.eval.runners import tight_box
    from anyseg.types import Prompt

    t = time.perf_counter()
    emb = predictor.embed(image)
    prompt = Prompt(box=tight_box(gt))
    out = predictor.predict(emb, prompt, multimask=True)
    seconds = time.perf_counter() - t
    cands = [(float(s), iou(m, gt, ignore)) for s, m in zip(out.scores, out.masks)]
    fits = [_fit_record(predictor, emb, prompt, gt, ignore, "box")] if fit else []
    return {"iou": cands[0][1], "score": cands[0][0], "candidates": cands, "seconds": seconds,
            "variants": [str(v) for v in out.data.get("variant", [])], "fit": fits}


def _fit_record(predictor, emb, prompt, gt, ignore, path: str) -> dict:
    """Every candidate the engine considered for ``prompt``: evidence and IoU at the working resolution."""
    import cv2

    every = predictor.candidates(emb, prompt)
    small = every.masks.shape[1:]
    g, ig = (None if a is None else cv2.resize(a.astype(np.uint8), small[::-1], interpolation=cv2.INTER_NEAREST) > 0
             for a in (gt, ignore))
    return {"path": path, "evidence": every.data["evidence"].tolist(), "iou": [iou(m, g, ig) for m in every.masks]}


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    s, i = np.array(pairs).T
    return None if np.ptp(s) == 0 or np.ptp(i) == 0 else round(float(spearmanr(s, i).statistic), 3)


def confidence(pairs: list[tuple[float, float]], wrong: float = 0.5, confident: float = 0.5) -> dict:
    """How often a (score, IoU) pair is confidently wrong (score >= ``confident``, IoU < ``wrong``),
    and the scores of wrong and right masks: issue 14's "never confidently wrong", measured."""
    bad = [s for s, i in pairs if i < wrong]
    good = [s for s, i in pairs if i >= wrong]
    mean = lambda v: round(float(np.mean(v)), 3) if v else None  # noqa: E731
    return {"confidently_wrong": sum(s >= confident for s in bad), "wrong": len(bad), "of": len(pairs),
            "max_score_when_wrong": round(max(bad), 3) if bad else None, "mean_score_when_wrong": mean(bad),
            "mean_score_when_right": mean(good)}


def click_summary(rows: list[dict], max_clicks: int) -> dict:
    from anyseg.eval.clicker import summarize

    out = summarize([r["ious"] for r in rows], max_clicks=max_clicks)
    out.pop("iou_curve")
    first = [c for r in rows for c in r["candidates"][0]]
    returned = [max(c, key=lambda p: p[0]) for r in rows for c in r["candidates"]]
    every = [c for r in rows for cs in r["candidates"] for c in cs]
    n_clicks = sum(len(r["predict_s"]) for r in rows)
    out.update({"spearman_first_click_candidates": spearman(first), "spearman_returned_masks": spearman(returned),
                "spearman_all_candidates": spearman(every), "confidence_returned": confidence(returned),
                "confidence_first_click_candidates": confidence(first), "pairs": {"first": len(first), "returned": len(returned),
                                                                        "all": len(every)},
                "seconds_per_click": round(sum(sum(r["predict_s"]) for r in rows) / max(1, n_clicks), 3),
                "seconds_per_click_with_embed": round(sum(r["seconds"] for r in rows) / max(1, n_clicks), 3)})
    return out


def box_summary(rows: list[dict]) -> dict:
    ious = np.array([r["iou"] for r in rows])
    return {"num_images": len(rows), "mean_iou": round(float(ious.mean()), 4), "median_iou": round(float(np.median(ious)), 4),
            "min_iou": round(float(ious.min()), 4),
            "oracle_iou": round(float(np.mean([max(i for _, i in r["candidates"]) for r in rows])), 4),
            "spearman_returned": spearman([(r["score"], r["iou"]) for r in rows]),
            "spearman_all_candidates": spearman([c for r in rows for c in r["candidates"]]),
            "confidence_returned": confidence([(r["score"], r["iou"]) for r in rows]),
            "seconds_per_image": round(float(np.mean([r["seconds"] for r in rows])), 3)}


def fit_scores(rows: list[dict]) -> dict:
    """Logistic regression of the IoU on the evidence, per path (``click``: the first click,
    clicks alone; ``edit``: later clicks, with the previous mask; ``box``), with the choice it
    makes when each object is left out of the fit. Rows from several runs (``r["set"]``, set by
    ``--fit-from``) weigh the same in all, whatever their number of candidates."""
    out = {}
    for path in ("click", "edit", "box"):
        groups = [(r["name"], r.get("set", 0), [(e, i) for e, i in zip(f["evidence"], f["iou"])]) for r in rows
                  for f in r["fit"] if f["path"] == path and f["iou"]]
        if len({n for n, _, _ in groups}) < 3:
            continue
        sizes: dict[int, int] = {}
        for _, k, g in groups:
            sizes[k] = sizes.get(k, 0) + len(g)

        def pairs_of(selected):
            return ([p for _, _, g in selected for p in g], [1.0 / sizes[k] for _, k, g in selected for _ in g])

        w = _logistic(*pairs_of(groups))
        picked, pairs = [], []
        for name in sorted({n for n, _, _ in groups}):  # leave one object out
            wl = _logistic(*pairs_of([ng for ng in groups if ng[0] != name]))
            for _, _, g in (ng for ng in groups if ng[0] == name):
                z = [float(np.dot(wl[:-1], e) + wl[-1]) for e, _ in g]
                picked.append(g[int(np.argmax(z))][1])
                pairs += [(zz, i) for zz, (_, i) in zip(z, g)]
        out[path] = {"weights": [round(float(v), 3) for v in w], "loo_choice_miou": round(float(np.mean(picked)), 4),
                     "loo_spearman": spearman(pairs), "oracle_miou": round(float(np.mean([max(i for _, i in g) for _, _, g in groups])), 4),
                     "groups": len(groups)}
    return out


def _logistic(pairs: list, weights: list[float] | None = None) -> np.ndarray:
    """Weights (then the bias) of a logistic model of IoU in [0, 1] (cross-entropy, weighted by
    ``weights`` per pair, small L2); a column that never varies gets weight 0."""
    from scipy.optimize import minimize

    x = np.array([e for e, _ in pairs], float)
    y = np.array([i for _, i in pairs], float)
    sw = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    sw = sw / sw.sum()
    mu, sd = x.mean(0), x.std(0)
    used = sd > 1e-6
    xn = (x[:, used] - mu[used]) / sd[used]

    def loss(wb):
        p = 1.0 / (1.0 + np.exp(-(xn @ wb[:-1] + wb[-1])))
        return -float(np.sum(sw * (y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9)))) + 1e-3 * float((wb[:-1] ** 2).sum())

    wb = minimize(loss, np.zeros(int(used.sum()) + 1), method="L-BFGS-B").x
    w = np.zeros(x.shape[1])
    w[used] = wb[:-1] / sd[used]
    return np.append(w, wb[-1] - float((wb[:-1] * mu[used] / sd[used]).sum()))


def split_report(path: Path, root: Path, max_clicks: int) -> int:
    """NoC / mIoU of a finished ``anyseg eval interactive`` run on the tuning half, the held-out
    half and all of GrabCut (one JSON line each)."""
    from anyseg.eval.clicker import summarize
    from anyseg.eval.datasets import read_mask_folder

    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    records = {r["name"]: r for r in lines if "name" in r}  # (the first line is the run's header)
    tune, held = grabcut_split([s.name for s in read_mask_folder(root)])
    for split, names in (("tune", tune), ("held", held), ("all", tune + held)):
        missing = [n for n in names if n not in records]
        if missing:
            print(f"classical_clicks: error: {path} has no result for {missing[0]} (and {len(missing) - 1} more)", file=sys.stderr)
            return 2
        out = summarize([records[n]["ious"] for n in names], max_clicks=max_clicks)
        out.pop("iou_curve")
        seconds = sum(records[n]["seconds"] for n in names) / sum(len(records[n]["clicks"]) for n in names)
        print(json.dumps({"split": split, **out, "seconds_per_click_with_embed": round(seconds, 3)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("grabcut", "kvasir", "camvid", "davis2016"), default="grabcut")
    ap.add_argument("--data", type=Path, help="data folder (default ../shared/data/KIND)")
    ap.add_argument("--split", choices=("all", "tune", "held"), default="all",
                    help="GrabCut half, or CamVid's tuning frames (i %% 5 == 2) vs check frames (i %% 5 == 0; all = held)")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--stop-at", type=float, default=None, help="end a session at this IoU (tuning runs: 0.9)")
    ap.add_argument("--all-candidates", action="store_true", help="multimask=True at every click, for the score check")
    ap.add_argument("--box", action="store_true", help="the box protocol instead of clicks")
    ap.add_argument("--fit", action="store_true", help="also fit the scores' logistic weights on every candidate (slower)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--list-split", action="store_true", help="print the GrabCut tuning and held-out stems and exit")
    ap.add_argument("--split-report", type=Path, metavar="RESULTS_JSONL",
                    help="summarize an 'anyseg eval interactive' results.jsonl on GrabCut per split, and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-object rows")
    ap.add_argument("--fit-from", type=Path, nargs="+", metavar="RUN_JSON",
                    help="fit the score weights on the rows of earlier '--fit --json' runs (each run weighs the same), and exit")
    args = ap.parse_args(argv)

    if args.fit_from:
        rows = []
        for k, path in enumerate(args.fit_from):
            rows += [{**r, "set": k} for r in json.loads(path.read_text())["rows"]]
        print(json.dumps(fit_scores(rows)))
        return 0
    root = args.data or DATA / args.kind
    if not root.is_dir():
        print(f"classical_clicks: error: data folder {root} not found", file=sys.stderr)
        return 2
    if args.split_report:
        return split_report(args.split_report, root, args.max_clicks)
    if args.list_split:
        from anyseg.eval.datasets import read_mask_folder

        tune, held = grabcut_split([s.name for s in read_mask_folder(root)])
        print("tuning:", " ".join(tune))
        print("held-out:", " ".join(held))
        return 0
    if args.kind not in ("grabcut", "camvid") and args.split != "all":
        print("classical_clicks: error: --split is for --kind grabcut or camvid", file=sys.stderr)
        return 2
    from anyseg.models.classical import ClassicalPredictor

    if args.kind == "camvid":
        items = camvid_items(root, args.limit, args.split)
    elif args.kind == "davis2016":
        items = davis_items(root, args.limit)
    else:
        items = mask_items(root, args.split, args.limit)
    predictor = ClassicalPredictor()
    rows = []
    for name, image, gt, ignore in items:
        if args.box:
            r = box_run(predictor, image, gt, ignore, args.fit)
            line = f"{name:>28} iou {r['iou']:.3f} score {r['score']:.3f} cands " + " ".join(f"{s:.2f}/{i:.2f}" for s, i in r["candidates"])
        else:
            r = session(predictor, image, gt, ignore, args.max_clicks, args.stop_at, args.all_candidates, args.fit)
            first = " ".join(f"{s:.2f}/{i:.2f}" for s, i in r["candidates"][0])
            line = (f"{name:>28} iou@1 {r['ious'][0]:.3f} @5 {r['ious'][4 if args.max_clicks > 4 else -1]:.3f} "
                    f"noc90 {next((k + 1 for k, v in enumerate(r['ious']) if v >= 0.9), args.max_clicks):>2} first {first}")
        r["name"] = name
        rows.append(r)
        if not args.quiet:
            print(line, flush=True)
    summary = box_summary(rows) if args.box else click_summary(rows, args.max_clicks)
    if args.fit:
        summary["fit"] = fit_scores(rows)
    summary.update({"kind": args.kind, "split": args.split, "stop_at": args.stop_at, "machine": platform.processor() or platform.machine()})
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
