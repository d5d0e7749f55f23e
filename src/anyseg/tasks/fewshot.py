"""``anyseg fewshot`` as a task: segment, in every target, what the reference examples show.

:func:`load_references` reads the ``(image, mask)`` pairs (:func:`anyseg.io.images.load_image`,
:func:`~anyseg.io.images.load_mask` at the image's size; :class:`anyseg.fewshot.Reference`
refuses an empty mask or one that covers the whole image). :func:`expand_targets` turns the
targets into a list (image files; folders: their images in natural name order; video files:
every frame, segmented one at a time with no memory between frames), checked before any work.
:func:`run_fewshot` fits the :class:`~anyseg.fewshot.Segmenter` once and writes, per target:

* an image ``STEM.png``: ``STEM_maskI.png`` (0/255) per instance, ``STEM_overlay.png`` (every
  instance drawn) and ``STEM.json``;
* a video ``STEM.mp4``: ``STEM_NNNNN_maskI.png`` and ``STEM_NNNNN_overlay.png`` per frame and one
  ``STEM.json`` with a record per frame.

A target's files are staged and moved into place at the end, JSON last
(:func:`anyseg.io.atomic.staged_dir`): a run that fails leaves the earlier results as they
were. The record (one per target):

``{"anyseg_version", "task": "fewshot", "image" (or "video", "fps", "frames": [{"frame",
"overlay_png", "masks"}]), "image_size": [H, W], "method", "instances", "references":
[{"image", "mask", "image_size", "area"}], "seconds", "num_masks", "overlay_png", "masks":
[{"index", "score", "box", "area", "rle", "mask_png", "details"}]}``; ``details`` holds the
method's own per-mask columns (the classical method's evidence, for instance).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from anyseg.errors import InputError
from anyseg.fewshot import Reference, Segmenter
from anyseg.tasks.outputs import Target, expand_targets, progress_bar, write_frame

__all__ = ["Target", "expand_targets", "check_videos", "load_references", "run_fewshot", "fewshot_record"]


def load_references(images: Sequence[str | Path], masks: Sequence[str | Path],
                    max_pixels: int | None = None) -> tuple[list[Reference], list[dict[str, Any]]]:
    """The references of ``(image, mask)`` file pairs, and their records (paths, size, mask area)."""
    if len(images) != len(masks):
        raise InputError(f"each --ref needs its --ref-mask: got {len(images)} --ref and {len(masks)} --ref-mask")
    if not images:
        raise InputError("no reference: give --ref IMAGE --ref-mask PNG (repeatable)")
    from anyseg.io.images import load_image, load_mask

    refs, info = [], []
    for image_path, mask_path in zip(images, masks):
        image = load_image(image_path, max_pixels=max_pixels)
        mask = load_mask(mask_path, size=image.shape[:2], max_pixels=max_pixels)
        refs.append(Reference(image, mask, name=str(mask_path)))
        info.append({"image": str(image_path), "mask": str(mask_path), "image_size": list(image.shape[:2]),
                     "area": int(mask.sum())})
    return refs, info


def fewshot_record(segmenter: Segmenter, references: Sequence[dict[str, Any]], instances: str) -> dict[str, Any]:
    """The fields every record of a run shares: version, task, method, instances, references."""
    from anyseg.version import __version__

    return {"anyseg_version": __version__, "task": "fewshot", "method": segmenter.method_name,
            "instances": instances, "references": [dict(r) for r in references]}


def _run_image(target: Target, segmenter: Segmenter, instances: str, out_dir: Path, head: dict[str, Any],
               max_pixels: int | None) -> dict[str, Any]:
    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.io.images import load_image

    image = load_image(target.path, max_pixels=max_pixels)
    t = time.perf_counter()
    masks = segmenter.predict(image, instances=instances)
    seconds = time.perf_counter() - t
    with staged_dir(out_dir) as stage:
        part = write_frame(stage, image, masks, target.stem)
        record = {**head, "image": str(target.path), "image_size": list(image.shape[:2]), "seconds": round(seconds, 3),
                  **part}
        write_json(stage / f"{target.stem}.json", record)
    return record


def _run_video(target: Target, segmenter: Segmenter, instances: str, out_dir: Path, head: dict[str, Any],
               max_frames: int | None, progress: bool) -> dict[str, Any]:
    from anyseg.io.atomic import staged_dir, write_json
    from anyseg.video.frames import open_frames

    frames = open_frames(target.path, max_frames=_frame_limit(max_frames))
    t = time.perf_counter()
    try:
        with staged_dir(out_dir) as stage:
            records = []
            for i in progress_bar(range(len(frames)), len(frames), target.path.name, progress, "frame"):
                frame = frames[i]
                masks = segmenter.predict(frame, instances=instances)
                records.append({"frame": i, **write_frame(stage, frame, masks, f"{target.stem}_{i:05d}")})
            record = {**head, "video": str(target.path), "image_size": list(frames.size), "fps": round(frames.fps, 3),
                      "num_frames": len(frames), "seconds": round(time.perf_counter() - t, 3),
                      "num_masks": sum(r["num_masks"] for r in records), "frames": records}
            write_json(stage / f"{target.stem}.json", record)
    finally:
        frames.close()
    return record


def _frame_limit(max_frames: int | None) -> int:
    from anyseg.tasks.track import check_max_frames, max_frames_default

    return max_frames_default() if max_frames is None else check_max_frames(max_frames)


def check_videos(targets: Sequence[Target], max_frames: int | None = None) -> None:
    """Open (and close) every video target: an unreadable video, or one over the frame bound
    (:func:`anyseg.tasks.track.max_frames_default`), is a one-line error before any work."""
    from anyseg.video.frames import open_frames

    limit = _frame_limit(max_frames)
    for t in targets:
        if t.kind == "video":
            open_frames(t.path, max_frames=limit).close()


def run_fewshot(targets: Sequence[str | Path | Target], refs: Sequence[Reference] | None, out_dir: str | Path,
                segmenter: Segmenter, instances: str | None = None, references: Sequence[dict[str, Any]] | None = None,
                max_pixels: int | None = None, max_frames: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Fit ``segmenter`` on ``refs`` once (``None``: already fitted) and segment every target.

    ``targets``: paths (expanded by :func:`expand_targets`) or :class:`Target`; ``instances``:
    ``one`` / ``all`` (default: the segmenter's); ``references``: the references' records (from
    :func:`load_references`; default their names). Returns the run's summary: the shared fields,
    ``out_dir``, ``seconds``, ``num_targets``, ``num_masks`` and ``results`` (each target's
    record, as written to its ``STEM.json``).
    """
    from anyseg.fewshot.base import check_instances

    given = list(targets)
    expanded = given if given and all(isinstance(t, Target) for t in given) else expand_targets(given)
    instances = check_instances(instances or segmenter.instances)
    check_videos(expanded, max_frames)
    t0 = time.perf_counter()
    if refs is not None:
        segmenter.fit(refs)
    if not segmenter.references:
        raise InputError("the Segmenter has no references: pass refs, or fit it first")
    if references is None:
        references = [{"name": r.name, "image_size": list(r.size), "area": int(r.mask.sum())} for r in segmenter.references]
    head = fewshot_record(segmenter, references, instances)
    out = Path(out_dir)
    results = []
    for target in progress_bar(expanded, len(expanded), "few-shot", progress, "target"):
        if target.kind == "video":
            results.append(_run_video(target, segmenter, instances, out, head, max_frames, progress))
        else:
            results.append(_run_image(target, segmenter, instances, out, head, max_pixels))
    return {**head, "out_dir": str(out), "seconds": round(time.perf_counter() - t0, 3), "num_targets": len(results),
            "num_masks": sum(r["num_masks"] for r in results), "results": results}
