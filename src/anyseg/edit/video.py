"""Object removal in video: flow-guided filling from the neighbouring frames, then the engine.

:func:`remove_video` takes the frames and each frame's object mask (the tracker's output) and
yields one :class:`~anyseg.edit.base.EditResult` per frame, in order, holding only a sliding
window of frames. It follows the flow-guided video completion recipe of FGVC (Gao et al.,
"Flow-edge Guided Video Completion", ECCV 2020) and ProPainter's image propagation (Zhou et
al., ICCV 2023), simplified to what classical optical flow can do:

1. **holes**: each mask is grown by ``dilate`` pixels (:func:`~anyseg.edit.base.dilate_mask`,
   as for images).
2. **flow**: forward and backward optical flow between consecutive frames (OpenCV Farneback
   with OpenCV's documented parameters, or DIS at its ``MEDIUM`` preset), computed on the
   frames. Inside a hole the flow follows the object, not the background, so it is replaced by
   a smooth completion from the hole's boundary: the harmonic (Laplace) interpolation of each
   flow channel with the known flow as the boundary condition, as FGVC's ``regionfill``
   baseline completion does (FGVC's edge-guided completion needs a learned edge network; not
   followed). The flow of frame ``s`` is completed over ``s``'s hole grown by
   :data:`FLOW_MARGIN` pixels (ProPainter dilates the flow masks more than the image masks),
   solved on a coarser grid when the hole has over :data:`MAX_FILL_UNKNOWNS` pixels.
3. **propagation**: each hole pixel of frame ``t`` is traced along the chain of completed flows
   into the frames ``t +- 1 .. t +- window`` (FGVC's ``get_flowNN``: the chain goes through
   the intermediate frames' holes) until it lands on a pixel that frame shows (all four
   bilinear neighbours outside that frame's hole); its colour is sampled there once (no
   repeated resampling). A step whose forward-backward flows disagree is an occlusion and
   ends that pixel's chain: ProPainter's ``fbConsistencyCheck``, ``|f + b(x + f)|^2 <
   0.01 (|f|^2 + |b(x + f)|^2) + 0.5``. The temporally nearest frame that shows the pixel
   wins; the two directions at the same distance are averaged (FGVC blends every candidate,
   weighted; ProPainter propagates recurrently with learned fusion; neither followed).
4. **never seen**: pixels no frame of the window shows are first carried over from the
   previous *output* frame along the completed flow (consistency-checked), so content
   inpainted once (or seen before the window) stays put; what is left is inpainted by the
   engine (:func:`~anyseg.edit.base.run_inpaint`, ``dilate=0`` since the hole is already
   grown, no feathering: the seam is against propagated or original pixels). This is a
   keyframe-and-propagate scheme with every frame a potential keyframe: the engine runs only
   on the pixels nothing covers yet (``carry=False`` inpaints every frame's remainder
   independently). ProPainter fills this remainder with a transformer over the window; here
   the image engine does it, so the temporal consistency of that part is only what carrying
   gives. Carried pixels are resampled each frame (bilinear), so over many frames they blur.
5. pixels outside each frame's grown mask are bit-identical to the input (checked).

Memory: the frames ``t - window .. t + window`` (:data:`DEFAULT_WINDOW` = 5: 11 frames), their
holes, the completed flows between consecutive ones and the previous output; nothing grows
with the video's length.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from anyseg.edit.base import DEFAULT_DILATE, EditResult, InpaintEngine, dilate_mask, run_inpaint
from anyseg.errors import InputError

__all__ = ["remove_video", "optical_flow", "laplace_fill", "complete_flow", "fb_consistent", "sample",
           "FLOWS", "DEFAULT_WINDOW", "MAX_WINDOW", "FLOW_MARGIN", "MAX_FILL_UNKNOWNS"]

FLOWS = ("farneback", "dis")
#: frames looked at on each side of the current one
DEFAULT_WINDOW = 5
MAX_WINDOW = 30
#: extra pixels the flow's hole is grown by beyond the image hole: about the reach of Farneback's 15 px window and
#: its pyramid (the object's motion bleeds that far into the estimate); ProPainter grows its flow masks by 8 (RAFT)
FLOW_MARGIN = 12
#: most unknowns of one Laplace solve; larger holes are solved on a coarser grid
MAX_FILL_UNKNOWNS = 20_000
#: ProPainter's forward-backward occlusion test constants (alpha1, alpha2)
FB_ALPHA1, FB_ALPHA2 = 0.01, 0.5
_OP = "remove-video"


# -- flow ------------------------------------------------------------------------------------------
def _flow_engine(method: str) -> Any:
    import cv2

    if method == "farneback":
        def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            # OpenCV's documented example parameters (pyr 0.5, 3 levels, window 15, 3 its, poly 5 / 1.2)
            return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return run
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda a, b: dis.calc(a, b, None)
    raise InputError(f"unknown optical flow {method!r}; expected one of {', '.join(FLOWS)}")


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "farneback") -> np.ndarray:
    """``(H, W, 2)`` float32 flow from RGB frame ``a`` to ``b``: ``a(x) ~ b(x + flow(x))``."""
    return np.asarray(_flow_engine(method)(_gray(a), _gray(b)), np.float32)


def _laplace_solve(values: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The harmonic interpolation of ``values`` ``(H, W, C)`` over ``hole`` (4-neighbour
    Laplacian, known pixels as Dirichlet and the image border as Neumann boundary)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import spsolve

    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    n = len(ys)
    index = np.full(hole.shape, -1, np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, rhs, degree = [], [], np.zeros((n, values.shape[2]), np.float64), np.zeros(n)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inb = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        p, qy, qx = np.flatnonzero(inb), ny[inb], nx[inb]
        degree[p] += 1
        q = index[qy, qx]
        unknown = q >= 0
        rows.append(p[unknown])
        cols.append(q[unknown])
        np.add.at(rhs, p[~unknown], values[qy[~unknown], qx[~unknown]].astype(np.float64))
    r = np.concatenate(rows + [np.arange(n)])
    c = np.concatenate(cols + [np.arange(n)])
    v = np.concatenate([-np.ones(sum(len(x) for x in rows)), degree])
    a = csr_matrix((v, (r, c)), shape=(n, n))
    sol = np.asarray(spsolve(a, rhs)).reshape(n, -1)
    out = values.copy()
    out[ys, xs] = sol.astype(values.dtype)
    return out


def laplace_fill(values: np.ndarray, hole: np.ndarray, max_unknowns: int = MAX_FILL_UNKNOWNS) -> np.ndarray:
    """``values`` ``(H, W)`` or ``(H, W, C)`` with the ``hole`` pixels replaced by the smooth
    (harmonic) interpolation of the pixels around it; a hole of more than ``max_unknowns``
    pixels is solved on a grid coarser by an integer factor and interpolated back (bilinear).
    With nothing known, the hole is 0."""
    import cv2

    squeeze = values.ndim == 2
    vals = np.asarray(values, np.float32)[..., None] if squeeze else np.asarray(values, np.float32)
    hole = np.asarray(hole, bool)
    n = int(hole.sum())
    if n == 0 or hole.all():
        out = vals.copy()
        out[hole] = 0
        return out[..., 0] if squeeze else out
    f = int(math.ceil(math.sqrt(n / max_unknowns)))
    if f <= 1:
        out = _laplace_solve(vals, hole)
    else:
        h, w = hole.shape
        hc, wc = -(-h // f), -(-w // f)
        pv = np.pad(vals, ((0, hc * f - h), (0, wc * f - w), (0, 0)), mode="edge")
        ph = np.pad(hole, ((0, hc * f - h), (0, wc * f - w)), mode="edge")
        coarse_hole = ph.reshape(hc, f, wc, f).any(axis=(1, 3))
        coarse = pv.reshape(hc, f, wc, f, -1).mean(axis=(1, 3)).astype(np.float32)
        coarse = laplace_fill(coarse, coarse_hole, max_unknowns) if coarse_hole.any() else coarse
        up = cv2.resize(coarse, (wc * f, hc * f), interpolation=cv2.INTER_LINEAR).reshape(hc * f, wc * f, -1)
        out = vals.copy()
        out[hole] = up[:h, :w][hole]
    return out[..., 0] if squeeze else out


def complete_flow(flow: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``flow`` with its ``hole`` pixels replaced by the smooth completion from the hole's boundary."""
    return laplace_fill(flow, hole) if hole.any() else flow


