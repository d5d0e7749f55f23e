"""Fine-tune a SAM-family image model on the user's masks: LoRA, decoder-only or full.

The recipe (defaults and where they come from):

* **Methods.** ``lora``: peft LoRA adapters (rank ``r``, ``lora_alpha = r``, no dropout) on the
  image encoder's fused attention projections (SAM ViT: ``vision_encoder.layers.*.attn.qkv``;
  SAM 2 Hiera: ``vision_encoder.backbone.blocks.*.attn.qkv``), and with ``lora_decoder`` on the
  mask decoder's attention ``q/k/v_proj`` too. SAMed (Zhang & Liu 2023) puts LoRA on the
  encoder's q and v and trains the decoder in full; here the decoder is adapted by LoRA as
  well, so that a merged LoRA run changes only the adapted weights. ``decoder``: only the mask
  decoder trains; the image encoder and the prompt encoder are frozen, as in MedSAM's cheap
  variant ("train the mask decoder, freeze image encoder and prompt encoder"), so the image
  embeddings are computed once without gradient and cached (bounded by ``cache_bytes``).
  ``full``: every parameter trains (MedSAM's main recipe trains the encoder and decoder).
* **Optimiser.** AdamW, betas (0.9, 0.999). Learning rates: 1e-4 for ``decoder`` and ``lora``
  (MedSAM's 1e-4; SAMed's 5e-3 is for batch 12 with a 250-step warmup and a poly decay, too
  large for the small batches of one machine), 1e-5 for ``full`` (micro-sam, MedSAM 2).
  Weight decay 0.01 (MedSAM; SAM pre-training used 0.1 with batch 256). Linear warmup over
  ``min(250, steps // 20)`` steps (SAM: 250), then cosine decay to 0 (``schedule="cosine"``)
  or SAM's step decay, x0.1 at 2/3 and 8/9 of the run (``schedule="step"``).
* **Prompts per step** (:mod:`.data`): each optimiser micro-batch draws one prompt kind among
  ``box`` / ``point`` (a jittered box, or 1..``max_points`` foreground points), then
  ``rounds - 1`` corrective rounds (SAM's interactive training uses 11, micro-sam 8; 3 keeps a
  CPU step cheap): a click from the error region (with ``point``) and the previous round's
  low-res logits as the mask input (with ``mask``; detached). A single-point first round uses
  the three multimask outputs and back-propagates the best one (SAM's ambiguity rule).
* **Loss**: :func:`anyseg.finetune.losses.sam_loss`, averaged over the rounds.
* **Determinism.** ``torch.manual_seed(seed)`` before the adapters are made; the data order of
  epoch ``e`` is a permutation from ``default_rng([seed, e])`` and the prompts of step ``s`` come
  from ``default_rng([seed, 1, s])``, so a resumed run draws exactly what the uninterrupted
  one would. Checkpoints (``out_dir/checkpoints/step-N.pt``, written atomically, the last two
  kept) hold the trainable parameters, optimiser, scheduler, torch RNG and step.
* **Validation** IoU with the exact box prompt at the original resolution (SAM's postprocess),
  on ``val_dir`` (or, without one, on up to 16 training images, marked ``split="train"``),
  before training, every ``val_every`` steps or at each epoch end, and at the last step.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from anyseg.errors import InputError, ModelError
from anyseg.finetune.data import (TrainSample, corrective_click, load_samples, low_res_target, sample_box,
                                  sample_points)
from anyseg.finetune.export import lora_targets, make_trainable
from anyseg.finetune.losses import LOSSES, sam_loss
from anyseg.models.families import FAMILY_RECORDS

__all__ = ["FinetuneConfig", "TrainResult", "train", "METHODS", "DEFAULT_LR", "DEFAULT_WEIGHT_DECAY",
           "FINETUNABLE_FAMILIES", "PROMPT_KINDS", "PRECISIONS", "lora_targets"]  # lora_targets: re-exported

METHODS = ("lora", "decoder", "full")
DEFAULT_LR = {"lora": 1e-4, "decoder": 1e-4, "full": 1e-5}
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_EPOCHS = 10
PROMPT_KINDS = ("box", "point", "mask")
PRECISIONS = ("fp32", "bf16")
#: the families whose records carry the ``finetune`` trait (SAM, SAM-HQ, SAM 2), in registration order
FINETUNABLE_FAMILIES = tuple(name for name, f in FAMILY_RECORDS.items() if "finetune" in f.traits)
#: training images validated when no validation folder is given
TRAIN_VAL_IMAGES = 16
KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of a fine-tuning run (see the module docstring for the defaults' sources).

    ``steps`` are optimiser steps of ``batch * accumulate`` images; without ``steps`` the run
    lasts ``epochs`` (default 10) passes over the data.
    """

    method: str = "lora"
    lora_rank: int = 8
    lora_decoder: bool = False
    steps: int | None = None
    epochs: float | None = None
    batch: int = 2
    accumulate: int = 1
    lr: float | None = None
    weight_decay: float | None = None
    prompts: tuple[str, ...] = ("box", "point")
    max_points: int = 3
    rounds: int = 3
    precision: str = "fp32"
    seed: int = 0
    checkpoint_every: int = 100
    val_every: int | None = None
    warmup: int | None = None
    schedule: str = "cosine"
    keep_adapter: bool = False
    cache_bytes: int = 2 * 1024**3
    loss: str = "sam"

    def checked(self) -> "FinetuneConfig":
        """This config with ``prompts`` normalised, or a one-line :class:`InputError`."""
        if self.method not in METHODS:
            raise InputError(f"unknown fine-tuning method {self.method!r}; choose one of {', '.join(METHODS)}")
        prompts = tuple(dict.fromkeys(str(p).strip().lower() for p in (
            self.prompts.split(",") if isinstance(self.prompts, str) else self.prompts) if str(p).strip()))
        bad = [p for p in prompts if p not in PROMPT_KINDS]
        if bad or not {"box", "point"} & set(prompts):
            raise InputError(f"prompts must be among {', '.join(PROMPT_KINDS)} with box or point; got {list(prompts)}")
        ints = {"lora_rank": 1, "batch": 1, "accumulate": 1, "max_points": 1, "rounds": 1, "checkpoint_every": 1}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise InputError(f"{name} must be an integer >= {low}; got {v!r}")
        for name, low in (("steps", 1), ("val_every", 1), ("warmup", 0)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low):
                raise InputError(f"{name} must be an integer >= {low}; got {v!r}")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and 0 < self.epochs < 1e6):
            raise InputError(f"epochs must be a positive number; got {self.epochs!r}")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a non-negative number; got {v!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be fp32 or bf16; got {self.precision!r}")
        if self.schedule not in ("cosine", "step"):
            raise InputError(f"schedule must be cosine or step; got {self.schedule!r}")
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        return replace(self, prompts=prompts)

    @property
    def learning_rate(self) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.method])

    @property
    def decay(self) -> float:
        return float(self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY)

    def total_steps(self, n_images: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS
        return max(1, math.ceil(epochs * n_images / (self.batch * self.accumulate)))


@dataclass
class TrainResult:
    """What :func:`train` did: per-step ``history``, ``val`` IoU records, and where it wrote."""

    history: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    model_dir: Path | None = None
    steps: int = 0
    seconds: float = 0.0


# -- the model --------------------------------------------------------------------------------


def _predictor(model: Any, device: str | None) -> Any:
    """A :class:`SamFamilyPredictor` of ``model`` (name, folder or predictor), or a one-line error."""
    from anyseg.models import load_model
    from anyseg.models.sam import SamFamilyPredictor

    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device=device)
    if not isinstance(model, SamFamilyPredictor):
        name = getattr(model, "name", type(model).__name__)
        raise ModelError(f"model {name} cannot be fine-tuned: fine-tuning needs a SAM-family image model "
                         f"({', '.join(FINETUNABLE_FAMILIES)}); the classical engine has no weights to train")
    if "finetune" not in model.spec.family_record.traits:
        raise ModelError(f"fine-tuning supports the {', '.join(FINETUNABLE_FAMILIES)} families; "
                         f"{model.name} is {model.family}")
    if device is not None:
        from anyseg.models.device import check_device

        device = check_device(device)
        if device != model.device:
            model.model.to(device)
            model.device = device
    return model


