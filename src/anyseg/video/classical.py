"""The ``classical`` video engine: mask propagation by dense optical flow, refined per frame (no weights).

Each step, from frame ``t-1`` to frame ``t`` (``t+1`` when propagating backward), works at a
*working resolution* (longest side <= ``max_side``, default 480: DAVIS's 854x480 runs at 480x270):

1. **Flow.** OpenCV DIS optical flow (``cv2.DISOpticalFlow_create``, preset
   ``DISOPTICAL_FLOW_PRESET_MEDIUM`` by default) on grayscale, from the *new* frame to the
   previous one (backward flow), so that every new pixel knows where it came from; and, for
   the checks below, the forward flow.
2. **Warp.** Each object's previous mask is warped along the backward flow with ``cv2.remap``
   (bilinear on the 0/1 mask, > 0.5 is in). Backward warping leaves no holes.
3. **Refine.** GrabCut on a crop around the warped mask (through the image engine's guard against
   degenerate colours, :func:`anyseg.models.classical.dither_degenerate`, which bounds the
   cut's time; :func:`anyseg.cancel.check` runs per frame and object). Labels: definite
   foreground = the warped mask eroded by the *band*, definite background = outside the warped
   mask dilated by the band, probable foreground / background in the band inside / outside the
   warped boundary. The band
   is ``band_frac * sqrt(area)`` working pixels (``band`` when given), so it scales with the
   object. Two cues relax these labels, so that the refinement can correct more than the band:

   * *motion* (``motion=True``): the object's motion and the surrounding background's are
     estimated by normalised convolution of the backward flow inside / outside the warped mask.
     Where they differ by more than ``motion_min`` pixels, a warped pixel that moves like the
     background becomes probable background (definite when the evidence is strong: this is what
     removes background wrongly carried along, which colour alone cannot when the colours are
     alike), and a pixel up to ``motion_reach`` bands outside that moves like the object
     becomes probable foreground (the object can grow faster than the band). Occluded pixels,
     where the forward and backward flows disagree (a round trip that misses by more than
     ``fb_check`` pixels), are left out of this cue.
   * *colour* (``grow_reach > 0``; off by default): background pixels up to
     ``grow_reach * sqrt(area)`` outside the warped mask whose colour is much likelier
     (log-likelihood ratio > ``grow_llr``) under the prompt frame's foreground colour model than
     its background one, and that connect to the warped mask, become probable foreground: parts
     the flow lost (thin, fast limbs) can come back, but similar colours nearby leak in.

   Colour models (GrabCut GMMs) are learnt on the prompted frame from the prompt mask and
   carried from frame to frame (``models="carry"``, updated on each frame's result; ``"freeze"``:
   the prompt frame's only; ``"frame"``: relearnt on each frame from the warped labels).
4. **Safeguards against drift.** Only the connected components of the refined mask that overlap
   the warped mask are kept (the largest one if none does); when the refined area leaves
   ``[min_ratio, max_ratio]`` x the warped area (GrabCut exploded into the background or ate the
   object), the warped mask is used instead. An object whose mask vanishes stays empty until it
   is prompted again.
5. **Several objects** are propagated independently, then a pixel claimed by two goes to the one
   whose warped (soft) mask is higher there, ties broken by the depth inside the refined mask.
   On a prompted frame the prompt masks win.

Prompts (:class:`~anyseg.video.base.ObjectPrompt`): a mask is taken as is: it is that frame's
output for the object. Clicks and/or a box become a mask on their frame with the image engine
:class:`anyseg.models.classical.ClassicalPredictor` (GrabCut); without a box, clicks correct the
object's current mask on that frame (its earlier prompt there, else its propagated mask). A
prompt on frame ``k`` restarts propagation there: it changes frame ``k`` and the frames after it
(before it, backward); earlier frames are unchanged.

Results are :class:`~anyseg.types.Masks` (one row per object, sorted by id, ``object_ids`` set).
The flow and mask cues above (motion score, colour candidates, components kept, overlaps
resolved) are pure functions in :mod:`anyseg.video.classical_cues`.

Memory is constant in the video's length: the state holds the prompts (one bit-packed mask per
prompt) and a cursor: the last processed frame's grayscale at working resolution and, per object,
its working-resolution mask and four ``(1, 65)`` GMMs, carried and prompt-frame
(:meth:`ClassicalState.nbytes`). Frames are read lazily from the
:class:`~anyseg.video.frames.FrameSource`.

Measured with ``bench/classical_davis.py`` on DAVIS 2016 val (10 sequences, defaults, 2 CPUs):
J&F-Mean 0.531 (J 0.565, F 0.498) at 0.06 s per 854x480 frame; from 0.92 (blackswan) to 0.12
(bmx-trees: the rider passes behind trees and is lost; nothing re-detects a lost object).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import cv2
import numpy as np

from anyseg import cancel
from anyseg.errors import InputError, PromptError
from anyseg.models.classical import MAX_ITERATIONS, MAX_WORK_PIXELS, dither_degenerate
from anyseg.types import Masks, Prompt
from anyseg.video.base import ObjectPrompt, checked_prompt, masks_from_objects
from anyseg.video.classical_cues import colour_candidates, disc, keep_overlapping, motion_score, resolve_overlaps
from anyseg.video.frames import FrameSource

__all__ = ["FLOW_PRESETS", "ClassicalState", "ClassicalTracker"]

#: ``flow=`` names -> OpenCV DIS optical flow presets
FLOW_PRESETS = {
    "dis": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    "dis-medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    "dis-fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "dis-ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
}
REFINERS = ("grabcut", "none")
MODEL_MODES = ("carry", "freeze", "frame")

_MIN_PIXELS = 16  # GrabCut's k-means needs a few pixels of each side
_SEED = 12345  # OpenCV's RNG seed before each GrabCut: deterministic results
_REF_SIDE = 480.0  # the motion cue's scales below are in pixels at this working size
_MOTION_SIGMA = 10.0  # normalised-convolution scale of the object / background motion estimates
_MOTION_RING = 30.0  # the background motion is estimated from this far outside the mask
_MOTION_Z = 0.5  # |z| above this: moves like the object (z > 0) or the background (z < 0)
_MOTION_STRONG = 0.8  # z below -this: definitely background


@dataclass
class _Object:
    """One object's carried state at the cursor (working resolution)."""

    mask: np.ndarray  # (h, w) bool
    bgd: np.ndarray | None = None  # (1, 65) GrabCut GMMs carried from frame to frame, None until learnt
    fgd: np.ndarray | None = None
    bgd0: np.ndarray | None = None  # the GMMs learnt on the object's last prompt (the colour cue's)
    fgd0: np.ndarray | None = None


