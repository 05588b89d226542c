"""The finetune model: live encoders and a head, on the images decoded once into memory (build)."""

from __future__ import annotations

import sys
from typing import NamedTuple

import torch
from torch import nn

from .. import distributed as dist
from .. import heads
from ..cache.plan import Plan, make_plan
from ..encoders.base import Preprocess
from ..encoders.image import ImageFiles, collate
from ..errors import BadInput
from ..progress import progress
from ..recipes import FinetuneRecipe
from ..training.splits import Splits, build_splits
from .augment import augment_images, new_counts
from .init_head import init_head_standardizes
from .live import FixedText, LiveImage, LiveText
from .scope import freeze_modes


class FinetuneModel(nn.Module):
    """(image rows, question rows) -> logits. Each distinct image and text of the batch is encoded once.

    Takes row indices (into the decoded image tensor and the unique text list): the fit loop's batches and
    evaluate() give them with `image = question = Rows()` (train/batches.py)."""

    image_enc: LiveImage
    text_enc: LiveText | FixedText
    head_config: dict  # what checkpoints record of the head (set by build)

    def __init__(
        self,
        images: torch.Tensor,
        texts: list[str],
        image_enc: LiveImage,
        text_enc: nn.Module,
        head: nn.Module,
        augment=None,
        seed: int = 0,
    ):
        super().__init__()
        self.images = images  # uint8 [N, 3, S, S] (CPU or device), not a parameter
        self.texts = texts
        self.image_enc, self.text_enc, self.head = image_enc, text_enc, head
        self.augment = augment if augment is not None and augment.enabled else None
        self.gen = torch.Generator().manual_seed(seed)
        self.encoded_images = 0  # distinct images encoded (for the dedupe test and the bench)
        self.augmented = new_counts()  # this epoch's augmentation tally (augment.py)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            freeze_modes(self.image_enc)
            freeze_modes(self.text_enc)
        return self

    def encoder_parameters(self):
        return [p for m in (self.image_enc, self.text_enc) for p in m.parameters() if p.requires_grad]

    def forward(self, img_rows: torch.Tensor, q_rows: torch.Tensor) -> torch.Tensor:
        device = next(self.head.parameters()).device
        u_img, inv_img = torch.unique(img_rows, return_inverse=True)
        u_q, inv_q = torch.unique(q_rows, return_inverse=True)
        x = self.images[u_img.to(self.images.device)].to(device, non_blocking=True)
        if self.augment is not None and self.training:
            per_image = [[] for _ in range(len(u_img))]
            for i, q in zip(inv_img.tolist(), q_rows.tolist()):
                per_image[i].append(self.texts[q])
            x = augment_images(x, per_image, self.augment, self.gen, self.augmented)
        self.encoded_images += len(u_img)
        img = self.image_enc(x)[inv_img.to(device)]
        q = self.text_enc(u_q.to(device))[inv_q.to(device)]
        return self.head(img, q)


def decode_images(paths: list[str], prep: Preprocess, workers: int, skip_bad: bool, limit_gb: float, max_pixels: int):
    """All images as uint8 [N, 3, S, S], decoded once (DataLoader workers) as the encoder's Preprocess says
    (extract's decoding); plus the indices that failed."""
    size = prep.size
    need = len(paths) * 3 * size * size
    if need > limit_gb * 2**30:
        raise BadInput(
            f"finetune holds the decoded images in memory: {len(paths)} images at {size}px need "
            f"{need / 2**30:.1f} GiB, over finetune.preload_gb = {limit_gb}; raise it or use a subset "
            f"(--limit, --set features.dataset.image_fraction=...)"
        )
    out = torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    bad = []
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths, prep, max_pixels), batch_size=256, num_workers=workers, collate_fn=collate
    )
    for idx, batch, failed in progress(loader, desc="decoding images", unit="batch", leave=False, file=sys.stderr):
        if len(idx):
            out[idx] = batch
        for i, err in failed:
            if not skip_bad:
                raise BadInput(f"{paths[i]}: cannot read image ({err}); --set features.skip_bad=true skips it")
            bad.append(i)
    return out, bad