def _tcat(items: list[Any]) -> Any:
    """Concatenate along the batch the same structure of tensors (tensor, list or tuple of them)."""
    import torch

    first = items[0]
    if isinstance(first, (list, tuple)):
        return type(first)(_tcat([it[i] for it in items]) for i in range(len(first)))
    return torch.cat(items, dim=0)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return int(obj.numel() * obj.element_size())


# -- one run ----------------------------------------------------------------------------------


@dataclass
class _Item:
    """A training image prepared for a step (pixel values, geometry, low-res target)."""

    pixels: Any
    geo: Any
    gt: np.ndarray
    ignore: np.ndarray | None
    target: np.ndarray
    valid: np.ndarray


class _Run:
    """The state of one :func:`train` call (model, optimiser, data, caches, records)."""

    def __init__(self, predictor: Any, samples: list[TrainSample], val: list[TrainSample], val_split: str,
                 out_dir: Path, cfg: FinetuneConfig):
        import torch

        self.p, self.samples, self.val_samples, self.val_split = predictor, samples, val, val_split
        self.out_dir, self.cfg = out_dir, cfg
        self.total = cfg.total_steps(len(samples))
        self.peft, self.params = make_trainable(predictor, cfg)
        self.hq = "hq_features" in predictor.spec.family_record.traits
        self.grad_encoder = cfg.method != "decoder"
        self.low = predictor.frame // 4
        self.cache: dict[Any, Any] = {}
        self.cache_used = 0
        self.opt = torch.optim.AdamW([p for _, p in self.params], lr=cfg.learning_rate, betas=(0.9, 0.999),
                                     weight_decay=cfg.decay)
        self.warmup = cfg.warmup if cfg.warmup is not None else min(250, self.total // 20)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.device_type = torch.device(predictor.device).type
        self.history: list[dict] = []
        self.val: list[dict] = []
        self.step = 0

    def _lr_factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        frac = (step - self.warmup) / max(1, self.total - self.warmup)
        if self.cfg.schedule == "step":
            return 1.0 if frac < 2 / 3 else (0.1 if frac < 8 / 9 else 0.01)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    # -- data ---------------------------------------------------------------------------------
    def sample_index(self, j: int) -> int:
        """The sample at position ``j`` of the run's stream of epoch permutations."""
        n = len(self.samples)
        epoch, pos = divmod(j, n)
        if getattr(self, "_perm_epoch", None) != epoch:
            self._perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def prepare(self, s: TrainSample) -> _Item:
        image, gt, ignore = s.load()
        pixels, geo = self.p.preprocess(image)
        target, valid = low_res_target(gt, ignore, geo, self.low)
        return _Item(pixels, geo, gt, ignore, target, valid)

    def encode(self, keys: list[Any], items: list[_Item], grad: bool) -> dict[str, Any]:
        """Image features of ``items`` (with gradient through the encoder when ``grad``; else
        each image's features computed once and cached, within ``cache_bytes``)."""
        import torch

        fn = getattr(type(self.p.model).get_image_embeddings, "__wrapped__", type(self.p.model).get_image_embeddings)
        if grad:
            with torch.enable_grad(), self.autocast():
                out = fn(self.p.model, torch.cat([it.pixels for it in items]).to(self.p.device))
        else:
            outs = []
            for key, it in zip(keys, items):
                o = self.cache.get(key) if key is not None else None
                if o is None:
                    with torch.no_grad(), self.autocast():
                        o = fn(self.p.model, it.pixels.to(self.p.device))
                    if key is not None and self.cache_used + _nbytes(o) <= self.cfg.cache_bytes:
                        self.cache[key] = o
                        self.cache_used += _nbytes(o)
                outs.append(o)
            out = _tcat(outs)
        if self.hq:
            return {"image_embeddings": out[0], "intermediate_embeddings": list(out[1])}
        return {"image_embeddings": out}

    def decode(self, feats: dict[str, Any], kwargs: dict[str, Any], multimask: bool) -> tuple[Any, Any]:
        """``(logits (B, M, h, w), iou (B, M))`` of one prompt per image through the model's forward."""
        with self.autocast():
            out = self.p.model(image_embeddings=feats["image_embeddings"], multimask_output=multimask,
                               **({"intermediate_embeddings": feats["intermediate_embeddings"]} if self.hq else {}),
                               **kwargs)
        return out.pred_masks[:, 0], out.iou_scores[:, 0]

    # -- one micro-batch -------------------------------------------------------------------------
    def first_prompts(self, items: list[_Item], rng: np.random.Generator) -> tuple[str, Any, Any, Any]:
        """``(kind, boxes (B, 4) or None, points (B, K, 2) or None, labels (B, K) or None)``."""
        kinds = [k for k in self.cfg.prompts if k in ("box", "point")]
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "box":
            return kind, np.stack([sample_box(it.gt, it.geo, rng) for it in items]), None, None
        k = int(rng.integers(1, self.cfg.max_points + 1))
        pts = np.stack([sample_points(it.gt, it.ignore, k, it.geo, rng) for it in items])
        return kind, None, pts, np.ones(pts.shape[:2], dtype=np.int64)

    def micro_step(self, items: list[_Item], keys: list[Any], rng: np.random.Generator) -> tuple[Any, dict]:
        """The loss of one micro-batch over the prompt rounds (not yet back-propagated)."""
        import torch

        dev = self.p.device
        feats = self.encode(keys, items, self.grad_encoder)
        target = torch.from_numpy(np.stack([it.target for it in items])).to(dev)
        valid = torch.from_numpy(np.stack([it.valid for it in items])).to(dev)
        kind, boxes, points, labels = self.first_prompts(items, rng)
        clicks = "point" in self.cfg.prompts
        rounds = self.cfg.rounds if clicks or "mask" in self.cfg.prompts else 1
        total, sums, prev = 0.0, {}, None
        for r in range(rounds):
            kw: dict[str, Any] = {}
            if boxes is not None:
                kw["input_boxes"] = torch.tensor(boxes, device=dev)[:, None]
            if points is not None:
                kw["input_points"] = torch.tensor(points, device=dev)[:, None]
                kw["input_labels"] = torch.tensor(labels, device=dev)[:, None]
            if r > 0 and "mask" in self.cfg.prompts:
                kw["input_masks"] = prev[:, None]
            multimask = r == 0 and points is not None and points.shape[1] == 1
            logits, iou = self.decode(feats, kw, multimask)
            loss, parts, best = sam_loss(logits, iou, target, valid, self.cfg.loss)
            total = total + loss / rounds
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / rounds
            prev = logits.detach().float()[torch.arange(len(items), device=dev), best]
            if clicks and r + 1 < rounds:
                points, labels = self._add_clicks(prev, items, points, labels, rng)
        return total, sums

    def _add_clicks(self, prev: Any, items: list[_Item], points: Any, labels: Any,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Append one corrective click per image (a ``-1`` "not a point" where it has no error)."""
        pred = (prev > 0).cpu().numpy()
        new_pts, new_lab = [], []
        for b, it in enumerate(items):
            click = corrective_click(pred[b], it.target, it.valid, self.p.frame, rng)
            new_pts.append(click[0] if click else np.zeros(2, np.float32))
            new_lab.append(click[1] if click else -1)
        new_pts_a = np.stack(new_pts)[:, None].astype(np.float32)
        new_lab_a = np.array(new_lab, dtype=np.int64)[:, None]
        if points is None:
            return new_pts_a, new_lab_a
        return np.concatenate([points, new_pts_a], axis=1), np.concatenate([labels, new_lab_a], axis=1)

    # -- one optimiser step --------------------------------------------------------------------
    def optimizer_step(self) -> dict:
        import torch

        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1, self.step])
        self.opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        loss_sum = 0.0
        for a in range(cfg.accumulate):
            first = (self.step * cfg.accumulate + a) * cfg.batch
            idx = [self.sample_index(first + b) for b in range(cfg.batch)]
            items = [self.prepare(self.samples[i]) for i in idx]
            loss, parts = self.micro_step(items, [("train", i) for i in idx], rng)
            if not torch.isfinite(loss):
                raise ModelError(f"the loss became {float(loss)} at step {self.step + 1}; lower the learning rate "
                                 f"(now {cfg.learning_rate:g}) or use precision fp32")
            (loss / cfg.accumulate).backward()
            loss_sum += float(loss.detach()) / cfg.accumulate
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.accumulate
        lr = float(self.opt.param_groups[0]["lr"])
        self.opt.step()
        self.sched.step()
        self.step += 1
        epoch = self.step * cfg.batch * cfg.accumulate / len(self.samples)
        return {"step": self.step, "epoch": round(epoch, 4), "loss": loss_sum, **sums, "lr": lr}

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> dict:
        """Mean IoU with the exact box prompt at the original resolution (ignored pixels excluded)."""
        import torch

        self.p.model.eval()
        ious = []
        try:
            with torch.no_grad():
                for i, s in enumerate(self.val_samples):
                    it = self.prepare(s)
                    key = None if self.grad_encoder else (self.val_split, i)  # trained encoders change
                    feats = self.encode([key], [it], grad=False)
                    box = torch.tensor(sample_box(it.gt, it.geo, None), device=self.p.device)[None, None]
                    logits, _ = self.decode(feats, {"input_boxes": box}, multimask=False)
                    pred = (self.p.upscale_logits(logits[:, :1].float(), it.geo)[0, 0] > 0).cpu().numpy()
                    keep = ~it.ignore if it.ignore is not None else np.ones(it.gt.shape, bool)
                    union = ((pred | it.gt) & keep).sum()
                    ious.append(float(((pred & it.gt) & keep).sum() / union) if union else 1.0)
        finally:
            self.p.model.train()
        return {"step": self.step, "epoch": round(self.step * self.cfg.batch * self.cfg.accumulate
                                                  / len(self.samples), 4),
                "iou": float(np.mean(ious)), "split": self.val_split, "images": len(ious)}

    def due_validation(self) -> bool:
        cfg = self.cfg
        if self.step >= self.total:
            return True
        if cfg.val_every:
            return self.step % cfg.val_every == 0
        per = cfg.batch * cfg.accumulate
        n = len(self.samples)
        return (self.step * per) // n > ((self.step - 1) * per) // n

    # -- checkpoints -----------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """What a checkpoint must agree on to be resumed (the trainable parameters' layout)."""
        return {"method": self.cfg.method, "lora_rank": self.cfg.lora_rank, "lora_decoder": self.cfg.lora_decoder,
                "model": self.p.name, "params": [[n, list(p.shape)] for n, p in self.params]}

    def save_checkpoint(self) -> Path:
        import torch

        from anyseg.finetune.export import write_checkpoint

        state = {"format": 1, "step": self.step, "fingerprint": self.fingerprint(),
                 "params": {n: p.detach().cpu().clone() for n, p in self.params},
                 "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "torch_rng": torch.get_rng_state()}
        return write_checkpoint(self.out_dir / "checkpoints", self.step, state, KEEP_CHECKPOINTS)

    def resume(self) -> bool:
        """Load the newest readable checkpoint of ``out_dir``; ``False`` when there is none."""
        import torch

        from anyseg.finetune.export import read_checkpoint

        found = read_checkpoint(self.out_dir / "checkpoints")
        if found is None:
            return False
        path, state = found
        if state.get("fingerprint") != self.fingerprint():
            raise InputError(f"the checkpoint {path} was made by another run (method, LoRA rank or model differ); "
                             f"use another output folder, or start over (--fresh; resume=False in Python)")
        with torch.no_grad():
            for n, p in self.params:
                p.copy_(state["params"][n].to(p.device))
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        return True

    # -- records ---------------------------------------------------------------------------------
    def load_history(self) -> None:
        """Keep the history lines up to the resumed step (a killed run may have written more)."""
        path = self.out_dir / "history.jsonl"
        lines = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("step", 1 << 62) <= self.step:
                    lines.append(rec)
        self.history = [r for r in lines if r.get("kind") == "train"]
        self.val = [r for r in lines if r.get("kind") == "val"]
        _write_lines(path, lines)

    def record(self, rec: dict, kind: str) -> None:
        rec = {"kind": kind, **rec}
        (self.history if kind == "train" else self.val).append(rec)
        with open(self.out_dir / "history.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


def _write_lines(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def _loop(run: _Run, progress: bool, on_step: Callable[[dict], Any] | None) -> None:
    """Optimiser steps until the end (or until ``on_step`` returns ``False``), with validation,
    checkpoints and the progress bar."""
    from tqdm.auto import tqdm

    from anyseg import cancel

    cfg = run.cfg
    bar = tqdm(total=run.total, initial=run.step, disable=None if progress else True, desc="finetune", unit="step")
    try:
        run.p.model.train()
        while run.step < run.total:
            cancel.check()
            rec = run.optimizer_step()
            run.record(rec, "train")
            postfix = {"loss": f"{rec['loss']:.4f}"}
            if run.due_validation():
                v = run.validate()
                run.record(v, "val")
            if run.val:
                postfix["val_iou"] = f"{run.val[-1]['iou']:.3f}"
            bar.set_postfix(postfix)
            bar.update(1)
            stop = on_step is not None and on_step(dict(rec)) is False
            if run.step % cfg.checkpoint_every == 0 or run.step >= run.total or stop:
                run.save_checkpoint()
            if stop:
                break
    finally:
        bar.close()
        run.p.model.eval()


def _val_samples(samples: list[TrainSample], val_dir: Any, ignore_value: Any) -> tuple[list[TrainSample], str]:
    if val_dir is not None:
        return load_samples(val_dir, ignore_value, what="validation"), "val"
    return samples[:TRAIN_VAL_IMAGES], "train"


def train(model: Any, data_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: FinetuneConfig | None = None,
          val_dir: str | os.PathLike | None = None, device: str | None = None, resume: bool = True,
          progress: bool = True, on_step: Callable[[dict], Any] | None = None,
          ignore_value: int | None | str = "auto") -> TrainResult:
    """Fine-tune ``model`` on ``data_dir`` (``images/`` + ``masks/``) and export it to ``out_dir/model``.

    Args:
        model: a registry name, a model folder, or a loaded :class:`SamFamilyPredictor` (which is
            trained in place and holds the fine-tuned weights afterwards).
        data_dir, val_dir: training / validation folders (:func:`anyseg.finetune.load_pairs`).
        out_dir: receives ``checkpoints/``, ``history.jsonl`` and the exported ``model/``.
        cfg: the options (:class:`FinetuneConfig`).
        resume: continue from the newest checkpoint in ``out_dir`` (with its optimiser state);
            ``False`` starts afresh and deletes the old checkpoints.
        on_step: called with each step's record after the step; returning ``False`` stops the
            run (a checkpoint is written and the model exported as it stands).
    Returns:
        a :class:`TrainResult`; ``model_dir`` loads with ``--model DIR``.
    """
    import torch

    from anyseg.finetune.export import export_model
    from anyseg.models.sam import share_first_layer_projections

    start = time.perf_counter()
    cfg = (cfg or FinetuneConfig()).checked()
    samples = load_samples(data_dir, ignore_value)
    val, split = _val_samples(samples, val_dir, ignore_value)
    predictor = _predictor(model, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    run = _Run(predictor, samples, val, split, out, cfg)
    resumed = resume and run.resume()
    if not resumed:
        for old in (out / "checkpoints").glob("step-*.pt"):
            old.unlink()
    run.load_history()
    if not resumed:
        run.record(run.validate(), "val")  # the base model's IoU, the curve's first point
    _loop(run, progress, on_step)
    info = {"base": str(predictor.folder or predictor.name), "family": predictor.family, "images": len(samples),
            "val_images": len(val), "val_split": split, "steps": run.step, "total_steps": run.total,
            "config": {**asdict(cfg), "lr": cfg.learning_rate, "weight_decay": cfg.decay},
            "val_iou": run.val[-1]["iou"] if run.val else None,
            "val_iou_before": run.val[0]["iou"] if run.val else None}
    model_dir = export_model(predictor, run.peft, out / "model", info, keep_adapter=cfg.keep_adapter)
    predictor._fast = None  # the fast decoder reads the (changed) decoder weights afresh
    share_first_layer_projections(predictor.model)
    for p in predictor.model.parameters():
        p.requires_grad_(False)
    return TrainResult(history=run.history, val=run.val, out_dir=out, model_dir=model_dir, steps=run.step,
                       seconds=time.perf_counter() - start)
