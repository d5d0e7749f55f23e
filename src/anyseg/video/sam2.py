"""SAM 2 / 2.1, EdgeTAM and SAM 3's tracker as video engines, through transformers' video models.

``load_video_tracker(name)`` returns a :class:`Sam2VideoTracker` (a
:class:`anyseg.video.base.Tracker`) around ``Sam2VideoModel`` (family ``sam2``),
``EdgeTamVideoModel`` (``edgetam``) or ``Sam3TrackerVideoModel`` (``sam3_tracker``), driven
frame by frame through transformers' *streaming* interface
(``model(inference_session=..., frame_idx=t, frame=pixels, reverse=...)``): frames are read
from the :class:`~anyseg.video.frames.FrameSource` and preprocessed one at a time, never the
whole video.

Checkpoints: the video models need the memory modules (memory attention, memory encoder,
object-pointer projection, temporal encodings) that only video checkpoints hold: the hub's
``facebook/sam2.1-hiera-*`` (``model_type: sam2_video``), ``yonigozlan/EdgeTAM-hf``
(``edgetam_video``) and ``facebook/sam3`` (``sam3_video``: detector + tracker, read with the
key renaming of :data:`anyseg.models.hf.SAM3_TRACKER_KEYS`; ``sam3_tracker_video`` folders load
as they are). An image-only checkpoint (``sam2``, ``edgetam``, ``sam3_tracker``, ``sam3``) lacks
those weights, so it is refused with one line instead of tracking with random memory weights.

Preprocessing (what transformers' ``Sam2VideoProcessor`` does, without torchvision): each frame
is resized to the model's ``S x S`` input (1024, 1008 for SAM 3) without keeping the aspect
ratio (bilinear, antialiased, on [0, 1] floats), normalised with the checkpoint's
``preprocessor_config.json`` mean/std (ImageNet for SAM 2 / EdgeTAM, 0.5 for SAM 3 by default).
Click and box prompts in original pixels scale by ``S / W`` and ``S / H``; a box becomes the
two corner points labelled 2 and 3 before the clicks; a mask prompt is resized to ``S x S``
(bilinear, antialiased, >= 0.5), as the processor does. Output masks are the model's low-res
logits upsampled (bilinear) straight to the video's resolution and thresholded at 0.

Prompts and corrections: every prompted frame of an object is one of its *conditioning
frames*. A new prompt for an object on a frame it already has a prompt on replaces that prompt
(clicks are not accumulated). A prompt on a frame the object was already *tracked* on (a
correction) is decoded with the object's memory, as SAM 2 does, and then kept as a
conditioning frame (``add_all_frames_to_correct_as_cond``), so that propagation reuses it and
conditions later frames on it; a prompt on a frame never tracked is an initial conditioning
frame (decoded without memory). ``propagate`` yields, for every frame, the masks of every
object prompted so far.

Bounded memory: transformers' session keeps, by default, everything it ever computed (each
frame's pixels, outputs and ``frames_tracked_per_obj`` flags). This engine prunes it after
every frame, so that a session holds, at any time:

* per object, its **conditioning outputs** (one per prompted frame: low-res mask logits, object
  pointer, score, encoded memory) and its prompts (clicks; a mask prompt as ``S x S`` floats);
* per object, at most ``max_memory_frames`` (``K``) **non-conditioning outputs** (tracked
  frames): the ``K`` frames nearest to the current one *behind* it in the direction of
  propagation (after ``add_prompt``, the ``K`` nearest on either side). SAM 2's memory bank
  reads the ``num_maskmem - 1`` previous frames' memories and the ``max_object_pointers - 1``
  previous frames' object pointers, so the default ``K = max(num_maskmem,
  max_object_pointers_in_encoder)`` (16 for SAM 2 / 2.1 and SAM 3; 15 is the least that
  suffices) gives exactly the masks of an unpruned session in one sweep; a smaller ``K`` trades
  accuracy for memory;
* no pixel tensors between calls (a frame's pixels live only during its own step), the vision
  features of at most one frame (transformers' cache of size 1), no high-resolution
  (``S x S``) mask logits, and ``frames_tracked_per_obj`` flags only for the retained frames;
  which frames were tracked for each object (it decides whether a later prompt is a correction)
  is recorded as runs of consecutive frames (:class:`_Spans`), so it grows with the number of
  propagation calls, not frames.

Hence memory does not grow with the video's length (only with the number of prompted frames).
Restarting propagation somewhere else (e.g. after a correction) uses the conditioning frames
and whatever tracked frames are still retained near there; :meth:`Sam2VideoState.retained`
reports the counts and tensor bytes held. A step that fails (e.g. out of GPU memory) leaves no
half-made outputs behind, and a prompt whose decoding fails is undone.

EdgeTAM's RepViT backbone is built by timm (which needs torchvision): without them, loading
``edgetam`` is a one-line :class:`~anyseg.errors.ModelError`.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from anyseg.errors import InputError, ModelError, PromptError
from anyseg.models.registry import ModelSpec
from anyseg.types import Masks
from anyseg.video.base import ObjectPrompt, checked_prompt, masks_from_objects
from anyseg.video.frames import FrameSource

__all__ = ["load_video_tracker", "Sam2VideoTracker", "Sam2VideoState", "tracker_families"]

# The transformers video and session classes, the video checkpoints' model types and the key
# renaming of SAM 3's hub checkpoint are read from each family's record (anyseg.models.families:
# classes["video"], classes["video_session"], serves["video"], key_mappings).


def tracker_families() -> tuple[str, ...]:
    """The families this adapter tracks with: those whose record names a transformers video model."""
    from anyseg.models.families import VIDEO, families_with

    return tuple(f.name for f in families_with(VIDEO) if "video" in f.classes)


def _video_types(family: Any) -> tuple[str, ...]:
    """The model types of ``family``'s video checkpoints (those with the memory modules)."""
    return tuple(family.serves.get("video", family.model_types))