def sample(image: np.ndarray, x: np.ndarray, y: np.ndarray, nearest: bool = False) -> np.ndarray:
    """``image`` (``(H, W)`` or ``(H, W, C)``) at the points ``(x, y)`` (float pixel
    coordinates), bilinear (or nearest); outside the image: 0. Returns ``(N,)`` or ``(N, C)``."""
    import cv2

    n = len(x)
    if n == 0:
        return np.zeros((0,) + image.shape[2:], np.float32)
    cols = 1024  # (cv2.remap's maps must be under 32767 in each dimension)
    rows = -(-n // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    src = image.astype(np.float32) if image.dtype != np.float32 else image
    out = cv2.remap(src, mx.reshape(rows, cols), my.reshape(rows, cols),
                    cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(rows * cols, *image.shape[2:])[:n]


def fb_consistent(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: where ``flow_ab`` (at frame a's pixels) and ``flow_ba`` (at b's) agree,
    ProPainter's / UnFlow's test ``|f + b(x + f)|^2 < 0.01 (|f|^2 + |b(x + f)|^2) + 0.5``."""
    import cv2

    h, w = flow_ab.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    back = cv2.remap(flow_ba, gx + flow_ab[..., 0], gy + flow_ab[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    diff = ((flow_ab + back) ** 2).sum(axis=2)
    mag = (flow_ab ** 2).sum(axis=2) + (back ** 2).sum(axis=2)
    return diff < FB_ALPHA1 * mag + FB_ALPHA2


# -- the window --------------------------------------------------------------------------------------
@dataclass
class _Frame:
    index: int
    image: np.ndarray  # (H, W, 3) uint8
    hole: np.ndarray  # (H, W) bool: the grown mask


@dataclass
class _Pair:
    """The completed flows between frames ``s`` and ``s + 1`` and where each is consistent."""

    fwd: np.ndarray  # s -> s + 1, at s's pixels
    bwd: np.ndarray  # s + 1 -> s, at s + 1's pixels
    ok_fwd: np.ndarray
    ok_bwd: np.ndarray


def _pair(a: _Frame, b: _Frame, flow: Any) -> _Pair:
    ga, gb = _gray(a.image), _gray(b.image)
    fwd = complete_flow(np.asarray(flow(ga, gb), np.float32), dilate_mask(a.hole, FLOW_MARGIN) if a.hole.any() else a.hole)
    bwd = complete_flow(np.asarray(flow(gb, ga), np.float32), dilate_mask(b.hole, FLOW_MARGIN) if b.hole.any() else b.hole)
    return _Pair(fwd, bwd, fb_consistent(fwd, bwd), fb_consistent(bwd, fwd))


def _trace(ys: np.ndarray, xs: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray, _Frame]]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Follow the hole pixels ``(ys, xs)`` along ``steps`` (each: the flow to the next frame,
    where it is consistent, the next frame) until a frame shows them: ``(colours (N, 3), step
    found (1-based; 0: never))``."""
    n = len(ys)
    px, py = xs.astype(np.float32), ys.astype(np.float32)
    alive = np.ones(n, bool)
    colour = np.zeros((n, 3), np.float32)
    found = np.zeros(n, np.int32)
    for k, (flow, ok, target) in enumerate(steps, start=1):
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        x, y = px[idx], py[idx]
        fl = sample(flow, x, y)
        good = sample(ok.view(np.uint8), x, y, nearest=True) > 0
        nx, ny = x + fl[:, 0], y + fl[:, 1]
        h, w = target.hole.shape
        good &= (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1)
        alive[idx[~good]] = False
        px[idx], py[idx] = nx, ny
        land = good & (sample(target.hole.view(np.uint8), nx, ny) < 1e-3)
        hit = idx[land]
        colour[hit] = sample(target.image, nx[land], ny[land])
        found[hit] = k
        alive[hit] = False
    return colour, found


@dataclass
class _Previous:
    image: np.ndarray  # the previous output, float32


def _propagate(cur: _Frame, past: list[tuple[np.ndarray, np.ndarray, _Frame]],
               future: list[tuple[np.ndarray, np.ndarray, _Frame]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ys, xs, colours, filled)`` of ``cur``'s hole from the nearest frame showing each pixel."""
    ys, xs = np.nonzero(cur.hole)
    cf, kf = _trace(ys, xs, future)
    cp, kp = _trace(ys, xs, past)
    use_f = (kf > 0) & ((kp == 0) | (kf < kp))
    use_p = (kp > 0) & ((kf == 0) | (kp < kf))
    both = (kf > 0) & (kf == kp)
    colour = np.zeros((len(ys), 3), np.float32)
    colour[use_f], colour[use_p] = cf[use_f], cp[use_p]
    colour[both] = 0.5 * (cf[both] + cp[both])
    return np.stack([ys, xs]), colour, use_f | use_p | both


def _fill_frame(cur: _Frame, past: list, future: list, prev: _Previous | None, back: _Pair | None,
                engine: InpaintEngine, carry: bool, prompt: str | None, seed: int, options: dict) -> tuple[np.ndarray, dict]:
    """The output frame for ``cur`` and its counts (module docstring, steps 3-5)."""
    out = cur.image.copy()
    counts = {"hole": int(cur.hole.sum()), "propagated": 0, "carried": 0, "inpainted": 0}
    if not counts["hole"]:
        return out, counts
    (ys, xs), colour, filled = _propagate(cur, past, future)
    out[ys[filled], xs[filled]] = np.clip(np.rint(colour[filled]), 0, 255).astype(np.uint8)
    counts["propagated"] = int(filled.sum())
    rest = ~filled
    if carry and prev is not None and back is not None and rest.any():
        ry, rx = ys[rest], xs[rest]
        fl = sample(back.bwd, rx.astype(np.float32), ry.astype(np.float32))
        ok = back.ok_bwd[ry, rx]
        nx, ny = rx + fl[:, 0], ry + fl[:, 1]
        h, w = cur.hole.shape
        ok &= (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1)
        vals = sample(prev.image, nx[ok], ny[ok])
        out[ry[ok], rx[ok]] = np.clip(np.rint(vals), 0, 255).astype(np.uint8)
        counts["carried"] = int(ok.sum())
        rest[np.flatnonzero(rest)[ok]] = False
    if rest.any():
        remaining = np.zeros(cur.hole.shape, bool)
        remaining[ys[rest], xs[rest]] = True
        res = run_inpaint(engine, out, remaining, _OP, prompt=prompt, seed=seed, dilate=0, feather=0, **options)
        out = res.image
        counts["inpainted"] = int(rest.sum())
    return out, counts


# -- the frames and masks ----------------------------------------------------------------------------
def _check_pair(i: int, frame: Any, mask: Any, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    from anyseg.models.base import check_image

    image = check_image(frame)
    if size is not None and image.shape[:2] != size:
        raise InputError(f"{_OP}: frame {i} is {image.shape[1]}x{image.shape[0]} but frame 0 is {size[1]}x{size[0]}")
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.ndim != 2 or m.shape != image.shape[:2]:
        got = "x".join(map(str, m.shape[::-1])) if m.ndim == 2 else "x".join(map(str, m.shape))
        raise InputError(f"{_OP}: the mask of frame {i} is {got} but the frame is {image.shape[1]}x{image.shape[0]}")
    m = m > 0 if m.dtype != bool else m
    if m.all():
        raise InputError(f"{_OP}: the mask of frame {i} covers the whole frame, so nothing is left to fill it from")
    return image, m


def _pairs(frames: Iterable[Any], masks: Iterable[Any]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(index, frame, mask)`` checked, lazily; a count mismatch is one line."""
    nf, nm = getattr(frames, "__len__", None), getattr(masks, "__len__", None)
    if nf is not None and nm is not None and len(frames) != len(masks):  # type: ignore[arg-type]
        raise InputError(f"{_OP}: {len(frames)} frames but {len(masks)} masks: give one mask per frame")  # type: ignore[arg-type]
    fi, mi = iter(frames), iter(masks)
    size, i, end = None, 0, object()
    while True:
        f, m = next(fi, end), next(mi, end)
        if f is end and m is end:
            if i == 0:
                raise InputError(f"{_OP}: no frames")
            return
        if f is end or m is end:
            more = "masks" if f is end else "frames"
            raise InputError(f"{_OP}: more {more} than {'frames' if f is end else 'masks'} ({i} of each, then only "
                             f"{more}): give one mask per frame")
        image, mask = _check_pair(i, f, m, size)
        size = image.shape[:2]
        yield i, image, mask
        i += 1


def _check_options(engine: Any, flow: str, window: int, prompt: str | None) -> None:
    if not isinstance(engine, InpaintEngine):
        raise InputError(f"{_OP}: the engine must be an InpaintEngine (see anyseg.edit.base); got {type(engine).__name__}")
    if flow not in FLOWS:
        raise InputError(f"unknown optical flow {flow!r}; expected one of {', '.join(FLOWS)}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not 1 <= window <= MAX_WINDOW:
        raise InputError(f"--window must be a whole number of frames in 1..{MAX_WINDOW}; got {window!r}")
    if engine.generative and not (prompt and prompt.strip()):
        raise InputError(f"{_OP}: the {engine.name} engine generates content from text: give --prompt")


def remove_video(frames: Iterable[Any], masks: Iterable[Any], engine: InpaintEngine, dilate: int = DEFAULT_DILATE,
                 flow: str = "farneback", window: int = DEFAULT_WINDOW, progress: bool = True, carry: bool = True,
                 prompt: str | None = None, seed: int = 0, **options: Any) -> Iterator[EditResult]:
    """Remove the masked object from every frame (module docstring); yields one
    :class:`EditResult` per frame, in order: the frame, its grown mask, and a record with the
    hole's size and how many of its pixels were ``propagated`` from other frames, ``carried``
    from the previous output, or ``inpainted`` by the engine. A frame whose mask is empty is
    passed through. ``frames`` and ``masks`` may be lazy (``open_frames``, a generator)."""
    from tqdm import tqdm

    from anyseg.masks.rle import encode

    _check_options(engine, flow, window, prompt)
    dilate_mask(np.zeros((1, 1), bool), dilate)  # (checks --dilate before any frame is read)
    flow_fn = _flow_engine(flow)
    total = len(frames) if hasattr(frames, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, desc=_OP, unit="frame", disable=not progress or None, leave=False, dynamic_ncols=True)
    source = _pairs(frames, masks)
    buf: deque[_Frame] = deque()  # frames t - window .. t + window
    links: deque[_Pair] = deque()  # links[k] joins buf[k] and buf[k + 1]
    prev: _Previous | None = None
    t, done = 0, False
    try:
        while True:
            while not done and (not buf or buf[-1].index < t + window):
                item = next(source, None)
                if item is None:
                    done = True
                    break
                i, image, mask = item
                buf.append(_Frame(i, image, dilate_mask(mask, dilate) if mask.any() else mask))
                if len(buf) > 1:
                    links.append(_pair(buf[-2], buf[-1], flow_fn))
            c = next((k for k, f in enumerate(buf) if f.index == t), None)
            if c is None:
                return
            started = time.perf_counter()
            cur = buf[c]
            future = [(links[k].fwd, links[k].ok_fwd, buf[k + 1]) for k in range(c, len(buf) - 1)]
            past = [(links[k - 1].bwd, links[k - 1].ok_bwd, buf[k - 1]) for k in range(c, 0, -1)]
            back = links[c - 1] if c > 0 else None
            out, counts = _fill_frame(cur, past, future, prev, back, engine, carry, prompt, seed, options)
            if not np.array_equal(out[~cur.hole], cur.image[~cur.hole]):
                raise RuntimeError(f"{_OP}: frame {t} changed outside its mask (a bug: please report it)")
            record = {"operation": _OP, "frame": t, "engine": engine.name, "model": engine.model_id, "seed": int(seed),
                      "prompt": prompt, "dilate": int(dilate), "flow": flow, "window": int(window), "carry": bool(carry),
                      **counts, "seconds": round(time.perf_counter() - started, 3), "mask": encode(cur.hole),
                      "mask_area": counts["hole"]}
            prev = _Previous(out.astype(np.float32))
            yield EditResult(out, cur.hole, record)
            bar.update(1)
            t += 1
            while buf and buf[0].index < t - window:
                buf.popleft()
                if links:
                    links.popleft()
    finally:
        bar.close()
