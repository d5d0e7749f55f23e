"""The model in and out of a run: the trainable parts (LoRA adapters via peft, or the frozen /
unfrozen parameters), the fine-tuned model folder with its model card and the LoRA adapter, and
the checkpoint files.

``out_dir/model/`` is laid out like the base checkpoint (``config.json`` +
``model.safetensors`` + ``preprocessor_config.json``), so ``--model out_dir/model`` and
:func:`anyseg.models.load_model` load it like any other SAM-family folder. A LoRA run is merged
into the weights (peft's ``merge_and_unload``: ``W + B A * alpha / r``). With ``keep_adapter``
the adapter is also saved unmerged under ``model/adapter/`` (peft's ``adapter_config.json`` +
``adapter_model.safetensors``, with ``base_model_name_or_path`` set to the base folder), which
:func:`load_adapter` applies to the base model; the merged weights stay beside it, so that
``--model DIR`` needs nothing else (anyseg's loaders do not read adapters).

The folder is written to a temporary sibling and renamed into place, so a killed export never
leaves a half-written model. Checkpoints are written the same way (:func:`write_checkpoint`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from anyseg.errors import InputError, ModelError
from anyseg.models.sam import unshare_first_layer_projections

__all__ = ["lora_targets", "make_trainable", "export_model", "model_card", "load_adapter", "write_checkpoint",
           "read_checkpoint", "checkpoints"]


def _preprocessor_config(predictor: Any) -> dict:
    """The base folder's ``preprocessor_config.json``, or one written from the predictor's settings."""
    folder = getattr(predictor, "folder", None)
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        try:
            return json.loads((Path(folder) / "preprocessor_config.json").read_text())
        except (OSError, ValueError):
            pass
    return {"image_mean": list(predictor.mean), "image_std": list(predictor.std),
            "size": {"longest_edge": int(predictor.frame)}}


def model_card(info: dict) -> str:
    """The ``README.md`` of an exported model: base model, data, steps, validation IoU, recipe."""
    cfg = info.get("config", {})
    method = cfg.get("method", "?")

    def iou(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    rank = f" (rank {cfg.get('lora_rank')}{', + mask decoder' if cfg.get('lora_decoder') else ''})" \
        if method == "lora" else ""
    rows = [
        ("base model", info.get("base", "?")), ("family", info.get("family", "?")),
        ("method", f"{method}{rank}"), ("training images", info.get("images", "?")),
        (f"validation images ({info.get('val_split', 'val')})", info.get("val_images", "?")),
        ("steps", f"{info.get('steps', '?')} of {info.get('total_steps', '?')}"),
        ("batch x accumulate", f"{cfg.get('batch', '?')} x {cfg.get('accumulate', '?')}"),
        ("learning rate / weight decay", f"{cfg.get('lr', '?'):g} / {cfg.get('weight_decay', '?'):g}"
         if isinstance(cfg.get("lr"), float) else "?"),
        ("prompts", ", ".join(cfg.get("prompts", ()))), ("precision", cfg.get("precision", "?")),
        ("seed", cfg.get("seed", "?")),
        ("box-prompt IoU before", iou(info.get("val_iou_before"))),
        ("box-prompt IoU after", iou(info.get("val_iou"))),
        ("date", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    adapter = "\nThe LoRA adapter is kept unmerged in `adapter/` (`anyseg.finetune.load_adapter`).\n" \
        if info.get("adapter") else ""
    return (f"# Fine-tuned {info.get('family', 'SAM-family')} model\n\n"
            f"Fine-tuned with `anyseg finetune` (focal + dice + IoU-head MSE, prompts sampled from the masks).\n"
            f"Load it with `--model <this folder>` or `anyseg.models.load_model(\"<this folder>\")`.\n\n"
            f"| | |\n|---|---|\n{table}\n{adapter}\nTraining curves: `../history.jsonl`.\n")


def export_model(predictor: Any, peft_model: Any, model_dir: str | os.PathLike, info: dict,
                 keep_adapter: bool = False) -> Path:
    """Write the trained model to ``model_dir`` (LoRA merged) and return the folder.

    ``peft_model`` is the run's peft wrapper (``None`` for decoder / full runs); after the call
    ``predictor.model`` holds the merged weights.
    """
    model_dir = Path(model_dir)
    tmp = model_dir.with_name(f".{model_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = predictor.model
    if peft_model is not None:
        if keep_adapter:
            base = getattr(predictor, "folder", None)
            for conf in peft_model.peft_config.values():
                conf.base_model_name_or_path = str(Path(base).resolve()) if base else predictor.name
            peft_model.save_pretrained(str(tmp / "adapter"))
        model = peft_model.merge_and_unload()
        predictor.model = model
    model.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(predictor), indent=2))
    (tmp / "README.md").write_text(model_card({**info, "adapter": peft_model is not None and keep_adapter}))
    (tmp / "training.json").write_text(json.dumps(info, indent=2, default=str))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)
    return model_dir


def load_adapter(adapter_dir: str | os.PathLike, base: str | os.PathLike | None = None, device: str | None = None,
                 merge: bool = False) -> Any:
    """A predictor of the base model with the saved LoRA adapter applied (unmerged unless ``merge``).

    ``base`` defaults to the folder recorded in ``adapter_config.json``. The fast decoder is
    switched off for an unmerged adapter (it reads the plain decoder weights).
    """
    from anyseg.models import load_model

    adapter_dir = Path(adapter_dir)
    conf_path = adapter_dir / "adapter_config.json"
    if not conf_path.is_file():
        raise InputError(f"no LoRA adapter in {adapter_dir} (adapter_config.json missing)")
    try:
        recorded = json.loads(conf_path.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {conf_path}: {e}") from None
    if base is None and not recorded:
        raise InputError(f"{conf_path} records no base model; pass base=")
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelError("LoRA adapters need peft: pip install 'anyseg[finetune]'") from None
    predictor = load_model(base or recorded, device=device)
    wrapped = PeftModel.from_pretrained(unshare_first_layer_projections(predictor.model), str(adapter_dir))
    if merge:
        predictor.model = wrapped.merge_and_unload()
    else:
        predictor.fast_decoder = False
    predictor.model.eval()
    predictor._fast = None
    return predictor


# -- the trainable model ------------------------------------------------------------------------


def lora_targets(model: Any, decoder: bool) -> list[str]:
    """Names of the ``nn.Linear`` modules LoRA adapts: the encoder's fused ``attn.qkv``, and
    with ``decoder`` the mask decoder's attention ``q_proj`` / ``k_proj`` / ``v_proj``."""
    import torch

    out = []
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        if name.startswith("vision_encoder.") and name.endswith(".attn.qkv"):
            out.append(name)
        elif decoder and name.startswith("mask_decoder.") and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj"):
            out.append(name)
    return out


