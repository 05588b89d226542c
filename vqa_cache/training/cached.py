"""`vqa-cache train`: a fusion head trained on cached features, by the one fit loop (loop.py)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import distributed as dist
from .. import heads, tracking
from .. import threads as cpu_threads
from ..cache.reader import ImageStream
from ..device import pick_device
from ..encoders.text import input_embeddings
from ..errors import BadInput
from ..recipes import TrainRecipe
from ..rundir import run_config, run_directory
from .features import Features, input_dims, load_features
from .loop import Fit, run_fit
from .parts import FitParts
from .splits import Split, build_splits
from .statistics import image_statistics


def train(
    recipe: TrainRecipe,
    root: Path,
    out: str | None = None,
    resume: bool = False,
    extract_cmd: str = "vqa-cache extract",
    features: Features | None = None,
    stream: bool | None = None,
    on_epoch=None,
    threads: int | None = None,
    extend: str | None = None,
    log=(),
    label: str | None = None,
) -> dict:
    """Train one head; returns the metrics dict {"epochs", "best"}.

    features: from load_features, so that a sweep loads the cache once and shares it (else loaded here;
    `extract_cmd` is the command a missing cache is made with). stream: True reads image features from the
    shards in chunks; None decides by the memory budget. on_epoch, extend: see run_fit. threads: torch's threads
    (None: the usable CPUs less the streaming readers), set only when the features are loaded here (a sweep
    sets its own). log: tracker names (tensorboard, mlflow, wandb; tracking/), label: the run's name there
    (default its directory's). Under torchrun: DistributedDataParallel, as run_fit says; rank 0 alone writes
    the run directory."""
    with (
        run_directory(recipe, out, resume) as run_dir,
        tracking.session(log if dist.is_main() else (), label) as callbacks,
    ):  # (rank 0 logs)
        started = time.time()
        cpu_threads.flush_denormals()
        if features is None:
            features = load_features(recipe, root, extract_cmd, stream)
            image = features.tensors["image"][1]
            cpu_threads.set_threads(threads, workers=image.workers if isinstance(image, ImageStream) else 0)
        fit = CachedFit(recipe, root, run_dir, features)
        fit.callbacks = callbacks
        return run_fit(fit, resume, on_epoch, started, extend)


class CachedFit(Fit):
    """The head alone, on features that are tensors on the device (or image features streamed from disk)."""

    def __init__(self, recipe: TrainRecipe, root: Path, run_dir: Path, features: Features):
        plan, tensors, keys = features.plan, features.tensors, features.cache_keys
        parts = build_splits(plan, tensors, recipe, root)
        splits, vocab = parts.splits, parts.vocab
        device = dist.device(pick_device(recipe.device).type)
        image, question = tensors["image"][1], tensors["question"][1].to(device)
        self.streaming = isinstance(image, ImageStream)
        if not self.streaming:
            image = image.to(device)
        for split in splits.values():
            split.to(device)
        head, head_config = build_head(recipe, features, len(vocab), splits["train"])
        head = head.to(device)
        config = run_config(recipe, keys, parts.names, vocab, splits, parts.dropped, head_config, device)
        config.update(
            cache_dir=str(root),
            cache_specs={"image": plan.image_spec, "question": plan.question_spec},
            stream=self.streaming,
        )
        if plan.words is not None:  # bag-of-words ids: `ask` numbers a new question's words with them
            config["words"] = plan.words
        super().__init__(
            FitParts(
                recipe=recipe,
                run_dir=run_dir,
                device=device,
                splits=splits,
                vocab=vocab,
                model=head,
                head=head,
                image=image,
                question=question,
                cache_keys=keys,
                head_config=head_config,
                param_groups=[{"params": list(head.parameters())}],
                config=config,
            )
        )

    def describe(self) -> str:
        params = sum(p.numel() for p in self.head.parameters())
        return (
            f"run {self.run_dir}: head {self.recipe.head.name} ({params / 1e6:.2f}M params), {len(self.vocab)} "
            f"answers (coverage {self.config['vocabulary']['coverage']:.2%}), {len(self.rows)} train / "
            f"{len(self.splits['val'])} val questions, device {self.device}, precision {self.precision}"
            f"{', ' + cpu_threads.describe() if self.device.type == 'cpu' else ''}"
            f"{', streaming image features from the shards' if self.streaming else ''}"
        )


def build_head(recipe: TrainRecipe, features: Features, num_answers: int, train: Split) -> tuple[torch.nn.Module, dict]:
    """The recipe's head on these features (seeded), and its config: the head's defaults filled in, image
    statistics of the training split when it standardizes, embeddings from the text model when asked."""
    plan, tensors = features.plan, features.tensors
    settings = recipe.head
    need = heads.needs(settings.name)  # the head looked up once: what it reads
    image_dim, question_dim = input_dims(plan, tensors, need)
    matrix, embed = None, settings.embed
    if settings.init_embeddings:
        if need["question"] != "ids":
            raise BadInput(f"head.init_embeddings: head {settings.name!r} reads no token ids (lstm and butd do)")
        matrix = input_embeddings(plan.text_choice)
        if embed and embed != matrix.shape[1]:
            raise BadInput(
                f"head.embed = {embed} with head.init_embeddings: the text model's embeddings are "
                f"{matrix.shape[1]} wide (leave head.embed at 0)"
            )
        embed = matrix.shape[1]
    config = heads.head_config(
        settings.name,
        image_dim,
        question_dim,
        num_answers,
        settings.hidden,
        settings.dropout,
        settings.layers,
        embed,
        settings.standardize,
    )
    torch.manual_seed(recipe.seed)
    head = heads.from_config(config)
    if matrix is not None:
        head.question.load_embeddings(matrix)
    if settings.standardize:
        heads.set_statistics(head, *image_statistics(tensors["image"][1], train.img_row))
    return head, config
