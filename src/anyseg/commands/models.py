"""``anyseg models list`` / ``pull``: the registry, which weights are present, and downloading them."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run", "list_models", "pull_model"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``models`` and its actions (``list``, ``pull``) to the ``anyseg`` sub-commands."""
    models = sub.add_parser("models", help="list or download models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(models))
    msub.required = True
    mlist = msub.add_parser("list", help="registered models and whether their weights are present locally")
    mlist.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = msub.add_parser("pull", help="download a model's weights into the Hugging Face cache")
    pull.add_argument("name", help="registry name (see `anyseg models list`)")
    return models


def run(args: argparse.Namespace) -> int:
    """Dispatch ``anyseg models ACTION``."""
    return {"list": list_models, "pull": pull_model}[args.models_command](args)


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