def load_video_tracker(name: str, weights: str | None = None, device: str | None = None, allow_download: bool = True,
                       max_memory_frames: int | None = None) -> Sam2VideoTracker:
    """A video tracker for a SAM 2 / 2.1, EdgeTAM or SAM 3 model, by registry name or local folder.

    Args:
        name: registry name (``sam2.1-hiera-tiny`` ... ``sam2.1-hiera-large``, ``edgetam``, ``sam3``)
            or the path of a local video checkpoint folder (its family from ``config.json``).
        weights: a transformers folder (``config.json`` + ``*.safetensors``) of the *video*
            checkpoint; ``None``: ``$ANYSEG_MODELS/<name>``, the Hugging Face cache, then a
            download when allowed.
        device: ``cpu``, ``cuda``, ...; default ``$ANYSEG_DEVICE`` or CUDA when available.
        allow_download: may fetch the weights from the hub when they are not local.
        max_memory_frames: tracked (non-conditioning) frames kept per object (see the module
            docstring); default ``max(num_maskmem, max_object_pointers_in_encoder)``.

    Raises:
        ModelError: not a video-capable model, an image-only checkpoint, missing weights, or
            EdgeTAM without timm.
    """
    from anyseg.models.families import VIDEO
    from anyseg.models.registry import models_with
    from anyseg.models.resolver import resolve, resolve_folder

    _check_memory_frames(max_memory_frames)
    spec = resolve(name, VIDEO) if name != "auto" else None
    mine = tracker_families()
    if spec is not None and spec.family not in mine:
        fitting = ", ".join(s.name for s in models_with(VIDEO) if s.family in mine)
        raise ModelError(f"{spec.name} is not a video tracker (SAM 2 / 2.1, EdgeTAM or SAM 3); use one of: {fitting}")
    spec, folder = resolve_folder(name, VIDEO, weights=weights, allow_download=allow_download)
    return Sam2VideoTracker.from_folder(spec, folder, device, max_memory_frames=max_memory_frames)


