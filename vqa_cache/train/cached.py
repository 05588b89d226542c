"""`vqa-cache train`: a fusion head trained on cached features, by the one fit loop (loop.py)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import distributed as dist
from .. import heads
from ..cache.reader import ImageStream
from ..device import pick_device
from ..recipes import TrainRecipe
from .features import Features, load_features
from .loop import Fit, run_fit
from .run_dir import run_config, run_directory
from .splits import build_splits


def train(recipe: TrainRecipe, root: Path, out: str | None = None, resume: bool = False,
          extract_cmd: str = "vqa-cache extract", features: Features | None = None, stream: bool | None = None,
          on_epoch=None) -> dict:
    """Train one head; returns the metrics dict {"epochs", "best"}.

    features: from load_features, so that a sweep loads the cache once and shares it (else loaded here;
    `extract_cmd` is the command a missing cache is made with). stream: True reads image features from the
    shards in chunks; None decides by the memory budget. on_epoch: see run_fit. Under torchrun:
    DistributedDataParallel, as run_fit says; rank 0 alone writes the run directory."""
    with run_directory(recipe, out, resume) as run_dir:
        started = time.time()
        fit = CachedFit(recipe, root, run_dir, features or load_features(recipe, root, extract_cmd, stream))
        return run_fit(fit, resume, on_epoch, started)


class CachedFit(Fit):
    """The head alone, on features that are tensors on the device (or image features streamed from disk)."""

    def __init__(self, recipe: TrainRecipe, root: Path, run_dir: Path, features: Features):
        plan, tensors, keys = features
        splits, vocab, split_names, dropped = build_splits(plan, tensors, recipe)
        device = dist.device(pick_device(recipe.device).type)
        image, question = tensors["image"][1], tensors["question"][1].to(device)
        self.streaming = isinstance(image, ImageStream)
        if not self.streaming:
            image = image.to(device)
        for split in splits.values():
            split.to(device)
        torch.manual_seed(recipe.seed)
        head = heads.build(recipe.head.name, image.shape[-1], question.shape[-1], len(vocab),
                           recipe.head.hidden, recipe.head.dropout).to(device)
        head_config = {"name": recipe.head.name, "image_dim": image.shape[-1], "question_dim": question.shape[-1],
                       "num_answers": len(vocab), "hidden": recipe.head.hidden, "dropout": recipe.head.dropout}
        config = run_config(recipe, keys, split_names, vocab, splits, dropped, head_config, device)
        config.update(cache_dir=str(root), cache_specs={"image": plan.image_spec, "question": plan.question_spec},
                      stream=self.streaming)
        super().__init__(recipe, run_dir, device, splits, vocab, head, head, image, question, keys, head_config,
                         [{"params": list(head.parameters())}], config)

    def describe(self) -> str:
        params = sum(p.numel() for p in self.head.parameters())
        return (f"run {self.run_dir}: head {self.recipe.head.name} ({params / 1e6:.2f}M params), {len(self.vocab)} "
                f"answers (coverage {self.config['vocabulary']['coverage']:.2%}), {len(self.rows)} train / "
                f"{len(self.splits['val'])} val questions, device {self.device}"
                f"{', streaming image features from the shards' if self.streaming else ''}")