class Built(NamedTuple):
    """What a finetune run trains: its plan, its splits (training/splits.Splits) and the model (encoders +
    head on the device)."""

    plan: Plan
    splits: Splits
    model: FinetuneModel


def build(recipe: FinetuneRecipe, device: torch.device) -> Built:
    """The plan, the splits and the model of a finetune recipe."""
    features, settings = recipe.features, recipe.finetune
    need = heads.needs(recipe.head.name)
    if need["question"] != "pooled":
        raise BadInput(
            f"head {recipe.head.name!r} reads question {need['question']}; finetune supports heads "
            f"that read pooled question features"
        )
    if settings.accumulate < 1:
        raise BadInput(f"finetune.accumulate {settings.accumulate}: expected >= 1")
    with dist.main_first():  # under torchrun rank 0 downloads and parses first, the others read that
        plan = make_plan(features, allow_download=True)
    images, bad = decode_images(
        plan.image_paths,
        plan.image_choice.preprocess,
        settings.workers,
        features.skip_bad,
        settings.preload_gb,
        features.image.max_pixels,
    )
    bad_set = set(bad)
    ok_ids = [i for k, i in enumerate(plan.image_ids) if k not in bad_set]
    if bad:
        keep = torch.ones(len(plan.image_ids), dtype=torch.bool)
        keep[bad] = False
        images = images[keep]
    tensors = {"image": (ok_ids, None), "question": (plan.texts, None)}
    parts = build_splits(plan, tensors, recipe)
    splits, vocab = parts.splits, parts.vocab
    torch.manual_seed(recipe.seed)
    image_enc = LiveImage(plan.image_choice, need["image"], settings)
    if plan.text_choice.kind == "bow":
        text_enc = FixedText(plan.texts)
    else:
        text_enc = LiveText(
            plan.text_choice, plan.texts, plan.question_spec["pooling"], features.text.max_length, settings
        )
    torch.manual_seed(recipe.seed)
    config = head_config(recipe, image_enc.dim, text_enc.dim, len(vocab))
    head = heads.from_config(config)
    if device.type == "cuda" and images.numel() < 4 * 2**30:
        images = images.to(device)
    elif device.type == "cuda":
        images = images.pin_memory()
    model = FinetuneModel(images, plan.texts, image_enc, text_enc, head, settings.augment, recipe.seed).to(device)
    model.head_config = config  # what checkpoints record of the head
    for split in splits.values():
        split.to(device)
    return Built(plan, parts, model)


def head_config(recipe: FinetuneRecipe, image_dim: int, question_dim: int, num_answers: int) -> dict:
    """The head's config. Its image input is layer-normalized (statistics of features that change as the
    encoders train would not hold), except with --init-head from a run that standardized: that head keeps
    its statistics (those of the frozen features it was trained on)."""
    h = recipe.head
    standardize = bool(recipe.finetune.init_head) and init_head_standardizes(recipe.finetune.init_head)
    return heads.head_config(
        h.name, image_dim, question_dim, num_answers, h.hidden, h.dropout, h.layers, h.embed, standardize
    )


def encoder_state(model: FinetuneModel) -> dict:
    """What of the encoders changes in training: trained parameters (or LoRA adapters) and the buffers
    (BatchNorm statistics) of the modules that train."""
    out = {}
    for part in ("image_enc", "text_enc"):
        enc = getattr(model, part)
        names = {n for n, p in enc.named_parameters() if p.requires_grad}
        for mname, m in enc.named_modules():
            if any(p.requires_grad for p in m.parameters(recurse=False)):
                for bname, _ in m.named_buffers(recurse=False):
                    names.add(f"{mname}.{bname}" if mname else bname)
        state = enc.state_dict()
        out[part] = {k: v for k, v in state.items() if k in names}
    return out


def load_encoder_state(model, state: dict, where) -> None:
    """encoder_state's weights back into the model (anything with its image_enc and text_enc); BadInput (naming `where`) when they do not fit."""
    for part, values in state.items():
        enc = getattr(model, part)
        _, unexpected = enc.load_state_dict(values, strict=False)
        if unexpected:
            raise BadInput(f"{where}: encoder weights {unexpected[:3]} do not fit this recipe's encoders")
