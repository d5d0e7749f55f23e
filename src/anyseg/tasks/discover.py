"""``anyseg discover`` as a task: objects or segments in every image, without labels or prompts.

:func:`run_discover` runs a :class:`~anyseg.discover.Discoverer` (models loaded once) over the
targets (:func:`anyseg.tasks.outputs.expand_targets`: image files and folders; video files are
refused: discovery is per image) and writes, per image, staged and moved into place with the
JSON last (a failed run leaves earlier results as they were):

* ``STEM_maskI.png`` (0/255) per mask and ``STEM_overlay.png`` (every mask drawn);
* for a partition (kind ``partition``): ``STEM_segments.png``, an indexed PNG whose value ``i + 1``
  is segment ``i`` (``0`` only where no segment is, which a partition leaves nowhere);
* ``STEM.json``: ``{"anyseg_version", "task": "discover", "method", "kind", "model", "refine",
  "sam", "objects", "image", "image_size", "seconds", "num_masks", "overlay_png",
  ["segments_png"], "masks": [{"index", "score", "box", "area", "rle", "mask_png", "details",
  ["label"], ["cluster"]}]}``.

With ``clusters=K`` (a partition method), the segments of all images are also clustered into
``K`` classes across the folder (k-means on each segment's feature,
:func:`anyseg.discover.spectral.cluster_segments`, deep spectral methods' semantic step): each
mask item gains ``cluster`` and each image a ``STEM_clusters.png`` (value ``k + 1`` = cluster
``k``). The features are kept in memory (``C`` floats per segment), the masks are not: each
image's records are rewritten once the clusters are known.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.tasks.outputs import Target, expand_targets, progress_bar, write_frame
from anyseg.types import Masks

__all__ = ["run_discover", "discover_record", "check_targets"]


def check_targets(targets: Sequence[str | Path]) -> list[Target]:
    """The image targets of ``targets`` (files and folders); a video is a one-line error."""
    found = expand_targets(targets)
    for t in found:
        if t.kind != "image":
            raise InputError(f"{t.path} is a video: discovery runs per image (extract frames first, or use "
                             "`anyseg track` to follow an object through a video)")
    return found


def discover_record(discoverer: Any, objects: int | None) -> dict[str, Any]:
    """The fields every record of a run shares."""
    from anyseg.version import __version__

    sam = getattr(discoverer, "sam", None)
    return {"anyseg_version": __version__, "task": "discover", "method": discoverer.name, "kind": discoverer.kind,
            "model": discoverer.model_id, "refine": discoverer.refine, "sam": None if sam is None else sam.model_id,
            "objects": objects}


def _save_index_map(masks: Masks, path: Path, values: Sequence[int] | None = None) -> None:
    from anyseg.io.atomic import write_bytes
    from anyseg.io.export import davis_palette, png_bytes

    h, w = masks.masks.shape[1:]
    index = np.zeros((h, w), np.uint8)
    for i, m in enumerate(masks.masks):
        index[m] = min(255, 1 + int(i if values is None else values[i]))
    write_bytes(path, png_bytes(index, palette=davis_palette()))


def _run_image(target: Target, discoverer: Any, objects: int | None, out_dir: Path, head: dict[str, Any],
               max_pixels: int | None) -> tuple[dict[str, Any], np.ndarray | None]:
    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.io.images import load_image

    image = load_image(target.path, max_pixels=max_pixels)
    t = time.perf_counter()
    masks = discoverer.discover(image, objects=objects)
    seconds = time.perf_counter() - t
    with staged_dir(out_dir) as stage:
        part = write_frame(stage, image, masks, target.stem)
        if masks.labels is not None:
            for item, label in zip(part["masks"], masks.labels):
                item["label"] = int(label) if np.issubdtype(np.asarray(label).dtype, np.integer) else str(label)
        if discoverer.kind == "partition":
            _save_index_map(masks, stage / f"{target.stem}_segments.png")
            part["segments_png"] = f"{target.stem}_segments.png"
        record = {**head, "image": str(target.path), "image_size": list(image.shape[:2]), "seconds": round(seconds, 3),
                  **part}
        write_json(stage / f"{target.stem}.json", record)
    feats = masks.data.get("feature")
    return record, (None if feats is None else np.asarray(feats, np.float32))


def _cluster(records: list[dict[str, Any]], features: list[np.ndarray | None], k: int, out: Path,
             seed: int = 0) -> None:
    """Cluster every segment's feature across the images; rewrite each image's JSON and cluster map."""
    from anyseg.io.atomic import write_json
    from anyseg.masks.rle import decode

    if any(f is None for f in features):
        raise InputError("--clusters needs a feature per segment; this method gives none (use spectral, diffseg "
                         "or classical with --mode partition)")
    stacked = np.concatenate([f for f in features if len(f)], axis=0) if records else np.zeros((0, 1))
    if not 1 <= k <= len(stacked):
        raise InputError(f"--clusters must be in 1..{len(stacked)} (the number of segments found); got {k}")
    from anyseg.discover.spectral import kmeans_features

    assign = kmeans_features(stacked, k, seed=seed)
    start = 0
    for record, f in zip(records, features):
        ids = assign[start:start + len(f)]
        start += len(f)
        for item, c in zip(record["masks"], ids):
            item["cluster"] = int(c)
        stem = Path(record["overlay_png"]).name[: -len("_overlay.png")]
        if record["masks"]:
            masks = Masks(masks=np.stack([decode(m["rle"]) for m in record["masks"]]))
            _save_index_map(masks, out / f"{stem}_clusters.png", values=[int(c) for c in ids])
            record["clusters_png"] = f"{stem}_clusters.png"
        record["clusters"] = k
        write_json(out / f"{stem}.json", record)


def run_discover(targets: Sequence[str | Path | Target], out_dir: str | Path, discoverer: Any,
                 objects: int | None = None, clusters: int | None = None, max_pixels: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Discover in every target and write its results (module docstring); returns the run's summary."""
    given = list(targets)
    expanded = given if given and all(isinstance(t, Target) for t in given) else check_targets(given)
    if clusters is not None and discoverer.kind != "partition":
        raise InputError(f"--clusters groups segments across images; {discoverer.name} finds objects, not a partition")
    t0 = time.perf_counter()
    head = discover_record(discoverer, objects)
    out = Path(out_dir)
    results, features = [], []
    for target in progress_bar(expanded, len(expanded), "discover", progress, "image"):
        record, feats = _run_image(target, discoverer, objects, out, head, max_pixels)
        results.append(record)
        features.append(feats)
    if clusters is not None:
        _cluster(results, features, clusters, out)
    return {**head, "out_dir": str(out), "seconds": round(time.perf_counter() - t0, 3), "num_targets": len(results),
            "num_masks": sum(r["num_masks"] for r in results), "clusters": clusters, "results": results}
