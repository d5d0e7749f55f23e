"""Evaluation engines built from the public loaders: eval depends on video, tasks and models.

Nothing below eval registers itself here; :func:`register_video_engines` and
:func:`register_semantic_engines` fill :data:`anyseg.eval.runners.VIDEO_ENGINES` /
:data:`~anyseg.eval.runners.SEMANTIC_ENGINES` when ``anyseg eval video`` / ``semantic`` runs:

* video (``anyseg eval video --model NAME``): ``classical`` (optical flow + GrabCut,
  :func:`davis_engine`) and every registered model that can track (SAM 2 / 2.1, EdgeTAM,
  SAM 3), each through :func:`anyseg.video.session.load_tracker`, run as DAVIS semi-supervised
  VOS defines it (:func:`tracker_engine`);
* semantic (``anyseg eval semantic --model NAME[:METHOD]``): ``auto`` and every text model of
  :data:`anyseg.tasks.text.AUTO_SEMANTIC_ORDER`, through
  :func:`anyseg.tasks.text.load_semantic_backend`; CLIP names (and ``auto``) also as
  ``NAME:sclip``, ``NAME:maskclip`` and ``NAME:masks``.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from anyseg.eval.runners import SemanticEngine, VideoEngine, register_semantic_engine, register_video_engine

__all__ = ["tracker_engine", "davis_engine", "tracker_model_engine", "register_video_engines", "semantic_engine",
           "register_semantic_engines"]


# -- video -------------------------------------------------------------------------------------------
def tracker_engine(tracker: Any) -> VideoEngine:
    """A :data:`~anyseg.eval.runners.VideoEngine` from a tracker: semi-supervised VOS as DAVIS
    defines it (the first frame's ground-truth masks are the prompts; forward to the end). The
    tracker's :class:`~anyseg.types.Masks` become the runners' ``{obj_id: (H, W) bool}``."""
    from anyseg.video.base import ObjectPrompt, masks_by_object
    from anyseg.video.frames import PathFrames

    def engine(sample: Any, first: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        frames = PathFrames(sample.name, sample.frames)
        state = tracker.start(frames)
        try:
            for obj_id, mask in sorted(first.items()):
                tracker.add_prompt(state, ObjectPrompt.of(0, int(obj_id), mask=mask))
            for index, masks in tracker.propagate(state, 0, len(frames) - 1):
                yield index, masks_by_object(masks)  # the runners' {obj_id: mask} per frame
        finally:
            tracker.close(state)
            frames.close()

    return engine


def davis_engine(model_name: str = "classical", weights: str | None = None, device: str | None = None,
                 **options: Any) -> VideoEngine:
    """The ``classical`` video engine: the first frame's masks as prompts, then forward propagation.

    ``model_name`` is the engine's name (the factory signature of
    :data:`~anyseg.eval.runners.VIDEO_ENGINES`); ``options`` go to
    :class:`~anyseg.video.classical.ClassicalTracker` (the defaults are what ``anyseg eval
    video --model classical`` runs). The classical engine has no weights and runs on the CPU:
    ``--weights`` is an error, a ``--device`` other than ``cpu`` too (never silently ignored).
    """
    from anyseg.errors import InputError
    from anyseg.video.classical import ClassicalTracker

    if weights is not None:
        raise InputError("the classical video engine has no weights: --weights goes with a tracking model")
    if device not in (None, "cpu"):
        raise InputError(f"the classical video engine runs on the CPU; got --device {device}")

    return tracker_engine(ClassicalTracker(**options))


def tracker_model_engine(name: str, weights: str | None = None, device: str | None = None) -> VideoEngine:
    """The video engine of the tracking model ``name`` (a registry name or a local folder), with
    ``--weights`` and ``--device`` (:func:`anyseg.video.session.load_tracker`)."""
    from anyseg.video.session import load_tracker

    return tracker_engine(load_tracker(name, weights=weights, device=device))


def register_video_engines() -> None:
    """Every model that can track is an ``anyseg eval video --model NAME`` engine."""
    from anyseg.models.families import VIDEO
    from anyseg.models.registry import models_with

    register_video_engine("classical", davis_engine)
    for spec in models_with(VIDEO):  # the family records say which models can track
        if spec.needs_weights:  # the weights-free baseline is the classical engine above
            register_video_engine(spec.name, tracker_model_engine)


# -- semantic ----------------------------------------------------------------------------------------
def semantic_engine(model: str, class_names: Sequence[str], weights: str | None = None,
                    device: str | None = None) -> SemanticEngine:
    """``anyseg eval semantic --model NAME[:METHOD]``: a class map over the data set's class names."""
    from anyseg.tasks.text import load_semantic_backend, semantic_map
    from anyseg.text.vocab import parse_classes

    classes = parse_classes(list(class_names), "data set classes")
    model_name, _, method = model.partition(":")
    backend = load_semantic_backend(model_name or "auto", method=method or "sclip", weights=weights, device=device)

    def engine(image: np.ndarray) -> np.ndarray:
        return semantic_map(image, classes, backend)

    return engine


def register_semantic_engines() -> None:
    """Make every text-capable model an ``anyseg eval semantic`` engine (``NAME`` or ``NAME:METHOD``)."""
    from anyseg.tasks.text import AUTO_SEMANTIC_ORDER, DENSE_METHODS

    for name in ("auto", *AUTO_SEMANTIC_ORDER):
        register_semantic_engine(name, semantic_engine)
        if name.startswith("clip") or name == "auto":
            for method in (*DENSE_METHODS, "masks"):
                register_semantic_engine(f"{name}:{method}", semantic_engine)
