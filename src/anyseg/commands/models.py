"""``anyseg models list`` / ``pull`` / ``convert``: the registry, which weights are present, downloading
them, and converting original SAM / SAM 2 checkpoints (:mod:`anyseg.models.convert`)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run", "list_models", "pull_model", "convert_model"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``models`` and its actions (``list``, ``pull``, ``convert``) to the ``anyseg`` sub-commands."""
    models = sub.add_parser("models", help="list, download or convert models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(models))
    msub.required = True
    mlist = msub.add_parser("list", help="registered models and whether their weights are present locally")
    mlist.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = msub.add_parser("pull", help="download a model's weights into the Hugging Face cache")
    pull.add_argument("name", help="registry name (see `anyseg models list`)")
    conv = msub.add_parser("convert", help="convert an original SAM / SAM 2 / SAM 2.1 checkpoint (.pt/.pth) into a "
                                           "transformers folder (config.json + model.safetensors)")
    conv.add_argument("checkpoint", metavar="CHECKPOINT",
                      help="the original checkpoint (read with torch.load(weights_only=True) only)")
    conv.add_argument("--family", required=True, choices=("sam", "sam2"),
                      help="sam: segment-anything (SAM, MedSAM); sam2: SAM 2 / SAM 2.1 (MedSAM2)")
    conv.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    conv.add_argument("--config", metavar="NAME|PATH", default=None,
                      help="the architecture: a name (sam-vit-base/-large/-huge, medsam, sam2.1-hiera-tiny/-small/"
                           "-base-plus/-large, sam2-hiera-*, medsam2) or a folder / config.json of a transformers "
                           "config; default: inferred from the checkpoint's shapes at 1024 px (MedSAM2 needs medsam2)")
    conv.add_argument("--force", action="store_true", help="overwrite the weights and configs in a non-empty --out")
    return models


def run(args: argparse.Namespace) -> int:
    """Dispatch ``anyseg models ACTION``."""
    return {"list": list_models, "pull": pull_model, "convert": convert_model}[args.models_command](args)


def list_models(args: argparse.Namespace) -> int:
    """Every registered model with its weights' presence: a table, or JSON with ``--json``."""
    from anyseg.models import model_status
    from anyseg.models.registry import REGISTRY

    rows = [model_status(name) for name in REGISTRY]
    if args.json:
        print(json.dumps([
            {"name": s.spec.name, "family": s.spec.family, "params_m": s.spec.params_m, "source": s.spec.hub_id,
             "present": s.present, "location": s.location or None} for s in rows
        ], indent=2))
        return 0
    sources = [s.spec.hub_id or "OpenCV (no weights)" for s in rows]
    width = max(34, *(len(src) for src in sources))  # the columns stay aligned for long hub ids
    fam = max(15, *(len(s.spec.family) for s in rows))
    name = max(24, *(len(s.spec.name) for s in rows))
    print(f"{'name':<{name}} {'family':<{fam}} {'params':>8}  {'source':<{width}} present")
    for s, source in zip(rows, sources):
        params = f"{s.spec.params_m:.1f}M" if s.spec.params_m else "-"
        present = "yes (builtin)" if s.source == "builtin" else (f"yes ({s.source})" if s.present else "no")
        print(f"{s.spec.name:<{name}} {s.spec.family:<{fam}} {params:>8}  {source:<{width}} {present}")
    return 0


def pull_model(args: argparse.Namespace) -> int:
    """Download ``args.name``'s weights, unless it needs none or they are present already."""
    from anyseg.models import weights
    from anyseg.models.registry import get_spec

    spec = get_spec(args.name)
    if not spec.needs_weights:
        print(f"{spec.name} needs no weights", file=sys.stderr)
        return 0
    local = weights.resolve_local(spec)
    if local is not None:
        print(f"{spec.name} is already present ({local[1]}): {local[0]}")
        return 0
    folder = weights.download(spec, pulling=True)
    print(f"{spec.name} downloaded: {folder}")
    return 0


def convert_model(args: argparse.Namespace) -> int:
    """Convert ``args.checkpoint`` into the transformers folder ``args.out`` (every key and shape checked)."""
    from anyseg.models.convert import convert_checkpoint

    done = convert_checkpoint(args.checkpoint, args.family, args.out, config=args.config, force=args.force)
    print(f"converted {done['tensors']} tensors ({done['parameters'] / 1e6:.1f}M parameters, {done['config']}, "
          f"{done['image_size']} px, model_type {done['model_type']}): {done['out']}")
    if done["note"]:
        print(f"anyseg: note: {done['note']}", file=sys.stderr)
    return 0
