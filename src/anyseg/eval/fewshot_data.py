"""Few-shot evaluation data: the four layouts, the fold splits and the seeded episode plans.

An *episode* is K support images with their masks of one class and one query image of that
class (:class:`Episode`); a plan is the list of episodes a run scores, the same list for the
same data and options (``--seed``), so that a rerun resumes it. The layouts
(``--layout auto`` picks by what the folder holds, in this order):

``davis``
    DAVIS (``JPEGImages/480p/SEQ/NNNNN.jpg`` + ``Annotations/480p/SEQ/NNNNN.png``): each object of
    each sequence is a class (DAVIS 2016: one per sequence, named after it; DAVIS 2017:
    ``SEQ:ID``). Frame 0 (frames ``0..K-1`` at K shots) is the reference and every later frame
    (every ``--stride``-th) a query, segmented alone: no temporal memory.
``perseg``
    PerSeg (Personalize-SAM's data: ``Images/CLASS/*.jpg`` + ``Annotations/CLASS/*.png``): the first
    K images in name order (``00.jpg`` at 1 shot) are the references, the others the queries;
    foreground is any non-zero mask pixel, as PerSAM's ``eval_miou.py`` reads it.
``episodes``
    A COCO-20i / PASCAL-5i-style folder: ``images/NAME.jpg`` + ``masks/NAME.png`` label maps of
    class ids (0 background, 255 ignored - PASCAL's boundary band -, ``c`` = class ``c``, as
    HSNet's COCO and SegmentationClassAug masks hold them), and an optional ``fewshot.json``
    (:data:`EPISODES_FILE`, see :func:`read_episodes_folder`). Episodes are drawn as HSNet draws
    COCO-20i test episodes: a class uniformly among the fold's classes, a query uniformly among
    its images, K distinct supports among its other images; :data:`DEFAULT_EPISODES` (1000) of
    them. An image is listed under every class it shows (not one covering it entirely).
``fss``
    FSS-1000 (``CLASS/N.jpg`` + ``CLASS/N.png``; foreground = grey >= 128 as HSNet reads it): every
    image is the query of one episode, its K supports drawn among its class's other images
    (HSNet's FSS-1000 test); ``--episodes N`` draws N class-uniform episodes instead.

Fold splits (:func:`fold_split`, ``--fold F`` of the ``episodes`` layout, 4 folds): PASCAL-5i
fold ``i`` is classes ``5i+1..5i+5`` (HSNet and PFENet agree); COCO-20i fold ``i`` is classes
``{4k + i + 1 : k = 0..19}``, the interleaved split of HSNet (``build_class_ids``) that the
Matcher / PerSAM / SegGPT COCO-20i numbers use (PFENet's ``use_split_coco``); PFENet's default
COCO split is contiguous (``20i+1..20i+20``). The default is interleaved for 80 classes and
contiguous otherwise; ``fewshot.json`` may say ``"split"`` or give the folds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from anyseg.errors import InputError
from anyseg.eval.datasets import open_mask

__all__ = ["LAYOUTS", "EPISODES_FILE", "DEFAULT_EPISODES", "FOLDS", "SPLITS", "Shot", "Episode", "FewshotData",
           "detect_layout", "read_fewshot", "read_episodes_folder", "fold_split", "plan_episodes", "grey_mask",
           "label_map"]

LAYOUTS = ("davis", "perseg", "episodes", "fss")
#: the optional description of an ``episodes`` folder
EPISODES_FILE = "fewshot.json"
#: episodes of a sampled plan when ``--episodes`` is not given (HSNet's COCO-20i / PASCAL-5i test)
DEFAULT_EPISODES = 1000
FOLDS = 4
SPLITS = ("interleaved", "contiguous")
#: label value of ignored pixels in label maps and DAVIS annotations
VOID = 255
MASK_RULES = ("label", "object", "grey128", "nonzero")


@dataclass(frozen=True)
class Shot:
    """One image and the mask of one class in it.

    ``rule`` says how the mask file reads: ``label`` (a label map: pixels equal to ``value``;
    255 ignored), ``object`` (DAVIS object ids: pixels equal to ``value``; 255 ignored),
    ``grey128`` (grey >= 128, FSS-1000) or ``nonzero`` (grey > 0, PerSeg).
    """

    name: str
    image: Path
    mask: Path
    rule: str = "nonzero"
    value: int = 1

    def load_image(self) -> np.ndarray:
        from anyseg.io.images import load_image

        return load_image(self.image)

    def load_mask(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(foreground, ignored)`` ``(H, W)`` bool; ``ignored`` is ``None`` when nothing is."""
        if self.rule == "label":
            values = label_map(self.mask)
        elif self.rule == "object":
            from anyseg.eval.datasets import read_object_ids

            values = read_object_ids(self.mask)
        else:
            grey = grey_mask(self.mask)
            return (grey >= 128 if self.rule == "grey128" else grey > 0), None
        ignore = values == VOID
        return values == self.value, (ignore if ignore.any() else None)