def make_trainable(predictor: Any, cfg: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """Freeze / adapt the model for ``cfg.method``: ``(peft model or None, trainable named parameters)``."""
    import torch

    model = unshare_first_layer_projections(predictor.model)
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = None
    if cfg.method == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ModelError("LoRA fine-tuning needs peft: pip install 'anyseg[finetune]'") from None
        targets = lora_targets(model, cfg.lora_decoder)
        if not targets:
            raise ModelError(f"{predictor.name} has no attention projections LoRA can adapt")
        torch.manual_seed(cfg.seed)
        config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, target_modules=targets, lora_dropout=0.0,
                            bias="none")
        peft_model = get_peft_model(model, config)  # injects the adapters into ``model`` in place
    elif cfg.method == "decoder":
        for p in model.mask_decoder.parameters():
            p.requires_grad_(True)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return peft_model, params


# -- checkpoints --------------------------------------------------------------------------------


def checkpoints(folder: Path) -> list[Path]:
    """The checkpoint files of ``folder``, oldest first."""
    return sorted(Path(folder).glob("step-*.pt"))


def write_checkpoint(folder: Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` as ``folder/step-N.pt`` atomically (temporary file, fsync, rename); keep the last ``keep``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = folder / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(folder: Path) -> tuple[Path, dict] | None:
    """``(path, state)`` of the newest checkpoint that loads (tensors only), or ``None``."""
    import torch

    for path in reversed(checkpoints(folder)):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a torn or foreign file: try the previous one
            continue
    return None
