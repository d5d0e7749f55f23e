"""Domain adaptation of SAM-family image models: fine-tuning on the user's masks (issue 20).

``train(model, data_dir, out_dir, FinetuneConfig(method="lora"|"decoder"|"full", ...))`` samples
prompts from the masks, trains with SAM's loss, checkpoints and resumes, validates, and exports
a folder that ``--model DIR`` loads. See :mod:`anyseg.finetune.train` for the recipe. Pseudo-labels
from sparse labels (WS-SAM): ``from anyseg.finetune.pseudolabel import pseudolabel`` (the module keeps
its own name here, so that it is not shadowed by the function).
"""

from __future__ import annotations

from anyseg.finetune.data import load_pairs, load_samples
from anyseg.finetune.export import export_model, load_adapter
from anyseg.finetune.train import FinetuneConfig, TrainResult, train

__all__ = ["FinetuneConfig", "TrainResult", "train", "load_pairs", "load_samples", "export_model", "load_adapter"]