@dataclass
class _Cursor:
    """The last processed frame: everything the next step needs, and nothing older."""

    index: int
    step: int  # +1 forward, -1 backward
    gray: np.ndarray  # (h, w) uint8 at working resolution
    objects: dict[int, _Object]


@dataclass
class ClassicalState:
    """One video's state for :class:`ClassicalTracker`.

    Attributes:
        frames: the frame source.
        size: ``(H, W)`` of the video.
        work: ``(h, w)`` working resolution.
        prompts: ``{frame: {obj_id: bit-packed (H, W) mask}}``, one entry per prompt given.
    """

    frames: FrameSource
    size: tuple[int, int]
    work: tuple[int, int]
    prompts: dict[int, dict[int, tuple[np.ndarray, tuple[int, ...]]]] = field(default_factory=dict)
    cursor: _Cursor | None = None
    closed: bool = False

    @property
    def object_ids(self) -> list[int]:
        """Every object id prompted so far, sorted."""
        return sorted({o for p in self.prompts.values() for o in p})

    def nbytes(self) -> int:
        """Bytes of array data the state holds (prompts and cursor; not the frame source's cache)."""
        n = sum(bits.nbytes for objs in self.prompts.values() for bits, _ in objs.values())
        if self.cursor is not None:
            n += self.cursor.gray.nbytes
            for ob in self.cursor.objects.values():
                n += ob.mask.nbytes + sum(a.nbytes for a in (ob.bgd, ob.fgd, ob.bgd0, ob.fgd0) if a is not None)
        return n


