"""Volumes and medical imaging: read a scan with its geometry, prompt it on slices, propagate in 3D.

>>> from anyseg.volume import load_volume, segment_volume, VolumeSession
>>> ct = load_volume("ct.nii.gz")                   # Volume: (K, J, I) array + spacing, origin, direction
>>> labels = segment_volume(ct, slice=40, box=[120, 90, 200, 170], model="classical", window="ct-abdomen")
>>> labels.array.shape == ct.shape and labels.same_geometry(ct)
True

* :mod:`anyseg.volume.base`: the :class:`Volume` type (ITK conventions: ``[k, j, i]`` arrays, LPS).
* :mod:`anyseg.volume.io`: ``load_volume`` (NIfTI, NRRD, MetaImage, TIFF stacks, DICOM series),
  ``save_labels``, ``save_dicom_seg``; :mod:`anyseg.volume.window`: display windows, ``rgb_slices``.
* :mod:`anyseg.volume.session`: :class:`VolumeSession` (slices as video frames for any tracker,
  propagation both ways from the prompted slices, corrections, MedSAM2's 3D box, a label volume).

Names are imported on first use (reading volumes needs the ``medical`` extra's libraries).
"""

from __future__ import annotations

import importlib
from typing import Any, Sequence

__all__ = ["Volume", "load_volume", "VolumeSession", "segment_volume", "axis_index", "AXES"]

_LAZY = {"Volume": "anyseg.volume.base", "axis_index": "anyseg.volume.base", "AXES": "anyseg.volume.base",
         "load_volume": "anyseg.volume.io", "VolumeSession": "anyseg.volume.session"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'anyseg.volume' has no attribute {name!r}")


def segment_volume(volume: Any, slice: int | None = None, *, obj_id: int = 1, points: Any = None, labels: Any = None,
                   box: Any = None, mask: Any = None, box3d: Any = None,
                   prompts: Sequence[dict[str, Any]] | None = None, model: Any = "auto", axis: str | int = "axial",
                   window: Any = "auto", device: str | None = None, largest_component: bool = False) -> Any:
    """Segment ``volume`` (a :class:`Volume` or a path for ``load_volume``) from prompts on slices, in one call.

    One object from the keywords (``slice`` with ``points`` / ``labels`` / ``box`` / ``mask``, or a
    ``box3d``), and/or several from ``prompts``: dicts with the same keys (``slice``, ``obj_id``,
    ``points``, ``labels``, ``box``, ``mask``, ``box3d``). Propagates both ways
    (:class:`VolumeSession`) and returns the label :class:`Volume` in the input's geometry.
    """
    from anyseg.volume.base import Volume
    from anyseg.volume.session import VolumeSession

    if not isinstance(volume, Volume):
        from anyseg.volume.io import load_volume

        volume = load_volume(volume)
    items = list(prompts or [])
    if any(v is not None for v in (points, box, mask, box3d)):
        items.insert(0, {"slice": slice, "obj_id": obj_id, "points": points, "labels": labels, "box": box,
                         "mask": mask, "box3d": box3d})
    with VolumeSession(volume, model=model, axis=axis, window=window, device=device) as session:
        for p in items:
            session.add_prompt(p.get("slice"), p.get("obj_id", 1), points=p.get("points"), labels=p.get("labels"),
                               box=p.get("box"), mask=p.get("mask"), box3d=p.get("box3d"))
        return session.run().labels(largest_component=largest_component)