@dataclass(frozen=True)
class Episode:
    """K supports and one query of class ``cls``; ``name`` is its row in the result store."""

    name: str
    cls: str
    supports: tuple[Shot, ...]
    query: Shot


@dataclass(frozen=True)
class FewshotData:
    """A read data set: ``classes`` maps each class name to its shots (images showing it), in order.

    ``ids`` are the class ids of the ``episodes`` layout (the fold split's input), ``folds`` its
    class names per fold, and ``fixed`` the episodes ``fewshot.json`` lists (``None``: drawn).
    """

    layout: str
    root: Path
    classes: dict[str, tuple[Shot, ...]]
    ids: dict[str, int] | None = None
    folds: tuple[tuple[str, ...], ...] | None = None
    fixed: tuple[Episode, ...] | None = None


# -- mask files --------------------------------------------------------------------------------
def grey_mask(path: str | os.PathLike) -> np.ndarray:
    """``(H, W)`` uint8 of a mask image: palette indices of 'P' images, else its grey values."""
    path = Path(path)
    im = open_mask(path)
    try:
        with im:
            if im.mode in ("P", "PA"):
                return np.asarray(im.convert("P") if im.mode == "PA" else im).astype(np.uint8)
            return np.asarray(im.convert("L"))
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read mask {path}: {e}") from None


def label_map(path: str | os.PathLike) -> np.ndarray:
    """``(H, W)`` int class ids of a label-map PNG (palette indices or grey values, one channel)."""
    path = Path(path)
    im = open_mask(path)
    try:
        with im:
            if im.mode not in ("P", "L", "I", "I;16", "1"):
                raise InputError(f"label map {path} is a {im.mode} image; expected one channel of class ids "
                                 "(a grey or palette PNG)")
            return np.asarray(im).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read label map {path}: {e}") from None


# -- layouts -----------------------------------------------------------------------------------