class ClassicalTracker:
    """Optical-flow mask propagation with per-frame GrabCut refinement (CPU, no weights).

    Implements :class:`anyseg.video.base.Tracker`; see the module docstring for the method.

    Args:
        flow: ``"dis"`` (= ``"dis-medium"``: OpenCV DIS, ``DISOPTICAL_FLOW_PRESET_MEDIUM``),
            ``"dis-fast"`` or ``"dis-ultrafast"`` (faster, less accurate).
        refine: ``"grabcut"`` (default) or ``"none"`` (the warped mask as is: flow only).
        band: width, in working pixels, of the uncertain band on each side of the warped
            boundary; ``None`` (default): ``band_frac * sqrt(object area)`` clipped to
            ``[2, max_band]``.
        band_frac: the relative band. Default 0.03 (3 pixels for a 100x100 object).
        max_band: upper limit of the relative band, in working pixels. Default 12.
        max_side: longest side of the working resolution; ``None``: the video's own (both at
            most :data:`~anyseg.models.classical.MAX_WORK_PIXELS` pixels). Default 480.
        iterations: GrabCut iterations per frame, 1 to :data:`~anyseg.models.classical.MAX_ITERATIONS`. Default 2.
        models: colour models: ``"carry"`` (default), ``"freeze"`` or ``"frame"`` (module docstring).
        fb_check: forward-backward consistency threshold, working pixels: pixels whose flow
            round trip misses by more are occluded and left out of the motion cue; ``None``
            skips the check (one flow per frame instead of two). Default 1.5.
        motion: use the motion cue (module docstring). Default True.
        motion_min: the object's and the background's motions must differ by more than this
            many working pixels per frame for the motion cue to act. Default 1.5.
        motion_reach: how far outside the warped mask, in bands, a pixel moving like the object
            may be added. Default 3.
        grow_reach: how far outside the warped mask, relative to ``sqrt(object area)``, the
            colour cue may add pixels; 0 (default) turns it off. 0.5 is a sensible value: on
            DAVIS 2016 it recovers lost limbs (libby +0.19 J&F, dog +0.07) but leaks into
            similar colours elsewhere (car-roundabout -0.21), for 0.52 J&F overall instead of
            0.53, at twice the time.
        grow_llr: the colour cue's log-likelihood-ratio threshold. Default 2.
        min_ratio, max_ratio: a refined mask whose area is outside ``[min_ratio, max_ratio]`` x
            the warped mask's is rejected for the warped mask. Defaults 0.6 and 1.6.
    """

    name = "classical"

    def __init__(self, flow: str = "dis", refine: str = "grabcut", band: int | None = None, *,
                 band_frac: float = 0.03, max_band: int = 12, max_side: int | None = 480, iterations: int = 2,
                 models: str = "carry", fb_check: float | None = 1.5, motion: bool = True, motion_min: float = 1.5,
                 motion_reach: int = 3, grow_reach: float = 0.0, grow_llr: float = 2.0, min_ratio: float = 0.6,
                 max_ratio: float = 1.6) -> None:
        if flow not in FLOW_PRESETS:
            raise InputError(f"unknown flow {flow!r}; expected one of {', '.join(FLOW_PRESETS)}")
        if refine not in REFINERS:
            raise InputError(f"unknown refine {refine!r}; expected one of {', '.join(REFINERS)}")
        if models not in MODEL_MODES:
            raise InputError(f"unknown models {models!r}; expected one of {', '.join(MODEL_MODES)}")
        if band is not None and int(band) < 1:
            raise InputError(f"band must be at least 1 pixel (or None for a relative band); got {band}")
        if not band_frac > 0 or int(max_band) < 2:
            raise InputError(f"band_frac must be > 0 and max_band >= 2; got {band_frac} and {max_band}")
        if max_side is not None and int(max_side) < 16:
            raise InputError(f"max_side must be at least 16 pixels (or None); got {max_side}")
        if not 1 <= int(iterations) <= MAX_ITERATIONS:
            raise InputError(f"iterations must be in 1..{MAX_ITERATIONS}; got {iterations}")
        if fb_check is not None and not fb_check > 0:
            raise InputError(f"fb_check must be > 0 pixels (or None); got {fb_check}")
        if not motion_min > 0 or int(motion_reach) < 1:
            raise InputError(f"motion_min must be > 0 and motion_reach >= 1; got {motion_min} and {motion_reach}")
        if not grow_reach >= 0:
            raise InputError(f"grow_reach must be >= 0 (0 turns the colour growth off); got {grow_reach}")
        if not 0 <= min_ratio < 1 < max_ratio:
            raise InputError(f"expected 0 <= min_ratio < 1 < max_ratio; got {min_ratio} and {max_ratio}")
        self.flow = flow
        self.refine = refine
        self.band = None if band is None else int(band)
        self.band_frac = float(band_frac)
        self.max_band = int(max_band)
        self.max_side = None if max_side is None else int(max_side)
        self.iterations = int(iterations)
        self.models = models
        self.fb_check = None if fb_check is None else float(fb_check)
        self.motion = bool(motion)
        self.motion_min = float(motion_min)
        self.motion_reach = int(motion_reach)
        self.grow_reach, self.grow_llr = float(grow_reach), float(grow_llr)
        self.min_ratio, self.max_ratio = float(min_ratio), float(max_ratio)
        self._dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[flow])
        self._image_engine = None

    # -- Tracker API ---------------------------------------------------------------------------
    def start(self, frames: Any) -> ClassicalState:
        """A fresh state for ``frames``: a :class:`FrameSource`, a video/folder path, or ``(T, H, W, 3)`` uint8."""
        if isinstance(frames, (str, os.PathLike)):
            from anyseg.video.frames import open_frames

            frames = open_frames(frames)
        elif not isinstance(frames, FrameSource):
            from anyseg.video.frames import ArrayFrames

            if not hasattr(frames, "__len__") or not hasattr(frames, "__getitem__"):
                raise InputError("expected a FrameSource (anyseg.video.frames.open_frames), a video path or an array "
                                 f"of frames; got {type(frames).__name__}")
            frames = ArrayFrames(frames)
        big_h, big_w = frames.size
        s = 1.0 if self.max_side is None else min(1.0, self.max_side / max(big_h, big_w))
        s = min(s, float(np.sqrt(MAX_WORK_PIXELS / (big_h * big_w))))
        work = (max(1, round(big_h * s)), max(1, round(big_w * s)))
        return ClassicalState(frames=frames, size=(big_h, big_w), work=work)

    def add_prompt(self, state: ClassicalState, prompt: ObjectPrompt) -> Masks:
        """Add or replace ``prompt.obj_id``'s prompt on ``prompt.frame``; that frame's masks of every object
        (one row per object, sorted by id, ``object_ids`` set)."""
        self._check_state(state)
        frame, obj = checked_prompt(state.frames, prompt)  # a mask prompt's size included
        if prompt.mask is not None:
            mask = prompt.mask.astype(bool)
        else:
            mask = self._mask_from_clicks(state, frame, obj, prompt)
        state.prompts.setdefault(frame, {})[obj] = _pack(mask)
        cur = state.cursor
        if cur is not None:
            if cur.index == frame:  # the cursor is on this frame: apply the prompt there, keep the rest
                self._apply_prompts(state, cur, self._work_bgr(state, frame))
            elif (cur.index - frame) * cur.step > 0:  # the cursor went past this frame: it is stale
                state.cursor = None
        return masks_from_objects(self._frame_masks(state, frame), state.size)

    def propagate(self, state: ClassicalState, start: int, end: int, reverse: bool = False
                  ) -> Iterator[tuple[int, Masks]]:
        """Masks of every object for frames ``start..end`` inclusive (``start >= end`` when ``reverse``).

        Streams one frame at a time. An object has an empty mask on the frames before its
        first prompt (in the direction of propagation).
        """
        self._check_state(state)
        start, end = state.frames.check_index(start), state.frames.check_index(end)
        if not state.prompts:
            raise PromptError("no prompts yet: add a prompt (a mask, clicks or a box on some frame) before propagating")
        step = -1 if reverse else 1
        if (end - start) * step < 0:
            hint = "" if reverse else "; use reverse=True to go backward"
            raise InputError(f"cannot propagate {'backward' if reverse else 'forward'} from frame {start} to frame {end}{hint}")
        return ((t, masks_from_objects(objects, state.size)) for t, objects in self._propagate(state, start, end, step))

    def close(self, state: ClassicalState) -> None:
        """Drop the state's prompts and cursor (the frame source is the caller's to close)."""
        state.prompts.clear()
        state.cursor = None
        state.closed = True

    # -- propagation -----------------------------------------------------------------------------
    def _propagate(self, state: ClassicalState, start: int, end: int, step: int
                   ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        cur = state.cursor
        if cur is not None and cur.step == step and cur.index in (start, start - step):
            first = cur.index  # continue from where the cursor is
        else:  # restart from the earliest frame an object needs: its last prompt at or before start
            lasts = []
            for frames_of in _prompt_frames(state).values():
                before = [f for f in frames_of if (start - f) * step >= 0]
                if before:
                    lasts.append(max(before, key=lambda f: f * step))
            first = min(lasts, key=lambda f: f * step) if lasts else start
            state.cursor = None
        t = first
        while True:
            cancel.check()  # one frame per step: a cancelled job stops here
            cur = state.cursor
            if cur is not None and cur.step == step and cur.index == t:
                pass  # already there (where this call started)
            elif t == first or (cur is not None and cur.step == step and cur.index == t - step):
                self._advance(state, t, step)
            else:  # a prompt added while streaming moved or dropped the cursor: re-anchor from the prompts
                yield from self._propagate(state, t, end, step)
                return
            if (t - start) * step >= 0:
                yield t, self._outputs(state, state.cursor)
            if t == end:
                return
            t += step

    def _advance(self, state: ClassicalState, t: int, step: int) -> None:
        """Move the cursor to frame ``t``: one step from ``t - step``, or a fresh start at ``t``."""
        bgr = self._work_bgr(state, t)
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        cur = state.cursor
        if cur is None or cur.step != step or cur.index != t - step:
            state.cursor = cur = _Cursor(index=t, step=step, gray=gray, objects={})
        else:
            self._step(cur, t, bgr, gray)
        self._apply_prompts(state, cur, bgr)

    def _step(self, cur: _Cursor, t: int, bgr: np.ndarray, gray: np.ndarray) -> None:
        """Warp and refine every object from the cursor's frame to frame ``t``."""
        live = {i: ob for i, ob in cur.objects.items() if ob.mask.any()}
        if live:
            back = self._dis.calc(gray, cur.gray, None)  # new frame -> previous frame
            h, w = gray.shape
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            map_x, map_y = gx + back[..., 0], gy + back[..., 1]
            unreliable = None
            if self.fb_check is not None and self.refine != "none":
                fwd = self._dis.calc(cur.gray, gray, None)  # previous -> new, read where each new pixel came from
                fwd_at = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                unreliable = np.hypot(back[..., 0] + fwd_at[..., 0], back[..., 1] + fwd_at[..., 1]) > self.fb_check
            soft: dict[int, np.ndarray] = {}
            refined: dict[int, np.ndarray] = {}
            for obj_id, ob in live.items():
                cancel.check()
                s = cv2.remap(ob.mask.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
                soft[obj_id] = s
                warped = s > 0.5
                if self.refine == "none" or warped.sum() < _MIN_PIXELS:
                    refined[obj_id] = warped
                else:
                    refined[obj_id] = self._refine(bgr, warped, back, unreliable, ob)
            for obj_id, mask in resolve_overlaps(refined, soft).items():
                cur.objects[obj_id].mask = mask
        cur.index, cur.gray = t, gray

    def _band(self, area: int) -> int:
        if self.band is not None:
            return self.band
        return int(np.clip(round(self.band_frac * np.sqrt(area)), 2, self.max_band))

    def _refine(self, bgr: np.ndarray, warped: np.ndarray, back: np.ndarray, unreliable: np.ndarray | None,
                ob: _Object) -> np.ndarray:
        """GrabCut in a band around the warped mask, relaxed by the flow cues, with the drift safeguards."""
        area = int(warped.sum())
        b = self._band(area)
        w8 = warped.astype(np.uint8)
        inner = cv2.erode(w8, disc(b)).astype(bool)
        outer = cv2.dilate(w8, disc(b)).astype(bool)
        labels = np.full(warped.shape, cv2.GC_BGD, np.uint8)
        labels[outer] = cv2.GC_PR_BGD
        labels[warped] = cv2.GC_PR_FGD
        labels[inner] = cv2.GC_FGD
        if self.motion:
            scale = max(warped.shape) / _REF_SIDE
            z, ok = motion_score(back, warped, _MOTION_SIGMA * scale, self.motion_min, _MOTION_RING * scale)
            if unreliable is not None:  # occlusions: the flow there says nothing about the motion
                ok &= ~unreliable
            sure_bg = warped & ok & (z < -_MOTION_STRONG)
            labels[warped & ok & (z < -_MOTION_Z)] = cv2.GC_PR_BGD
            labels[sure_bg] = cv2.GC_BGD
            reach = cv2.dilate(w8, disc(self.motion_reach * b)).astype(bool)
            grow = reach & ~warped & ok & (z > _MOTION_Z)
            if grow.any():
                labels[grow] = cv2.GC_PR_FGD
                outer |= cv2.dilate(grow.astype(np.uint8), disc(b)).astype(bool)
                labels[outer & (labels == cv2.GC_BGD) & ~sure_bg] = cv2.GC_PR_BGD
        if self.grow_reach > 0 and ob.fgd0 is not None and ob.bgd0 is not None:
            reach = max(2 * b, round(self.grow_reach * np.sqrt(area)))
            grow = colour_candidates(bgr, warped, labels, ob.fgd0, ob.bgd0, reach, self.grow_llr)
            if grow.any():
                labels[grow] = cv2.GC_PR_FGD
                ring = cv2.dilate(grow.astype(np.uint8), disc(b)).astype(bool) & (labels == cv2.GC_BGD)
                labels[ring] = cv2.GC_PR_BGD
                outer |= grow | ring
        ys, xs = np.nonzero(outer)
        m = 2 * b + 2  # a ring of definite background around the band: the local background colours
        h, w = warped.shape
        y0, y1, x0, x1 = max(0, ys.min() - m), min(h, ys.max() + 1 + m), max(0, xs.min() - m), min(w, xs.max() + 1 + m)
        sub = np.ascontiguousarray(labels[y0:y1, x0:x1])
        n_fg = int((sub & 1).sum())
        if n_fg < _MIN_PIXELS or sub.size - n_fg < _MIN_PIXELS:
            return warped
        crop = dither_degenerate(np.ascontiguousarray(bgr[y0:y1, x0:x1]))[0]  # the image engine's guard
        cv2.setRNGSeed(_SEED)
        try:
            if self.models == "frame" or ob.bgd is None or ob.fgd is None:
                bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
                cv2.grabCut(crop, sub, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            else:
                bgd, fgd = ob.bgd.copy(), ob.fgd.copy()
                mode = cv2.GC_EVAL_FREEZE_MODEL if self.models == "freeze" else cv2.GC_EVAL
                cv2.grabCut(crop, sub, None, bgd, fgd, self.iterations, mode)
        except cv2.error:
            return warped
        out = np.zeros_like(warped)
        out[y0:y1, x0:x1] = (sub & 1).astype(bool)
        out = keep_overlapping(out, warped)
        if not self.min_ratio <= out.sum() / max(1, area) <= self.max_ratio:
            return warped
        if self.models == "carry":
            ob.bgd, ob.fgd = bgd, fgd
        return out

    def _apply_prompts(self, state: ClassicalState, cur: _Cursor, bgr: np.ndarray) -> None:
        """The prompts on the cursor's frame replace those objects' masks (and their colour models)."""
        prompts = state.prompts.get(cur.index, {})
        if not prompts:
            return
        taken = np.zeros(state.work, bool)
        for obj_id, packed in prompts.items():
            mask = self._to_work(state, _unpack(packed))
            bgd, fgd = self._learn_models(bgr, mask)
            cur.objects[obj_id] = _Object(mask=mask, bgd=bgd, fgd=fgd, bgd0=bgd, fgd0=fgd)
            taken |= mask
        for obj_id, ob in cur.objects.items():
            if obj_id not in prompts:
                ob.mask = ob.mask & ~taken

    def _learn_models(self, bgr: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """GrabCut GMMs of a mask and its surroundings (about the crop the refinement will see)."""
        area = int(mask.sum())
        if area < _MIN_PIXELS or self.refine == "none":
            return None, None
        b = self._band(area)
        ys, xs = np.nonzero(mask)
        m = 3 * b + 2
        h, w = mask.shape
        y0, y1, x0, x1 = max(0, ys.min() - m), min(h, ys.max() + 1 + m), max(0, xs.min() - m), min(w, xs.max() + 1 + m)
        sub = np.where(mask[y0:y1, x0:x1], cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
        if (sub == cv2.GC_BGD).sum() < _MIN_PIXELS:
            return None, None
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.setRNGSeed(_SEED)
        try:  # zero iterations: only the GMMs' initialisation (k-means) from the labels
            cv2.grabCut(dither_degenerate(np.ascontiguousarray(bgr[y0:y1, x0:x1]))[0], sub, None, bgd, fgd, 0,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            return None, None
        return bgd, fgd

    # -- frames, sizes, outputs ------------------------------------------------------------------
    def _work_bgr(self, state: ClassicalState, index: int) -> np.ndarray:
        rgb = state.frames[index]
        h, w = state.work
        if (h, w) != state.size:
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb[..., ::-1])

    def _to_work(self, state: ClassicalState, mask: np.ndarray) -> np.ndarray:
        h, w = state.work
        if (h, w) == state.size:
            return mask.copy()
        return cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5

    def _outputs(self, state: ClassicalState, cur: _Cursor) -> dict[int, np.ndarray]:
        """Full-resolution masks of every object at the cursor: disjoint, prompts as given."""
        big_h, big_w = state.size
        prompts = state.prompts.get(cur.index, {})
        out: dict[int, np.ndarray] = {}
        ups: dict[int, np.ndarray] = {}
        for obj_id in state.object_ids:
            ob = cur.objects.get(obj_id)
            if obj_id in prompts:
                out[obj_id] = _unpack(prompts[obj_id])
            elif ob is None or not ob.mask.any():
                out[obj_id] = np.zeros((big_h, big_w), bool)
            elif state.work == state.size:
                out[obj_id] = ob.mask.copy()
            else:
                ups[obj_id] = cv2.resize(ob.mask.astype(np.float32), (big_w, big_h), interpolation=cv2.INTER_LINEAR)
        if ups:  # upsampled working masks: each pixel to the highest, never over a prompt
            taken = np.zeros((big_h, big_w), bool)
            for obj_id in prompts:
                taken |= out[obj_id]
            ids = list(ups)
            stack = np.stack([ups[i] for i in ids])
            best = stack.argmax(0) if len(ids) > 1 else np.zeros((big_h, big_w), np.intp)
            for k, obj_id in enumerate(ids):
                out[obj_id] = (stack[k] > 0.5) & (best == k) & ~taken
        return out

    def _frame_masks(self, state: ClassicalState, frame: int) -> dict[int, np.ndarray]:
        """Every object's mask on ``frame``: the cursor's if it is there, else propagated to it
        (forward from earlier prompts, or backward from later ones when there are none)."""
        cur = state.cursor
        if cur is not None and cur.index == frame:
            return self._outputs(state, cur)
        step = 1 if any(f <= frame for f, p in state.prompts.items() if p) else -1
        start = cur.index if cur is not None and cur.step == step and (frame - cur.index) * step >= 0 else frame
        masks: dict[int, np.ndarray] = {}
        for _, masks in self._propagate(state, start, frame, step):
            pass
        return masks

    def _mask_from_clicks(self, state: ClassicalState, frame: int, obj: int, prompt: ObjectPrompt) -> np.ndarray:
        """Clicks and/or a box -> a mask with the GrabCut image engine (correcting the current mask)."""
        from anyseg.models.classical import ClassicalPredictor

        prior = None
        if prompt.box is None:
            earlier = state.prompts.get(frame, {}).get(obj)
            if earlier is not None:
                prior = _unpack(earlier)
            elif obj in state.object_ids:
                prior = self._frame_masks(state, frame).get(obj)
            if prior is not None and not prior.any():
                prior = None
        if prompt.box is None and prior is None and not (prompt.labels == 1).any():
            raise PromptError(f"object {obj} has no mask on frame {frame} to correct: its first prompt needs a positive "
                              "click, a box or a mask")
        if self._image_engine is None:
            self._image_engine = ClassicalPredictor()
        engine = self._image_engine
        p = Prompt(points=prompt.points, labels=prompt.labels, box=prompt.box, mask=prior)
        return engine.predict(engine.embed(state.frames[frame]), p).masks[0].astype(bool)

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, ClassicalState):
            raise InputError(f"expected the state returned by ClassicalTracker.start; got {type(state).__name__}")
        if state.closed:
            raise InputError("this video state was closed; call start() again")


# -- helpers (the flow and mask cues: anyseg.video.classical_cues) -------------------------------
def _pack(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    return np.packbits(mask.reshape(-1)), mask.shape


def _unpack(packed: tuple[np.ndarray, tuple[int, ...]]) -> np.ndarray:
    bits, shape = packed
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def _prompt_frames(state: ClassicalState) -> dict[int, list[int]]:
    """``{obj_id: [prompted frames]}``."""
    out: dict[int, list[int]] = {}
    for f, objs in state.prompts.items():
        for o in objs:
            out.setdefault(o, []).append(f)
    return out