def _check_memory_frames(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InputError(f"max_memory_frames must be a positive integer (or None for the model's default); "
                         f"got {value!r}")


class _Spans:
    """A set of frame indices stored as sorted, disjoint, non-adjacent runs ``[lo, hi]``.

    Memory is O(runs): one sweep over the video adds one run, however long it is.
    """

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def _find(self, t: int) -> int:
        """Index of the last run starting at or before ``t`` (-1 if none)."""
        return bisect_right([r[0] for r in self.runs], t) - 1

    def __contains__(self, t: int) -> bool:
        i = self._find(t)
        return i >= 0 and self.runs[i][1] >= t

    def __len__(self) -> int:
        return len(self.runs)

    def add(self, t: int) -> None:
        runs = self.runs
        i = self._find(t)
        if i >= 0 and runs[i][1] >= t:
            return
        if i >= 0 and runs[i][1] == t - 1:
            runs[i][1] = t
        else:
            runs.insert(i + 1, [t, t])
            i += 1
        if i + 1 < len(runs) and runs[i + 1][0] == runs[i][1] + 1:  # merge with the next run
            runs[i][1] = runs[i + 1][1]
            del runs[i + 1]


@dataclass
class Sam2VideoState:
    """One video's tracking state for :class:`Sam2VideoTracker`.

    Attributes:
        frames: the video (read lazily).
        size: ``(H, W)`` of the video.
        session: the transformers inference session (pruned after every step; see the module
            docstring for what it holds).
        keep: non-conditioning outputs kept per object (``max_memory_frames``).
        tracked: per object id, the frames it was tracked on (runs of frames).
        prompted: per object id, its prompted (conditioning) frames.
    """

    frames: FrameSource
    size: tuple[int, int]
    session: Any
    keep: int
    owner: Any = field(repr=False)
    tracked: dict[int, _Spans] = field(default_factory=dict)
    prompted: dict[int, set[int]] = field(default_factory=dict)
    closed: bool = False

    @property
    def object_ids(self) -> list[int]:
        """Prompted object ids, in the order of their first prompt."""
        return [int(o) for o in self.session.obj_ids] if self.session is not None else []

    def retained(self) -> dict[str, int]:
        """What the session holds now: counts per kind, and the bytes of all its tensors.

        ``conditioning_outputs`` / ``memory_outputs``: per-frame outputs summed over objects
        (``max_memory_outputs``: the most any one object holds); ``pixel_frames``: preprocessed
        frames; ``vision_features``: frames with cached image features; ``tracked_flags``:
        transformers' per-frame tracked flags; ``tracked_runs``: runs in :attr:`tracked`;
        ``tensor_bytes``: bytes of the distinct tensor storages reachable from the session.
        """
        s = self.session
        if s is None:
            return dict(conditioning_outputs=0, memory_outputs=0, max_memory_outputs=0, pixel_frames=0,
                        vision_features=0, tracked_flags=0, tracked_runs=0, tensor_bytes=0)
        outs = s.output_dict_per_obj.values()
        mem = [len(o["non_cond_frame_outputs"]) for o in outs]
        roots = [s.output_dict_per_obj, s.point_inputs_per_obj, s.mask_inputs_per_obj, s.processed_frames,
                 s.cache._vision_features]
        return dict(
            conditioning_outputs=sum(len(o["cond_frame_outputs"]) for o in outs),
            memory_outputs=sum(mem),
            max_memory_outputs=max(mem, default=0),
            pixel_frames=len(s.processed_frames or {}),
            vision_features=len(s.cache._vision_features),
            tracked_flags=sum(len(v) for v in s.frames_tracked_per_obj.values()),
            tracked_runs=sum(len(v) for v in self.tracked.values()),
            tensor_bytes=_tensor_bytes(roots),
        )


def _tensor_bytes(roots: list[Any]) -> int:
    """Bytes of the distinct tensor storages reachable through dicts, lists and tuples."""
    import torch

    seen: set[tuple[str, int]] = set()
    total = 0
    stack = list(roots)
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            key = (str(x.device), storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return total


class Sam2VideoTracker:
    """Promptable video object segmentation with a SAM 2-style memory bank (bounded).

    Implements :class:`anyseg.video.base.Tracker`; see the module docstring for the
    preprocessing, the prompt semantics and what the state keeps.

    Attributes:
        name: the registry name; ``spec``: its :class:`~anyseg.models.registry.ModelSpec`.
        model: the transformers video model; ``device``: where it runs.
        frame_size: ``S``, the model's square input size.
        max_memory_frames: non-conditioning outputs kept per object.
    """

    def __init__(self, spec: ModelSpec, model: Any, folder: Path | None = None, device: str = "cpu",
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 max_memory_frames: int | None = None) -> None:
        import transformers

        from anyseg.models.sam import bind_model

        family = spec.family_record
        if "video" not in family.classes:
            raise ModelError(f"{spec.name} has no video model (family {spec.family!r})")
        _check_memory_frames(max_memory_frames)
        bind_model(self, spec, model, folder, device, mean, std)
        cfg = model.config
        self.frame_size = int(cfg.prompt_encoder_config.image_size)
        #: what the memory bank reads: num_maskmem - 1 previous memories, max_object_pointers - 1 previous pointers
        self.memory_frames_needed = max(int(cfg.num_maskmem), int(getattr(cfg, "max_object_pointers_in_encoder", 16)))
        self.max_memory_frames = int(max_memory_frames) if max_memory_frames is not None else self.memory_frames_needed
        self._session_cls = getattr(transformers, family.classes["video_session"])

    @classmethod
    def from_folder(cls, spec: ModelSpec, folder: Path, device: str | None = None,
                    max_memory_frames: int | None = None) -> "Sam2VideoTracker":
        """The tracker of ``spec``'s video checkpoint in a resolved weights folder (the family record's
        ``tracker`` loader); an image-only checkpoint is a one-line :class:`ModelError`."""
        from anyseg.models.hf import load_pretrained, preprocessor_normalization
        from anyseg.models.device import check_device
        from anyseg.models.weights import read_model_type

        family = spec.family_record
        if "video" not in family.classes:
            raise ModelError(f"{spec.name} has no video model (family {spec.family!r})")
        _check_memory_frames(max_memory_frames)
        family.check_requires(spec.name)
        model_type = read_model_type(folder)
        video_types = _video_types(family)
        if model_type is not None and model_type not in video_types:
            raise ModelError(
                f"{folder} holds {spec.name}'s image model (model_type {model_type!r}) without the memory modules video "
                f"tracking needs; use the video checkpoint ({spec.hub_id or 'the hub checkpoint'}, model_type "
                f"{' or '.join(video_types)})"
            )
        device = check_device(device)
        model = load_pretrained(spec, folder, family.classes["video"], device,
                                key_mapping=family.key_mappings.get(model_type))
        mean, std = preprocessor_normalization(folder, family.normalize)
        return cls(spec, model, folder=folder, device=device, mean=mean, std=std, max_memory_frames=max_memory_frames)

    @property
    def model_id(self) -> str:
        return f"{self.name}:{self.folder}" if self.folder else self.name

    # -- Tracker API ---------------------------------------------------------------------------
    def start(self, frames: Any) -> Sam2VideoState:
        """A fresh state for ``frames``: a :class:`FrameSource`, or a ``(T, H, W, 3)`` uint8 array."""
        import torch

        if not isinstance(frames, FrameSource):
            from anyseg.video.frames import ArrayFrames

            if isinstance(frames, (str, bytes)) or not hasattr(frames, "__len__"):
                raise InputError(f"expected a FrameSource (anyseg.video.frames.open_frames) or an array of frames; "
                                 f"got {type(frames).__name__}")
            frames = ArrayFrames(frames)
        h, w = frames.size
        session = self._session_cls(
            video_height=h, video_width=w, inference_device=self.device, inference_state_device=self.device,
            video_storage_device=self.device, dtype=torch.float32, max_vision_features_cache_size=1,
        )
        return Sam2VideoState(frames=frames, size=(h, w), session=session, keep=self.max_memory_frames, owner=self)

    def add_prompt(self, state: Sam2VideoState, prompt: ObjectPrompt) -> Masks:
        """Add (or replace) ``prompt.obj_id``'s prompt on ``prompt.frame``; that frame's masks of every object
        (one row per object, sorted by id, ``object_ids`` set)."""
        self._check_state(state)
        t, obj_id = checked_prompt(state.frames, prompt)
        inputs = self._prompt_inputs(state, prompt)  # validated before the session is touched
        pixels = self._pixels(state.frames[t])

        s = state.session
        new_object = obj_id not in s.obj_ids
        obj_idx = s.obj_id_to_idx(obj_id)
        undo = self._snapshot(s, obj_idx, t)
        if "point_coords" in inputs:
            s.add_point_inputs(obj_idx, t, inputs)
            s.remove_mask_inputs(obj_idx, t)
        else:
            s.add_mask_inputs(obj_idx, t, inputs["mask"])
            s.remove_point_inputs(obj_idx, t)
        outputs = s.output_dict_per_obj[obj_idx]
        outputs["cond_frame_outputs"].pop(t, None)  # a replaced prompt must not condition its replacement
        outputs["non_cond_frame_outputs"].pop(t, None)
        spans = state.tracked.setdefault(obj_id, _Spans())
        flags = s.frames_tracked_per_obj[obj_idx]
        mem = outputs["non_cond_frame_outputs"]
        reverse = (t + 1) in mem and (t - 1) not in mem  # read the memory from the side that holds it
        if t in spans:
            flags[t] = {"reverse": reverse}  # a correction: decoded with the object's memory
        else:
            flags.pop(t, None)  # an initial conditioning frame: decoded without memory
        s.obj_with_new_inputs = [obj_id]
        try:
            out = self._run(state, t, pixels, reverse)
        except BaseException:
            self._restore(state, obj_id, obj_idx, t, undo, new_object)
            raise
        finally:
            s.obj_with_new_inputs = []
        moved = outputs["non_cond_frame_outputs"].pop(t, None)
        if moved is not None:  # a correction is kept as a conditioning frame
            outputs["cond_frame_outputs"][t] = moved
        state.prompted.setdefault(obj_id, set()).add(t)
        self._after_step(state, t, 0)
        return self._masks(state, out)

    def propagate(self, state: Sam2VideoState, start: int, end: int, reverse: bool = False
                  ) -> Iterator[tuple[int, Masks]]:
        """Masks of every prompted object for frames ``start..end`` inclusive, one frame at a time.

        Forward when ``start <= end``; backward (``reverse=True``) when ``start >= end``.
        Arguments are checked when called, not when the iteration starts.
        """
        self._check_state(state)
        start, end = state.frames.check_index(start), state.frames.check_index(end)
        if not state.object_ids:
            raise PromptError("no prompts yet: add a prompt (clicks, a box or a mask on some frame) for at least one "
                              "object before propagating")
        step = -1 if reverse else 1
        if (end - start) * step < 0:
            way = "backward" if reverse else "forward"
            raise InputError(f"cannot propagate {way} from frame {start} to frame {end}"
                             + ("" if reverse else "; use reverse=True"))
        return self._propagate(state, start, end, step)

    def close(self, state: Sam2VideoState) -> None:
        """Free the session (outputs, memories, cached features); the frame source is the caller's to close."""
        if not isinstance(state, Sam2VideoState) or state.closed:
            return
        s = state.session
        if s is not None:
            s.reset_inference_session()
            s.cache.clear_all()
            s.processed_frames = None
        state.session = None
        state.tracked.clear()
        state.prompted.clear()
        state.closed = True

    # -- stepping ---------------------------------------------------------------------------------
    def _propagate(self, state: Sam2VideoState, start: int, end: int, step: int
                   ) -> Iterator[tuple[int, Masks]]:
        for t in range(start, end + step, step):
            self._check_state(state)
            out = self._run(state, t, self._pixels(state.frames[t]), step < 0)
            self._after_step(state, t, step)
            yield t, self._masks(state, out)

    def _after_step(self, state: Sam2VideoState, t: int, step: int) -> None:
        """Record who was tracked on frame ``t``, then prune the session (see the module docstring).

        ``step``: +1 / -1 while propagating forward / backward, 0 after a prompt.
        """
        s = state.session
        keep = state.keep
        for obj_idx, outputs in s.output_dict_per_obj.items():
            cond, mem = outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"]
            if t in mem:
                state.tracked.setdefault(int(s.obj_idx_to_id(obj_idx)), _Spans()).add(t)
            for store in (cond, mem):
                if t in store:
                    store[t].pop("high_res_masks", None)  # S x S logits, only needed by the memory encoder
            if len(mem) > keep:
                if step == 0:
                    order = sorted(mem, key=lambda f: (abs(f - t), f))
                else:  # frames behind the current one (in the direction of travel) first, nearest first
                    order = sorted(mem, key=lambda f: ((t - f) * step < 0, abs(f - t)))
                for f in order[keep:]:
                    del mem[f]
            flags = s.frames_tracked_per_obj.get(obj_idx)
            if flags:
                for f in [f for f in flags if f not in mem]:
                    del flags[f]
        if s.processed_frames:
            s.processed_frames.clear()

    def _run(self, state: Sam2VideoState, t: int, pixels: Any, reverse: bool) -> Any:
        """One streaming step of the model on frame ``t``; a failed step leaves no half-made outputs."""
        s = state.session
        try:
            return self.model(inference_session=s, frame_idx=t, frame=pixels, reverse=reverse)
        except BaseException:
            # outputs stored before the failure have no encoded memory yet: later frames could not read them
            for obj_idx, outputs in s.output_dict_per_obj.items():
                for store in outputs.values():
                    if t in store and "maskmem_features" not in store[t]:
                        del store[t]
                        s.frames_tracked_per_obj.get(obj_idx, {}).pop(t, None)
            if s.processed_frames:
                s.processed_frames.clear()
            raise

    @staticmethod
    def _snapshot(s: Any, obj_idx: int, t: int) -> tuple:
        outputs = s.output_dict_per_obj[obj_idx]
        return tuple(d.get(t) for d in (s.point_inputs_per_obj[obj_idx], s.mask_inputs_per_obj[obj_idx],
                                        outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"],
                                        s.frames_tracked_per_obj[obj_idx]))

    def _restore(self, state: Sam2VideoState, obj_id: int, obj_idx: int, t: int, undo: tuple, new_object: bool) -> None:
        """Undo a prompt whose decoding failed: the object's inputs and outputs on ``t`` as they were."""
        s = state.session
        if new_object and obj_idx == len(s.obj_ids) - 1:  # drop it (the last index: no other object moves)
            for d in (s.point_inputs_per_obj, s.mask_inputs_per_obj, s.output_dict_per_obj, s.frames_tracked_per_obj):
                d.pop(obj_idx, None)
            s._obj_id_to_idx.pop(obj_id, None)
            s._obj_idx_to_id.pop(obj_idx, None)
            s.obj_ids = list(s._obj_id_to_idx)
            state.tracked.pop(obj_id, None)
            return
        outputs = s.output_dict_per_obj[obj_idx]
        stores = (s.point_inputs_per_obj[obj_idx], s.mask_inputs_per_obj[obj_idx], outputs["cond_frame_outputs"],
                  outputs["non_cond_frame_outputs"], s.frames_tracked_per_obj[obj_idx])
        for d, old in zip(stores, undo):
            if old is None:
                d.pop(t, None)
            else:
                d[t] = old

    # -- pre- and postprocessing ---------------------------------------------------------------------
    def _pixels(self, frame: np.ndarray) -> Any:
        """``(3, S, S)`` float32 model input on the device: resize (bilinear, antialiased), normalise."""
        import torch
        import torch.nn.functional as F

        from anyseg.models.base import check_image

        image = check_image(frame)
        s = self.frame_size
        with torch.inference_mode():
            x = torch.tensor(image, device=self.device).permute(2, 0, 1).float().unsqueeze(0) / 255.0
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)[0]
            mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(3, 1, 1)
            return (x - mean) / std

    def _prompt_inputs(self, state: Sam2VideoState, prompt: ObjectPrompt) -> dict[str, Any]:
        """The session's inputs for ``prompt``: points (box corners first) in the model frame, or an ``S x S`` mask."""
        import torch
        import torch.nn.functional as F

        from anyseg.models.sam import Geometry

        h, w = state.size
        s = self.frame_size
        if prompt.mask is not None:  # a mask prompt replaces clicks and box (its size: checked_prompt)
            with torch.inference_mode():
                m = torch.tensor(prompt.mask.astype(np.float32), device=self.device)[None, None]
                m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
                return {"mask": (m >= 0.5).float()}
        checked = prompt.prompt  # validated by Prompt, inside the frame (checked_prompt)
        geo = Geometry.for_family(self.family, (h, w), s)
        coords: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        if checked.box is not None:
            coords.append(geo.to_model(checked.box.reshape(2, 2)))
            labels.append(np.array([2, 3]))
        if checked.points is not None:
            coords.append(geo.to_model(checked.points))
            labels.append(checked.labels)
        pts = torch.tensor(np.concatenate(coords), dtype=torch.float32, device=self.device)[None, None]
        lab = torch.tensor(np.concatenate(labels), dtype=torch.int32, device=self.device)[None, None]
        return {"point_coords": pts, "point_labels": lab}

    def _masks(self, state: Sam2VideoState, out: Any) -> Masks:
        """Low-res logits of every object -> :class:`Masks` at the video's resolution, sorted by object id."""
        import torch
        import torch.nn.functional as F

        h, w = state.size
        result: dict[int, np.ndarray] = {}
        logits = out.pred_masks
        with torch.inference_mode():
            for i, obj_id in enumerate(out.object_ids):  # one at a time: bounded memory on large videos
                x = F.interpolate(logits[i:i + 1].reshape(1, 1, *logits.shape[-2:]).float(), size=(h, w),
                                  mode="bilinear", align_corners=False)
                result[int(obj_id)] = (x[0, 0] > 0).cpu().numpy()
        return masks_from_objects(result, (h, w))

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, Sam2VideoState):
            raise InputError(f"expected the state returned by {type(self).__name__}.start; got {type(state).__name__}")
        if state.closed:
            raise InputError("this state was closed; call start() again")
        if state.owner is not self:
            raise InputError(f"this state was started by another tracker ({state.owner.name}), not by {self.name}")
