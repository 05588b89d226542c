"""What a fit is made of: FitParts, the settings object of training/loop.py's Fit (cached training and
fine-tuning each build one, by name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..answers import Vocabulary
from ..recipes import TrainRecipe


@dataclass(frozen=True, kw_only=True)
class FitParts:
    """What a Fit is made of (CachedFit and FinetuneFit build it, by name)."""

    recipe: TrainRecipe
    run_dir: Path
    device: torch.device
    splits: dict  # {"train": Split, "val": Split} (splits.py)
    vocab: Vocabulary
    model: torch.nn.Module  # called as model(image batch, question batch); wrapped by DDP under torchrun
    head: torch.nn.Module  # the head, whose state is a checkpoint's "model"
    image: Any  # what a split's image rows index (batches.py): a tensor, an ImageStream, or Rows
    question: Any  # ... and its question rows
    cache_keys: dict
    head_config: dict
    param_groups: list[dict]  # the optimizer's parameter groups (their lr named by Fit.lr_names)
    config: dict  # config.json, as the subclass made it
    accumulate: int = 1  # batches per optimizer step
    eval_batch_size: int = 1024
    group_by_image: bool = False  # under torchrun, cut the global batch between images (finetune)