def detect_layout(root: Path) -> str:
    """The layout of ``root``: ``davis``, ``perseg``, ``episodes`` or ``fss`` (module docstring)."""
    if (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        return "davis"
    if (root / "Images").is_dir() and (root / "Annotations").is_dir():
        return "perseg"
    if ((root / "images").is_dir() and (root / "masks").is_dir()) or (root / EPISODES_FILE).is_file():
        return "episodes"
    if any(p.is_dir() and any(f.suffix.lower() == ".png" for f in p.iterdir()) for p in root.iterdir()):
        return "fss"
    raise InputError(f"cannot tell the few-shot layout of {root}: expected JPEGImages/ + Annotations/ (davis), "
                     "Images/ + Annotations/ (perseg), images/ + masks/ (episodes) or CLASS/N.jpg + N.png folders "
                     "(fss); or give --layout")


def _class_folders(root: Path, what: str) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"{what} folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"no class folders in {root}")
    return folders


def _pairs(images: dict[str, Path], masks: dict[str, Path], where: Path) -> list[tuple[str, Path, Path]]:
    missing = sorted(set(images) - set(masks))
    if missing:
        raise InputError(f"no mask for image {images[missing[0]].name} in {where} (pairs are matched by file stem)")
    return [(stem, images[stem], masks[stem]) for stem in images]


def read_fss(root: Path) -> FewshotData:
    """``CLASS/N.jpg`` + ``CLASS/N.png`` (FSS-1000)."""
    from anyseg.eval.datasets import IMAGE_EXTS

    classes = {}
    for folder in _class_folders(root, "data"):
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
        masks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
        images = {p.stem: p for p in files if p.suffix.lower() != ".png"}
        if not images:
            raise InputError(f"class folder {folder} has no images (expected N.jpg with N.png masks)")
        classes[folder.name] = tuple(Shot(f"{folder.name}/{s}", ip, mp, "grey128")
                                     for s, ip, mp in _pairs(images, masks, folder))
    return FewshotData("fss", root, classes)


def read_perseg(root: Path) -> FewshotData:
    """``Images/CLASS/*.jpg`` + ``Annotations/CLASS/*.png`` (PerSeg)."""
    from anyseg.eval.datasets import files_by_stem

    classes = {}
    for folder in _class_folders(root / "Images", "PerSeg Images"):
        ann = root / "Annotations" / folder.name
        pairs = _pairs(files_by_stem(folder, "image"), files_by_stem(ann, "annotation"), ann)
        classes[folder.name] = tuple(Shot(f"{folder.name}/{s}", ip, mp, "nonzero") for s, ip, mp in pairs)
    return FewshotData("perseg", root, classes)


def read_davis_classes(root: Path, resolution: str = "480p") -> FewshotData:
    """Each object of each DAVIS sequence as a class (its ids read from frame 0's annotation)."""
    from anyseg.eval.datasets import read_davis, read_object_ids

    classes = {}
    for seq in read_davis(root, resolution=resolution):
        ids = [int(i) for i in np.unique(read_object_ids(seq.annotations[0])) if i not in (0, VOID)]
        if not ids:
            raise InputError(f"sequence {seq.name}: frame 0's annotation {seq.annotations[0]} has no object")
        for obj in ids:
            name = seq.name if len(ids) == 1 else f"{seq.name}:{obj}"
            classes[name] = tuple(Shot(f"{name}/{f.stem}", f, a, "object", obj)
                                  for f, a in zip(seq.frames, seq.annotations))
    return FewshotData("davis", root, classes)


def fold_split(num_classes: int, folds: int = FOLDS, split: str | None = None) -> tuple[tuple[int, ...], ...]:
    """Class ids ``1..num_classes`` per fold: ``interleaved`` (fold i = ``{c : (c - 1) % folds == i}``,
    HSNet's COCO-20i) or ``contiguous`` (equal consecutive blocks, PASCAL-5i); ``None`` is
    interleaved for 80 classes, else contiguous."""
    if num_classes < folds:
        raise InputError(f"{num_classes} classes cannot make {folds} folds")
    split = split or ("interleaved" if num_classes == 80 else "contiguous")
    if split not in SPLITS:
        raise InputError(f"{EPISODES_FILE}: split must be one of {', '.join(SPLITS)}; got {split!r}")
    ids = range(1, num_classes + 1)
    if split == "interleaved":
        return tuple(tuple(c for c in ids if (c - 1) % folds == i) for i in range(folds))
    return tuple(tuple(c for c in ids if (c - 1) * folds // num_classes == i) for i in range(folds))


_SPEC_KEYS = {"classes", "num_classes", "folds", "split", "episodes"}


def _spec(root: Path) -> dict:
    """``fewshot.json`` of an episodes folder (``{}`` when there is none), its keys checked."""
    from anyseg.eval.datasets import read_json

    path = root / EPISODES_FILE
    if not path.exists():
        return {}
    spec = read_json(path, "few-shot description", max_bytes=256 * 1024**2)
    if not isinstance(spec, dict):
        raise InputError(f"{path} must hold a JSON object (keys: {', '.join(sorted(_SPEC_KEYS))})")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise InputError(f"{path} has unknown keys {unknown}; expected {', '.join(sorted(_SPEC_KEYS))}")
    names = spec.get("classes")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)):
        raise InputError(f"{path}: classes must be a list of class names (class id = position + 1)")
    if names is not None and len(set(names)) != len(names):
        raise InputError(f"{path}: classes has duplicate names: {sorted({n for n in names if names.count(n) > 1})}")
    return spec


def _scan_label_maps(root: Path) -> dict[int, list[Shot]]:
    """Class id -> the images showing it (not covering them entirely), from every label map."""
    from tqdm import tqdm

    from anyseg.eval.datasets import files_by_stem

    pairs = _pairs(files_by_stem(root / "images", "image"), files_by_stem(root / "masks", "mask"), root / "masks")
    present: dict[int, list[Shot]] = {}
    for stem, image, mask in tqdm(pairs, desc="reading masks", unit="mask", dynamic_ncols=True, leave=False,
                                        disable=None):
        values, counts = np.unique(label_map(mask), return_counts=True)
        total = int(counts.sum())
        for value, count in zip(values.tolist(), counts.tolist()):
            if value not in (0, VOID) and count < total:
                present.setdefault(value, []).append(Shot(stem, image, mask, "label", value))
    if not present:
        raise InputError(f"no class pixels in the label maps of {root / 'masks'} (0 is background, 255 ignored)")
    return present


def _num_classes(spec: dict, present: dict[int, list[Shot]], root: Path) -> int:
    n = spec.get("num_classes", len(spec["classes"]) if spec.get("classes") else max(present))
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n < VOID:
        raise InputError(f"{root / EPISODES_FILE}: num_classes must be an integer in 1..{VOID - 1}; got {n!r}")
    if spec.get("classes") and len(spec["classes"]) != n:
        raise InputError(f"{root / EPISODES_FILE}: {len(spec['classes'])} class names for {n} classes")
    if max(present) > n:
        shot = present[max(present)][0]
        raise InputError(f"label map {shot.mask} has class id {max(present)}, over the {n} classes (ids 1..{n}, "
                         "0 background, 255 ignored)")
    return n


def _folds(spec: dict, n: int, root: Path) -> tuple[tuple[int, ...], ...]:
    folds = spec.get("folds", FOLDS)
    if isinstance(folds, int) and not isinstance(folds, bool):
        return fold_split(n, folds, spec.get("split"))
    ok = isinstance(folds, list) and folds and all(isinstance(f, list) for f in folds)
    if not ok or not all(isinstance(c, int) and 1 <= c <= n for f in folds for c in f):
        raise InputError(f"{root / EPISODES_FILE}: folds must be a number of folds or lists of class ids in 1..{n}")
    return tuple(tuple(f) for f in folds)


def _fixed_episodes(spec: dict, present: dict[int, list[Shot]], names: dict[int, str],
                    root: Path) -> tuple[Episode, ...] | None:
    listed = spec.get("episodes")
    if listed is None:
        return None
    where = root / EPISODES_FILE
    if not isinstance(listed, list) or not listed:
        raise InputError(f"{where}: episodes must be a list of {{\"class\": ID, \"query\": NAME, \"supports\": [NAME]}}")
    by_name = {name: cid for cid, name in names.items()}
    out = []
    for i, e in enumerate(listed):
        if not isinstance(e, dict) or not isinstance(e.get("supports"), list) or not e["supports"]:
            raise InputError(f"{where}: episode {i} must be {{\"class\": ID, \"query\": NAME, \"supports\": [NAME, ...]}}")
        cid = by_name.get(e.get("class"), e.get("class"))
        shots = {s.name: s for s in present.get(cid, [])} if isinstance(cid, int) else {}
        missing = [s for s in [e.get("query"), *e["supports"]] if s not in shots]
        if missing:
            raise InputError(f"{where}: episode {i}: no image {missing[0]!r} showing class {e.get('class')!r} "
                             "(names are file stems of images/)")
        out.append(Episode(f"{i:06d}", names[cid], tuple(shots[s] for s in e["supports"]), shots[e["query"]]))
    return tuple(out)


def read_episodes_folder(root: Path) -> FewshotData:
    """``images/`` + ``masks/`` label maps and the optional ``fewshot.json``: ``{"classes": [NAME, ...]``
    (class id = position + 1; default ``class N``), ``"num_classes": N`` (default: the number of
    names, else the largest id found), ``"folds": 4`` or ``[[ids], ...]``, ``"split":
    "interleaved" | "contiguous"`` (:func:`fold_split`), ``"episodes": [{"class": ID | NAME,
    "query": STEM, "supports": [STEM, ...]}, ...]}`` (a fixed plan instead of drawn episodes)."""
    root = Path(root)
    spec = _spec(root)
    present = _scan_label_maps(root)
    n = _num_classes(spec, present, root)
    names = {c: (spec["classes"][c - 1] if spec.get("classes") else f"class {c}") for c in range(1, n + 1)}
    folds = tuple(tuple(names[c] for c in fold) for fold in _folds(spec, n, root))
    classes = {names[c]: tuple(present[c]) for c in sorted(present)}
    return FewshotData("episodes", root, classes, ids={names[c]: c for c in sorted(present)}, folds=folds,
                       fixed=_fixed_episodes(spec, present, names, root))


def plan_episodes(data: FewshotData, shots: int = 1, fold: int | None = None, episodes: int | None = None,
                  seed: int = 0, stride: int = 1) -> list[Episode]:
    """The episodes a run scores (module docstring), the same for the same arguments."""
    if fold is not None and data.folds is None:
        raise InputError(f"--fold applies to the episodes layout (COCO-20i / PASCAL-5i class folds), not {data.layout}")
    if stride != 1 and data.layout != "davis":
        raise InputError("--stride applies to the davis layout (every S-th later frame a query)")
    if episodes is not None and data.layout in ("davis", "perseg"):
        raise InputError(f"--episodes does not apply to the {data.layout} layout: its references are fixed "
                         "(the first images) and every other image is a query; use --limit N to score fewer")
    names = list(data.classes)
    if fold is not None:
        if not 0 <= fold < len(data.folds):
            raise InputError(f"--fold must be in 0..{len(data.folds) - 1}; got {fold}")
        names = [n for n in names if n in set(data.folds[fold])]
    if data.fixed is not None:
        return _fixed(data, names, shots, episodes)
    if data.layout in ("davis", "perseg"):
        return _first_shots(data, names, shots, stride)
    rng = np.random.default_rng(seed)
    if data.layout == "fss" and episodes is None:
        return _every_query(data, names, shots, rng)
    return _class_uniform(data, names, shots, DEFAULT_EPISODES if episodes is None else episodes, rng)


def _first_shots(data: FewshotData, names: Sequence[str], shots: int, stride: int) -> list[Episode]:
    out = []
    for name in names:
        items = data.classes[name]
        if len(items) <= shots:
            raise InputError(f"class {name} has {len(items)} images: {shots} shot(s) leave no query")
        refs = items[:shots]
        out += [Episode(q.name, name, refs, q) for q in items[shots::stride]]
    return out


def _supports(items: Sequence[Shot], query: int, shots: int, rng: np.random.Generator) -> tuple[Shot, ...]:
    others = [i for i in range(len(items)) if i != query]
    return tuple(items[i] for i in rng.choice(others, size=shots, replace=False))


def _eligible(data: FewshotData, names: Sequence[str], shots: int) -> list[str]:
    ok = [n for n in names if len(data.classes[n]) > shots]
    if not ok:
        raise InputError(f"no class has the {shots + 1} images {shots} shot(s) and a query need")
    return ok


def _every_query(data: FewshotData, names: Sequence[str], shots: int, rng: np.random.Generator) -> list[Episode]:
    out = []
    for name in _eligible(data, names, shots):
        items = data.classes[name]
        out += [Episode(q.name, name, _supports(items, i, shots, rng), q) for i, q in enumerate(items)]
    return out


def _class_uniform(data: FewshotData, names: Sequence[str], shots: int, n: int,
                   rng: np.random.Generator) -> list[Episode]:
    eligible = _eligible(data, names, shots)
    out = []
    for e in range(n):
        name = eligible[int(rng.integers(len(eligible)))]
        items = data.classes[name]
        q = int(rng.integers(len(items)))
        out.append(Episode(f"{e:06d}", name, _supports(items, q, shots, rng), items[q]))
    return out


def _fixed(data: FewshotData, names: Sequence[str], shots: int, episodes: int | None) -> list[Episode]:
    wanted = set(names)
    out = [e for e in data.fixed if e.cls in wanted]
    bad = next((e for e in out if len(e.supports) != shots), None)
    if bad is not None:
        raise InputError(f"{EPISODES_FILE} episode {bad.name} has {len(bad.supports)} supports but --shots is {shots}")
    if not out:
        raise InputError(f"{EPISODES_FILE} lists no episode of the chosen classes")
    return out[: episodes or None]


def read_fewshot(root: str | os.PathLike, layout: str = "auto", resolution: str = "480p") -> FewshotData:
    """The data set at ``root`` in ``layout`` (``auto``: :func:`detect_layout`)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise InputError(f"--layout must be auto or one of {', '.join(LAYOUTS)}; got {layout!r}")
    if layout == "davis":
        return read_davis_classes(root, resolution)
    if layout == "perseg":
        return read_perseg(root)
    if layout == "fss":
        return read_fss(root)
    return read_episodes_folder(root)
